package netx

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var errTestClosed = errors.New("test: server closed")

// listen listens on a loopback port that no other process can take
// while the test runs, even after the listener is closed: a second
// socket, bound to the same address (both with SO_REUSEPORT) but never
// listening, holds the port until the test's cleanup. So a dial to the
// port after the listener closed is refused (nothing listens there), and
// a success can only mean that the listener still accepts: no other
// process can have been given the port (binding it needs SO_REUSEPORT and
// our user), and no outgoing connection gets it as its local port (the
// kernel does not pick a bound port).
func listen(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	guard, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(guard) })
	if err := unix.SetsockoptInt(guard, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := unix.Bind(guard, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("hold port %d: %v", port, err)
	}
	return l
}

// echoServer serves l with tr: each connection echoes until EOF. started
// gets each connection once its handler runs; handled gets it when the
// handler returns.
type echoServer struct {
	tr      *Tracker
	addr    string
	served  chan error
	started chan net.Conn
	handled chan net.Conn
}

func startEcho(t *testing.T, limit int) *echoServer {
	t.Helper()
	l := listen(t)
	s := &echoServer{tr: &Tracker{}, addr: l.Addr().String(), served: make(chan error, 1),
		started: make(chan net.Conn, 16), handled: make(chan net.Conn, 16)}
	go func() {
		s.served <- s.tr.Serve(l, errTestClosed, func(nc net.Conn) {
			_ = s.tr.Go(nc, limit, func(nc net.Conn) {
				defer func() { s.handled <- nc }()
				defer nc.Close()
				s.started <- nc
				_, _ = io.Copy(nc, nc)
			})
		})
	}()
	t.Cleanup(func() {
		s.tr.Close()
		if err := wait(t, s.served, "Serve to return"); !errors.Is(err, errTestClosed) {
			t.Errorf("Serve: %v, want the closed error", err)
		}
	})
	return s
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A round trip: the server's handler is running.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("echo: %v", err)
	}
	return c
}

// refused checks that a dial to addr, a port of listen, is refused: its
// listener is closed.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded after the listener closed (%s -> %s)", addr, c.LocalAddr(), c.RemoteAddr())
	}
	// The kernel answers the SYN with a reset: connect reports it as
	// refused, or as reset when the reset raced the handshake.
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial %s after the listener closed: %v, want connection refused (or reset)", addr, err)
	}
}

func TestShutdownWaitsForConnections(t *testing.T) {
	s := startEcho(t, 0)
	c := dial(t, s.addr)
	wait(t, s.started, "the handler")

	shut := make(chan error, 1)
	go func() { shut <- s.tr.Shutdown(context.Background()) }()
	// Shutdown stops accepting first...
	if err := wait(t, s.served, "Serve to return"); !errors.Is(err, errTestClosed) {
		t.Errorf("Serve: %v, want the closed error", err)
	}
	s.served <- errTestClosed // for the cleanup
	refused(t, s.addr)
	// ...and leaves the open connection alone: it still echoes.
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'y' {
		t.Fatalf("echo during Shutdown: %q %v", b, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a connection open", err)
	default:
	}
	// The client leaves: the handler returns and Shutdown with it.
	c.Close()
	wait(t, s.handled, "the handler to return")
	if err := wait(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if n := s.tr.Len(); n != 0 {
		t.Errorf("%d connections tracked after Shutdown", n)
	}
}

func TestShutdownDeadlineClosesTheRest(t *testing.T) {
	s := startEcho(t, 0)
	c := dial(t, s.addr)
	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- s.tr.Shutdown(ctx) }()
	refusedAfterServe(t, s)
	cancel()
	if err := wait(t, shut, "Shutdown"); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	// The connection was closed under its handler: the client sees EOF.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection still reads after Shutdown's deadline")
	}
	wait(t, s.handled, "the handler to return")
}

// refusedAfterServe waits for Serve to return and checks the port is shut.
func refusedAfterServe(t *testing.T, s *echoServer) {
	t.Helper()
	err := wait(t, s.served, "Serve to return")
	s.served <- err
	refused(t, s.addr)
}

func TestCloseClosesEverythingAtOnce(t *testing.T) {
	s := startEcho(t, 0)
	c1, c2 := dial(t, s.addr), dial(t, s.addr)
	if err := s.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	refusedAfterServe(t, s)
	for _, c := range []net.Conn{c1, c2} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection still reads after Close")
		}
	}
	wait(t, s.handled, "a handler to return")
	wait(t, s.handled, "a handler to return")
	// Shutdown after Close has nothing left to wait for.
	if err := s.tr.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
}

func TestServeAfterCloseAndTrackRefusals(t *testing.T) {
	var tr Tracker
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	release, err := tr.Track(a, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Track(b, 1); !errors.Is(err, ErrTooManyConns) {
		t.Errorf("Track over the limit: %v, want ErrTooManyConns", err)
	}
	release()
	release() // idempotent
	if tr.Len() != 0 {
		t.Fatalf("Len %d after release", tr.Len())
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Track(b, 0); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Track after Close: %v, want ErrServerClosed", err)
	}
	l := listen(t)
	if err := tr.Serve(l, nil, func(net.Conn) { t.Error("a connection after Close") }); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close: %v, want ErrServerClosed", err)
	}
	refused(t, l.Addr().String()) // Serve closed the listener
}

func TestGoRefusesOverLimit(t *testing.T) {
	s := startEcho(t, 1)
	dial(t, s.addr)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The second connection is closed at once, never echoed.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection over the limit was served")
	}
}

func TestSourceLimit(t *testing.T) {
	var sl SourceLimit
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	a2 := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 2}
	b := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 1}
	r1, ok1 := sl.Acquire(a, 2)
	_, ok2 := sl.Acquire(a2, 2)
	_, ok3 := sl.Acquire(a, 2)
	_, okb := sl.Acquire(b, 2)
	if !ok1 || !ok2 || ok3 || !okb {
		t.Fatalf("acquire: %v %v %v %v, want true true false true", ok1, ok2, ok3, okb)
	}
	r1()
	r1()
	if n := sl.Held(a); n != 1 {
		t.Errorf("held %d after one release (twice), want 1", n)
	}
	if _, ok := sl.Acquire(a, 2); !ok {
		t.Error("a released slot was not given back")
	}
	if _, ok := sl.Acquire(a, 0); !ok {
		t.Error("limit 0 refused")
	}
	if !IsLoopback(&net.TCPAddr{IP: net.IPv6loopback}) || IsLoopback(a) {
		t.Error("IsLoopback")
	}
}

func TestIdleConn(t *testing.T) {
	l := listen(t)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			close(accepted)
			return
		}
		accepted <- nc
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := wait(t, accepted, "accept")
	const timeout = 200 * time.Millisecond
	ic := NewIdleConn(nc, timeout)
	defer ic.Close()

	// Traffic keeps it open well past the timeout: the peer writes a byte
	// every timeout/4, the idle conn echoes it.
	start := time.Now()
	tick := time.NewTicker(timeout / 4)
	for time.Since(start) < 3*timeout {
		<-tick.C
		if _, err := c.Write([]byte("k")); err != nil {
			t.Fatalf("write: %v", err)
		}
		var b [1]byte
		if _, err := io.ReadFull(ic, b[:]); err != nil {
			t.Fatalf("an active conn was closed after %s: %v", time.Since(start), err)
		}
		if _, err := ic.Write(b[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	// Silence closes it: a blocked read ends.
	quiet := time.Now()
	if _, err := ic.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on an idle conn: %v, want net.ErrClosed", err)
	}
	if d := time.Since(quiet); d < timeout/2 {
		t.Errorf("closed after %s of silence, timeout %s", d, timeout)
	}
}
