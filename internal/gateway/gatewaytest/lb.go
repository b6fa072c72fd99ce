// Package gatewaytest helps tests of several gateways: LB is the one
// address in front of them, a TCP load balancer in the test's process.
package gatewaytest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// LB is a TCP load balancer (on loopback unless made by NewLBOn): each
// connection goes to the first of its backends that accepts it, as a TCP
// load balancer with health checks would send it to a live one.
type LB struct {
	Addr string

	mu       sync.Mutex
	backends []string // guarded by mu
	ln       net.Listener
	wg       sync.WaitGroup
	conns    map[net.Conn]struct{} // guarded by mu
	seq      int                   // guarded by mu: connections relayed so far
	frozen   int                   // guarded by mu: those before it are frozen
	closing  chan struct{}         // closed by Close
}

// NewLB starts an LB in front of backends, closed at t's cleanup.
func NewLB(t testing.TB, backends ...string) *LB {
	return NewLBOn(t, "127.0.0.1:0", backends...)
}

// NewLBOn is NewLB listening on addr (host:port; port 0 picks one).
func NewLBOn(t testing.TB, addr string, backends ...string) *LB {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lb := &LB{Addr: ln.Addr().String(), backends: backends, ln: ln, conns: map[net.Conn]struct{}{}, closing: make(chan struct{})}
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

// Freeze stops moving bytes on the connections open now, as a host that
// hangs (neither closing nor answering); connections made later move.
// The frozen connections are closed with the LB.
func (lb *LB) Freeze() {
	lb.mu.Lock()
	lb.frozen = lb.seq
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
	lb.mu.Lock()
	seq := lb.seq
	lb.seq++
	lb.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				lb.mu.Lock()
				frozen := seq < lb.frozen
				lb.mu.Unlock()
				if frozen {
					<-lb.closing
					break
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
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
	select {
	case <-lb.closing:
	default:
		close(lb.closing)
	}
	lb.mu.Unlock()
	lb.mu.Lock()
	conns := lb.conns
	lb.conns = nil
	lb.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	lb.wg.Wait()
}
