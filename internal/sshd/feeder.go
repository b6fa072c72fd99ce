package sshd

import (
	"sync"
	"time"
)

// The terminal emulator is much slower than a pty (about 2 MB/s of plain
// text at 120 x 40: every scrolled line moves the whole screen), so it is
// fed beside the output, not in its way: the shell's output goes to the
// client at once and is queued for the screen. When the queue grows past
// feedMax (a `cat` of a large file), only its newest feedKeep bytes are
// kept, which still redraw the screen, and the feeder then takes what has
// accumulated every feedCoalesce: the emulator uses a fraction of a CPU
// however fast the output, instead of holding it back.
const (
	feedMax      = 256 << 10
	feedKeep     = 32 << 10
	feedCoalesce = 100 * time.Millisecond
)

// feeder feeds a screen from a queue, in its own goroutine (run).
type feeder struct {
	scr *screen // used by run; by others only after sync, under the shell's lock

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the queue or busy changes
	queue   []byte     // guarded by mu: bytes not fed yet
	busy    bool       // guarded by mu: run is feeding a batch
	dropped bool       // guarded by mu: bytes were dropped since the last batch
	closed  bool       // guarded by mu: no more bytes; run returns once the queue is fed
}

func newFeeder(scr *screen) *feeder {
	f := &feeder{scr: scr}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// add queues p (copied) for the screen.
func (f *feeder) add(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, p...)
	if len(f.queue) > feedMax {
		f.queue = append(f.queue[:0], f.queue[len(f.queue)-feedKeep:]...)
		f.dropped = true
	}
	f.cond.Broadcast()
}

// sync waits until everything queued has been fed. The caller holds the
// shell's lock, so nothing is added meanwhile; then the screen is its to
// read until it lets go of that lock.
func (f *feeder) sync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.queue) > 0 || f.busy {
		f.cond.Wait()
	}
}

// close ends run once the queue is fed.
func (f *feeder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.cond.Broadcast()
}

// run feeds the screen until close.
func (f *feeder) run() {
	var batch []byte
	for {
		f.mu.Lock()
		for len(f.queue) == 0 && !f.closed {
			f.cond.Wait()
		}
		if len(f.queue) == 0 {
			f.mu.Unlock()
			return
		}
		coalesce := f.dropped && !f.closed
		f.dropped = false
		batch, f.queue = f.queue, batch[:0]
		f.busy = true
		f.mu.Unlock()

		f.scr.write(batch)

		f.mu.Lock()
		f.busy = false
		f.cond.Broadcast()
		f.mu.Unlock()
		if coalesce {
			time.Sleep(feedCoalesce)
		}
	}
}
