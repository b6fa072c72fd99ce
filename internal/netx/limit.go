package netx

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// SourceLimit counts connections by source IP address, to bound what one
// source may hold. Its zero value is ready to use.
type SourceLimit struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu; held connections by source
}

// Source is the IP address of a (TCP) remote address, else its host part,
// else the whole address.
func Source(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// IsLoopback reports whether a is a loopback address.
func IsLoopback(a net.Addr) bool {
	ip := net.ParseIP(Source(a))
	return ip != nil && ip.IsLoopback()
}

// Acquire counts one more connection from a's source unless that source
// holds limit already (limit <= 0: no bound). release (idempotent) gives
// the slot back.
func (s *SourceLimit) Acquire(a net.Addr, limit int) (release func(), ok bool) {
	src := Source(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit > 0 && s.n[src] >= limit {
		return nil, false
	}
	if s.n == nil {
		s.n = make(map[string]int)
	}
	s.n[src]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.n[src]--; s.n[src] <= 0 {
				delete(s.n, src)
			}
		})
	}, true
}

// Held is the number of connections counted for a's source.
func (s *SourceLimit) Held(a net.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[Source(a)]
}

// IdleConn closes its net.Conn once no byte has moved in either direction
// for its timeout. It works on any net.Conn, with deadlines or not (an SSH
// channel, say), and leaves the conn's deadlines to its user (for the
// handshake, say). Close stops its timer.
type IdleConn struct {
	net.Conn
	timeout time.Duration
	last    atomic.Int64 // unix nanoseconds of the last read or write
	stopped atomic.Bool
	timer   *time.Timer
}

// NewIdleConn wraps nc; timeout must be > 0.
func NewIdleConn(nc net.Conn, timeout time.Duration) *IdleConn {
	ic := &IdleConn{Conn: nc, timeout: timeout}
	ic.last.Store(time.Now().UnixNano())
	ic.timer = time.AfterFunc(timeout, ic.check)
	return ic
}

func (ic *IdleConn) check() {
	if ic.stopped.Load() {
		return
	}
	idle := time.Since(time.Unix(0, ic.last.Load()))
	if idle >= ic.timeout {
		ic.Conn.Close()
		return
	}
	ic.timer.Reset(ic.timeout - idle)
}

// Touch counts as activity now.
func (ic *IdleConn) Touch() { ic.last.Store(time.Now().UnixNano()) }

func (ic *IdleConn) Read(p []byte) (int, error) {
	n, err := ic.Conn.Read(p)
	if n > 0 {
		ic.Touch()
	}
	return n, err
}

func (ic *IdleConn) Write(p []byte) (int, error) {
	n, err := ic.Conn.Write(p)
	if n > 0 {
		ic.Touch()
	}
	return n, err
}

// Close stops the idle timer and closes the conn.
func (ic *IdleConn) Close() error {
	ic.stopped.Store(true)
	ic.timer.Stop()
	return ic.Conn.Close()
}

// CloseWrite half-closes the conn when it can, else closes it.
func (ic *IdleConn) CloseWrite() error {
	if cw, ok := ic.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return ic.Close()
}
