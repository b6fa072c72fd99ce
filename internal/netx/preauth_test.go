package netx

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// srcConn is a conn from a given source address that records Close.
type srcConn struct {
	net.Conn
	remote net.Addr
	closed atomic.Bool
}

func (c *srcConn) RemoteAddr() net.Addr { return c.remote }
func (c *srcConn) Close() error         { c.closed.Store(true); return nil }

func from(ip string) *srcConn {
	return &srcConn{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

func TestPreAuthEvictsOldestOfItsSource(t *testing.T) {
	var p PreAuth
	a1, a2, a3, b1 := from("192.0.2.1"), from("192.0.2.1"), from("192.0.2.1"), from("192.0.2.2")
	p1 := p.Admit(a1, 2, 0)
	p.Admit(a2, 2, 0)
	p.Admit(b1, 2, 0)
	if a1.closed.Load() || a2.closed.Load() || b1.closed.Load() {
		t.Fatal("evicted below the bounds")
	}
	p.Admit(a3, 2, 0)
	if !a1.closed.Load() {
		t.Error("the oldest connection of the full source was not evicted")
	}
	if a2.closed.Load() || a3.closed.Load() || b1.closed.Load() {
		t.Error("evicted more than the oldest of the full source")
	}
	select {
	case <-p1.Evicted():
	default:
		t.Error("Evicted not closed for an evicted connection")
	}
	if !p1.Done() {
		t.Error("Done of an evicted connection reports false")
	}
	if got := p.Held(a1.RemoteAddr()); got != 2 {
		t.Errorf("source holds %d, want 2", got)
	}
	if got, want := p.Len(), 3; got != want {
		t.Errorf("Len %d, want %d", got, want)
	}
	if p.Evictions() != 1 {
		t.Errorf("Evictions %d, want 1", p.Evictions())
	}
}

func TestPreAuthEvictsOldestOfAll(t *testing.T) {
	var p PreAuth
	var conns []*srcConn
	var pend []*Pending
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"} {
		c := from(ip)
		conns = append(conns, c)
		pend = append(pend, p.Admit(c, 0, 3))
		if i < 3 && p.Evictions() != 0 {
			t.Fatalf("evicted at %d of 3", i+1)
		}
	}
	if !conns[0].closed.Load() || conns[1].closed.Load() || conns[2].closed.Load() || conns[3].closed.Load() {
		t.Errorf("closed %v %v %v %v, want only the oldest", conns[0].closed.Load(), conns[1].closed.Load(), conns[2].closed.Load(), conns[3].closed.Load())
	}
	// Authenticated connections leave the count and are never evicted.
	if pend[1].Done() {
		t.Error("Done of a live connection reports evicted")
	}
	for range 5 {
		p.Admit(from("192.0.2.9"), 0, 3)
	}
	if conns[1].closed.Load() {
		t.Error("an authenticated connection was evicted")
	}
	if !conns[2].closed.Load() || !conns[3].closed.Load() {
		t.Error("older unauthenticated connections survived newer ones")
	}
	if p.Len() != 3 {
		t.Errorf("Len %d, want 3", p.Len())
	}
	if pend[1].Done() {
		t.Error("a second Done reports evicted")
	}
}

func TestAuthDelay(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	d := &AuthDelay{Base: 100 * time.Millisecond, Max: time.Second, Forget: time.Minute, now: func() time.Time { return now }}
	a, b := from("192.0.2.1").RemoteAddr(), from("192.0.2.2").RemoteAddr()
	for i, ms := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		n, wait := d.Failed(a)
		if n != i+1 || wait != ms*time.Millisecond {
			t.Errorf("failure %d: n=%d wait=%v, want n=%d wait=%v", i+1, n, wait, i+1, ms*time.Millisecond)
		}
	}
	if n, wait := d.Failed(b); n != 1 || wait != 100*time.Millisecond {
		t.Errorf("another source's first failure: n=%d wait=%v", n, wait)
	}
	d.Succeeded(a)
	if n, _ := d.Failed(a); n != 1 {
		t.Errorf("after a success: n=%d, want 1", n)
	}
	now = now.Add(time.Minute)
	if d.Failures(a) != 0 {
		t.Errorf("failures counted after Forget: %d", d.Failures(a))
	}
	if n, _ := d.Failed(a); n != 1 {
		t.Errorf("after Forget: n=%d, want 1", n)
	}
}

func TestAuthDelaySweeps(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	d := &AuthDelay{Forget: time.Minute, now: func() time.Time { return now }}
	// Ten minutes of 1024 new sources a minute: the map holds about the
	// sources of the last minute or two, not all of them.
	for round := range 10 {
		for i := range 1024 {
			d.Failed(&net.TCPAddr{IP: net.IPv4(10, byte(round), byte(i>>8), byte(i))})
		}
		now = now.Add(time.Minute)
	}
	d.mu.Lock()
	n := len(d.fails)
	d.mu.Unlock()
	if n > 2048 {
		t.Errorf("%d sources held, want at most 2048 (two minutes' worth)", n)
	}
}
