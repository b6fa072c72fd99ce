package netx

import (
	"net"
	"sync"
	"time"
)

// Defaults of AuthDelay's zero fields.
const (
	DefaultAuthDelayBase   = 100 * time.Millisecond
	DefaultAuthDelayMax    = 4 * time.Second
	DefaultAuthDelayForget = 10 * time.Minute
)

// AuthDelay slows failed authentications by source address: the answer to
// the n-th failure in a row from a source waits Base << (n-1), at most Max.
// A success from the source starts it over, and so does a pause of Forget
// without failures. Its zero value is ready to use, with the defaults.
type AuthDelay struct {
	Base   time.Duration // delay of a first failure; DefaultAuthDelayBase if zero
	Max    time.Duration // the longest delay; DefaultAuthDelayMax if zero
	Forget time.Duration // a source's failures count this long; DefaultAuthDelayForget if zero

	mu    sync.Mutex
	fails map[string]*failures // guarded by mu; by source
	swept int                  // guarded by mu: len(fails) after the last sweep
	now   func() time.Time     // for tests; time.Now if nil
}

type failures struct {
	n    int
	last time.Time
}

func (d *AuthDelay) clock() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

func (d *AuthDelay) forget() time.Duration {
	if d.Forget > 0 {
		return d.Forget
	}
	return DefaultAuthDelayForget
}

// Failed counts a failed authentication from a's source and returns how
// many failures in a row the source has now and how long to wait before
// answering this one.
func (d *AuthDelay) Failed(a net.Addr) (n int, wait time.Duration) {
	src := Source(a)
	now := d.clock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fails == nil {
		d.fails = make(map[string]*failures)
	}
	f := d.fails[src]
	if f == nil || now.Sub(f.last) >= d.forget() {
		f = &failures{}
		d.fails[src] = f
	}
	f.n++
	f.last = now
	d.sweepLocked(now)
	return f.n, d.delay(f.n)
}

// delay is the wait after the n-th failure in a row.
func (d *AuthDelay) delay(n int) time.Duration {
	base, top := d.Base, d.Max
	if base <= 0 {
		base = DefaultAuthDelayBase
	}
	if top <= 0 {
		top = DefaultAuthDelayMax
	}
	w := base
	for i := 1; i < n && w < top; i++ {
		w *= 2
	}
	return min(w, top)
}

// Succeeded starts a's source over.
func (d *AuthDelay) Succeeded(a net.Addr) {
	src := Source(a)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.fails, src)
}

// Failures is the number of failures in a row counted for a's source.
func (d *AuthDelay) Failures(a net.Addr) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.fails[Source(a)]; f != nil && d.clock().Sub(f.last) < d.forget() {
		return f.n
	}
	return 0
}

// sweepLocked drops forgotten sources once the map has doubled since the
// last sweep, so that it holds about the sources seen within Forget.
func (d *AuthDelay) sweepLocked(now time.Time) {
	if len(d.fails) < 2*max(d.swept, 512) {
		return
	}
	for src, f := range d.fails {
		if now.Sub(f.last) >= d.forget() {
			delete(d.fails, src)
		}
	}
	d.swept = len(d.fails)
}
