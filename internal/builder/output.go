package builder

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"

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
// When the step's process has exited, the builder writes a marker (random,
// unguessable bytes) into the pipe through its own write end. Everything
// the step and the processes it started wrote before they exited is in the
// pipe before the marker, so once the reader meets the marker and the
// sender has sent what came before it, the step's output is delivered in
// full and its end can be reported. A background process that outlives the
// step may hold the pipe open: the step still ends, and what that process
// writes later is sent as further output of the same step until it closes
// the pipe.

// maxChunk is the most output one link.Output event carries.
const maxChunk = 256 << 10

// maxQueued bounds output read from steps but not yet sent; past it the
// readers wait, and with them the steps that write.
const maxQueued = 8 << 20

// outbox queues steps' output, in order, for one sender.
type outbox struct {
	send func(link.Event) error

	mu     sync.Mutex
	cond   *sync.Cond   // signalled when queue, queued, sent, limit or failed change
	queue  []link.Event // guarded by mu; Output events not sent yet
	queued int64        // guarded by mu; bytes ever queued
	sent   int64        // guarded by mu; bytes sent so far (failed: given up)
	limit  int64        // guarded by mu; bytes sent at most (the runner's cap); 0: none
	failed bool         // guarded by mu; the link failed: drop everything
}

func newOutbox(send func(link.Event) error, limit int64) *outbox {
	o := &outbox{send: send, limit: limit}
	o.cond = sync.NewCond(&o.mu)
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
	if n := len(o.queue); n > 0 && o.queue[n-1].Step == step && len(o.queue[n-1].Data)+len(data) <= maxChunk {
		o.queue[n-1].Data = append(o.queue[n-1].Data, data...)
	} else {
		for len(data) > 0 {
			part := data[:min(len(data), maxChunk)]
			o.queue = append(o.queue, link.Event{Type: link.Output, Step: step, Data: bytes.Clone(part)})
			data = data[len(part):]
		}
	}
	o.cond.Broadcast()
	return o.queued
}

// flushed waits until everything queued up to mark has been sent. It
// reports false if the link failed first.
func (o *outbox) flushed(mark int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.sent < mark && !o.failed {
		o.cond.Wait()
	}
	return !o.failed
}

// run sends queued output until the link fails.
func (o *outbox) run() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		for len(o.queue) == 0 {
			o.cond.Wait()
		}
		evs, failed := o.queue, o.failed
		o.queue = nil
		o.mu.Unlock()
		var err error
		var n int64
		for _, ev := range evs {
			if err == nil && !failed {
				err = o.send(ev)
			}
			n += int64(len(ev.Data))
		}
		o.mu.Lock()
		o.sent += n
		if err != nil {
			o.failed = true
		}
		o.cond.Broadcast()
	}
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
