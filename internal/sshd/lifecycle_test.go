package sshd

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestShutdownWaitsForSessions: Shutdown refuses new connections at once,
// then returns only when the open connection has ended and ServeConn has
// finished with it (its processes gone, its disconnect reported).
func TestShutdownWaitsForSessions(t *testing.T) {
	h := newHarness(t)
	c := h.goClient()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("cat"); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(EventChannel, "exec: cat")

	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(context.Background()) }()
	// New connections are refused (the listener is closed)...
	if !waitFor(10*time.Second, func() bool {
		nc, err := net.Dial("tcp", h.addr)
		if err == nil {
			nc.Close()
		}
		return err != nil
	}) {
		t.Fatal("the server still accepts during Shutdown")
	}
	// ...while the open session goes on.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a session open", err)
	default:
	}
	if _, err := stdin.Write([]byte("still here\n")); err != nil {
		t.Fatalf("the session broke during Shutdown: %v", err)
	}
	// The user ends the session and leaves: Shutdown returns, after the
	// connection's teardown.
	stdin.Close()
	if err := sess.Wait(); err != nil {
		t.Errorf("cat: %v", err)
	}
	c.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last connection ended")
	}
	if len(h.eventsOf(EventDisconnect)) != 1 {
		t.Errorf("Shutdown returned before the connection's disconnect: %v", h.allEvents())
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	h := newHarness(t)
	c := h.goClient()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection stayed open after Shutdown's deadline")
	}
}
