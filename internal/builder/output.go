package builder

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/mask"
)

// How a step's output reaches the runner.
//
// Each step writes into a pipe of its own. A reader goroutine copies what
// arrives into the outbox, one queue for the whole build, and a sender
// goroutine sends what has accumulated there as link.Output chunks: the step
// never waits on the network while the link keeps up, and a busy step's
// output travels in large chunks rather than line by line.
//
// The sender compresses a chunk of whole lines of at least minCompress
// bytes (S2, link.OutputS2Frame): the link then carries about a quarter of
// a verbose step's bytes, and the runner stores the block as it came. To
// make its chunks whole lines, the sender holds back the last chunk while
// it ends in the middle of a line (the step is writing it) and is not
// full, until more comes or someone waits for it (a step's end, the
// build's end) or holdPartial has passed, and its whole lines no longer
// than holdFor; a chunk it
// must send that still ends mid-line goes as a compressed block of its
// whole lines and the rest as it is. A line's start is sent as it is
// too: the runner joins the pieces.
//
// Where a step's output enters the builder, raw, before it is compressed
// and framed, is stepOutput.read: what it passes to outbox.add is what the
// runner gets.
//
// When the step's process has exited, the builder writes a marker (random,
// unguessable bytes) into the pipe through its own write end. Everything
// the step and the processes it started wrote before they exited is in the
// pipe before the marker, so once the reader meets the marker and the
// sender has sent what came before it, the step's output is delivered in
// full and its end can be reported. A background process that outlives the
// step may hold the pipe open: the step still ends, and what that process
// writes later is sent as further output of the same step until it closes
// the pipe.

// maxChunk is the most output one link.Output event carries (uncompressed).
const maxChunk = 256 << 10

// minCompress is the smallest chunk that is compressed: smaller ones,
// from a step that writes little at a time, go as they are and the runner
// gathers them into larger chunks.
const minCompress = 32 << 10

// burst is how much output at once makes a new chunk take its full size
// at once rather than grow.
const burst = 64 << 10

// holdFor is the longest whole lines wait in the builder while the chunk
// that holds them is held back for ending mid-line: a step that prints a
// few lines and then part of one (a prompt, a progress bar) has those
// lines shown at once, as before the chunk was held.
const holdFor = 20 * time.Millisecond

// holdPartial is the longest an unfinished line waits for its end: a
// prompt, a progress bar redrawn with \r or dots printed one at a time
// show while the step runs, not when it next ends a line.
const holdPartial = 250 * time.Millisecond

// maxFree is how many sent chunk buffers are kept for reuse.
const maxFree = 8

// maxQueued bounds output read from steps but not yet sent; past it the
// readers wait, and with them the steps that write.
const maxQueued = 8 << 20

// outbox queues steps' output, in order, for one sender.
type outbox struct {
	send func(link.Event) error

	mu      sync.Mutex
	cond    *sync.Cond   // signalled when queue, queued, sent, limit, flushTo or failed change
	queue   []link.Event // guarded by mu; Output events not sent yet, uncompressed
	queued  int64        // guarded by mu; bytes ever queued
	sent    int64        // guarded by mu; bytes sent so far (failed: given up)
	flushTo int64        // guarded by mu; send everything queued up to here, held back or not
	limit   int64        // guarded by mu; bytes sent at most (the runner's cap); 0: none
	failed  bool         // guarded by mu; the link failed: drop everything

	// minCompress and holdFor are the consts, or other values in tests
	// and benchmarks. Set before the first add.
	minCompress int
	holdFor     time.Duration
	holdPartial time.Duration

	free      [][]byte    // guarded by mu; chunk buffers of maxChunk bytes sent, for reuse
	heldSince time.Time   // guarded by mu; when the sender began holding the last chunk back
	timer     *time.Timer // wakes the sender when whole lines have waited holdFor
	z         []byte      // the sender's buffer for compressed chunks

	// midLine, by step, is set when the last byte the sender sent of that
	// step's output did not end a line. Only the sender uses it.
	midLine map[int]bool
}

func newOutbox(send func(link.Event) error, limit int64) *outbox {
	o := &outbox{send: send, limit: limit, midLine: make(map[int]bool), minCompress: minCompress, holdFor: holdFor, holdPartial: holdPartial}
	o.cond = sync.NewCond(&o.mu)
	o.timer = time.AfterFunc(time.Hour, func() {
		o.mu.Lock()
		o.cond.Broadcast()
		o.mu.Unlock()
	})
	o.timer.Stop()
	go o.run()
	return o
}

// add queues data as output of step and returns the mark that flushed
// waits for. It blocks while too much is queued.
func (o *outbox) add(step int, data []byte) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.queued-o.sent >= maxQueued && !o.failed {
		o.cond.Wait()
	}
	if o.limit > 0 && o.queued+int64(len(data)) > o.limit {
		// Past the cap the runner keeps nothing more: do not send it.
		keep := max(o.limit-o.queued, 0)
		data = data[:keep]
	}
	if len(data) == 0 {
		return o.queued
	}
	o.queued += int64(len(data))
	if n := len(o.queue); n > 0 && o.queue[n-1].Step == step {
		// Fill the last chunk, up to a line's end if one fits. A chunk
		// that grows takes its full size at once: a step that writes in
		// small blocks is in a burst.
		last := &o.queue[n-1]
		k := cut(data, maxChunk-len(last.Data))
		if len(last.Data)+k > cap(last.Data) {
			last.Data = append(o.buffer(), last.Data...)
		}
		last.Data = append(last.Data, data[:k]...)
		data = data[k:]
	}
	for len(data) > 0 {
		// A new chunk, its full size at once in a burst.
		k := cut(data, maxChunk)
		if k == 0 {
			k = min(len(data), maxChunk)
		}
		var c []byte
		if len(data) >= burst {
			c = o.buffer()
		}
		c = append(c, data[:k]...)
		o.queue = append(o.queue, link.Event{Type: link.Output, Step: step, Data: c})
		data = data[k:]
	}
	o.cond.Broadcast()
	return o.queued
}

// buffer returns an empty buffer of maxChunk bytes, one the sender is
// done with if there is one. o.mu is held.
func (o *outbox) buffer() []byte {
	if n := len(o.free); n > 0 {
		b := o.free[n-1]
		o.free = o.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, maxChunk)
}

// cut is how much of data fits in room bytes: all of it, or up to the
// end of its last line that fits (0 if none does).
func cut(data []byte, room int) int {
	if len(data) <= room {
		return len(data)
	}
	if room <= 0 {
		return 0
	}
	return bytes.LastIndexByte(data[:room], '\n') + 1
}

// flushed waits until everything queued up to mark has been sent. It
// reports false if the link failed first.
func (o *outbox) flushed(mark int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if mark > o.flushTo {
		o.flushTo = mark
		o.cond.Broadcast()
	}
	for o.sent < mark && !o.failed {
		o.cond.Wait()
	}
	return !o.failed
}

// drain sends everything queued (a line a step's background process has
// not ended yet included) and waits for it: the build ends.
func (o *outbox) drain() bool {
	o.mu.Lock()
	mark := o.queued
	o.mu.Unlock()
	return o.flushed(mark)
}

// flush asks for everything queued so far to be sent, without waiting.
func (o *outbox) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushTo = o.queued
	o.cond.Broadcast()
}

// ready is how many queued events the sender may send now: all but the
// last while it ends mid-line, is not full and nobody waits for any of
// it. It also reports whether the whole lines of that last one may go
// (they have waited holdFor) while its unfinished end stays. o.mu is held.
func (o *outbox) ready(now time.Time) (n int, lines bool) {
	n = len(o.queue)
	if n == 0 || o.failed {
		o.heldSince = time.Time{}
		return n, false
	}
	last := o.queue[n-1].Data
	if len(last) >= maxChunk || last[len(last)-1] == '\n' || o.flushTo > o.queued-int64(len(last)) {
		o.heldSince = time.Time{}
		return n, false
	}
	if o.heldSince.IsZero() {
		o.heldSince = now
	}
	if now.Sub(o.heldSince) >= o.holdPartial {
		// The line has waited long enough for its end: it goes as it is
		// (the runner joins the pieces).
		o.heldSince = time.Time{}
		return n, false
	}
	return n - 1, now.Sub(o.heldSince) >= o.holdFor && bytes.IndexByte(last, '\n') >= 0
}

// run sends queued output until the link fails.
func (o *outbox) run() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		n, lines := o.ready(time.Now())
		for n == 0 && !lines {
			if len(o.queue) > 0 {
				// Whole lines wait behind an unfinished one: not for
				// more than holdFor; the unfinished one not for more
				// than holdPartial.
				wait := o.holdPartial
				if bytes.IndexByte(o.queue[0].Data, '\n') >= 0 {
					wait = o.holdFor
				}
				o.timer.Reset(wait - time.Since(o.heldSince))
			}
			o.cond.Wait()
			n, lines = o.ready(time.Now())
		}
		evs, failed := o.queue[:n:n], o.failed
		o.queue = append([]link.Event(nil), o.queue[n:]...)
		if lines {
			// The last one's whole lines go; its unfinished end stays.
			last := &o.queue[0]
			k := bytes.LastIndexByte(last.Data, '\n') + 1
			evs = append(evs, link.Event{Type: link.Output, Step: last.Step, Data: last.Data[:k]})
			last.Data = bytes.Clone(last.Data[k:])
			o.heldSince = time.Time{}
		}
		o.mu.Unlock()
		var err error
		var sent int64
		for _, ev := range evs {
			if err == nil && !failed {
				err = o.sendChunk(ev)
			}
			sent += int64(len(ev.Data))
		}
		o.mu.Lock()
		o.sent += sent
		if err != nil {
			o.failed = true
		}
		// The link has copied what it sent: full-size buffers are reused.
		for _, ev := range evs {
			if cap(ev.Data) == maxChunk && len(o.free) < maxFree {
				o.free = append(o.free, ev.Data[:0])
			}
		}
		o.cond.Broadcast()
	}
}

// sendChunk sends one chunk of a step's output: the end of a line begun
// earlier and the start of one not ended yet as they are, the whole lines
// between compressed if there are enough of them. The link must be done
// with an event's bytes when send returns (link.Client.Send is).
func (o *outbox) sendChunk(ev link.Event) error {
	data := ev.Data
	if o.midLine[ev.Step] {
		head := bytes.IndexByte(data, '\n') + 1
		if head == 0 {
			// All of it continues the line.
			return o.send(ev)
		}
		if err := o.send(link.Event{Type: link.Output, Step: ev.Step, Data: data[:head]}); err != nil {
			return err
		}
		o.midLine[ev.Step] = false
		if data = data[head:]; len(data) == 0 {
			return nil
		}
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	lines, rest := data[:end], data[end:]
	if len(lines) > 0 {
		out := link.Event{Type: link.Output, Step: ev.Step, Data: lines}
		if len(lines) >= o.minCompress {
			if n := s2.MaxEncodedLen(len(lines)); cap(o.z) < n {
				o.z = make([]byte, n)
			}
			if z := s2.Encode(o.z[:cap(o.z)], lines); len(z) < len(lines)-len(lines)/8 {
				out.S2 = z
			}
		}
		if err := o.send(out); err != nil {
			return err
		}
	}
	o.midLine[ev.Step] = len(rest) > 0
	if len(rest) > 0 {
		return o.send(link.Event{Type: link.Output, Step: ev.Step, Data: rest})
	}
	return nil
}

// stepOutput is where one step writes.
type stepOutput struct {
	w      *os.File // the write end the step's processes get
	box    *outbox
	step   int
	marker []byte
	passed chan int64 // receives the outbox mark once the reader meets the marker
	// mask hides the build's secure values in what the step wrote, before
	// it is queued (nil: nothing to hide). Only the reader uses it.
	mask *mask.Stream
}

// newStepOutput makes step's pipe and starts reading it.
func newStepOutput(box *outbox, step int, m *mask.Stream) (*stepOutput, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// A larger pipe lets a verbose step write ahead of the reader instead
	// of waiting on it (the default holds 64 KiB). Best effort.
	_, _ = unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	marker := make([]byte, 24)
	_, _ = rand.Read(marker)
	// A leading NUL: text output never looks like the start of a marker,
	// so the reader almost never holds bytes back.
	marker[0] = 0
	o := &stepOutput{w: pw, box: box, step: step, marker: marker, passed: make(chan int64, 1), mask: m}
	go o.read(pr)
	return o, nil
}

// finish reports, once the step's processes have exited, when everything
// they wrote has been sent. It reports false if the link failed first.
func (o *stepOutput) finish() bool {
	_, err := o.w.Write(o.marker)
	o.w.Close()
	if err != nil {
		return false
	}
	return o.box.flushed(<-o.passed)
}

// read copies the pipe into the outbox until every writer has closed it.
func (o *stepOutput) read(pr *os.File) {
	defer pr.Close()
	buf := make([]byte, 1<<20)
	var held []byte // bytes that may be the start of the marker
	found := false
	for {
		n, err := pr.Read(buf)
		data := buf[:n]
		if len(held) > 0 {
			data = append(held, data...)
			held = nil
		}
		if !found && len(data) > 0 {
			if i := bytes.Index(data, o.marker); i >= 0 {
				// The step has ended: what the masker holds back goes too.
				mark := o.box.add(o.step, append(o.mask.Write(data[:i]), o.mask.Flush()...))
				o.passed <- mark
				found = true
				data = data[i+len(o.marker):]
			} else if k := overlap(data, o.marker); k > 0 && err == nil {
				held = bytes.Clone(data[len(data)-k:])
				data = data[:len(data)-k]
			}
		}
		if len(data) > 0 {
			o.box.add(o.step, o.mask.Write(data))
		}
		if err != nil {
			o.box.add(o.step, o.mask.Flush())
			if !errors.Is(err, io.EOF) {
				o.box.add(o.step, []byte("\nhangar: reading the step's output failed: "+err.Error()+"\n"))
			}
			// Nothing more comes: what is held back goes.
			o.box.flush()
			if !found {
				// The marker never came: the pipe broke. Say so rather
				// than wait forever.
				o.passed <- o.box.add(o.step, nil)
			}
			return
		}
	}
}

// overlap is the length of the longest suffix of data that is a proper
// prefix of marker.
func overlap(data, marker []byte) int {
	if bytes.IndexByte(data[max(0, len(data)-len(marker)+1):], marker[0]) < 0 {
		return 0
	}
	for k := min(len(data), len(marker)-1); k > 0; k-- {
		if bytes.Equal(data[len(data)-k:], marker[:k]) {
			return k
		}
	}
	return 0
}
