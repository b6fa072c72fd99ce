// Package gatewaytest helps tests of several gateways: LB is the one
// address in front of them, a TCP load balancer in the test's process.
package gatewaytest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// LB is a TCP load balancer on loopback: each connection goes to the
// first of its backends that accepts it, as a TCP load balancer with
// health checks would send it to a live one.
type LB struct {
	Addr string

	mu       sync.Mutex
	backends []string // guarded by mu
	ln       net.Listener
	wg       sync.WaitGroup
	conns    map[net.Conn]struct{} // guarded by mu
}

// NewLB starts an LB in front of backends, closed at t's cleanup.
func NewLB(t testing.TB, backends ...string) *LB {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &LB{Addr: ln.Addr().String(), backends: backends, ln: ln, conns: map[net.Conn]struct{}{}}
	lb.wg.Add(1)
	go lb.serve()
	t.Cleanup(lb.Close)
	return lb
}

// SetBackends replaces the backends (open connections stay).
func (lb *LB) SetBackends(backends ...string) {
	lb.mu.Lock()
	lb.backends = backends
	lb.mu.Unlock()
}

func (lb *LB) serve() {
	defer lb.wg.Done()
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return
		}
		lb.wg.Add(1)
		go func() {
			defer lb.wg.Done()
			lb.relay(c)
		}()
	}
}

func (lb *LB) track(c net.Conn, on bool) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !on {
		delete(lb.conns, c)
		return true
	}
	if lb.conns == nil { // closed
		return false
	}
	lb.conns[c] = struct{}{}
	return true
}

func (lb *LB) relay(c net.Conn) {
	defer c.Close()
	lb.mu.Lock()
	backends := append([]string(nil), lb.backends...)
	lb.mu.Unlock()
	var up net.Conn
	for _, b := range backends {
		var err error
		if up, err = net.DialTimeout("tcp", b, 5*time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !lb.track(c, true) {
		return
	}
	defer lb.track(c, false)
	if !lb.track(up, true) {
		return
	}
	defer lb.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// Close stops the LB and closes every connection through it.
func (lb *LB) Close() {
	lb.ln.Close()
	lb.mu.Lock()
	conns := lb.conns
	lb.conns = nil
	lb.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	lb.wg.Wait()
}
