package link

import (
	"context"
	"errors"
	"testing"
	"time"
)

// linkUp expects build-1, dials it as its builder and returns both ends.
func linkUp(t *testing.T, s *Server, addr, hostKey string) (*Expectation, *Client) {
	t.Helper()
	pub, priv := newKey(t)
	exp, err := s.Expect("build-1", pub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(exp.Close)
	c, err := Dial(context.Background(), &Hello{Name: "build-1", Addr: addr, HostKey: hostKey, Key: priv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case <-exp.Conn():
	case <-time.After(10 * time.Second):
		t.Fatal("no link delivered")
	}
	return exp, c
}

func TestShutdownWaitsForLinks(t *testing.T) {
	s, addr, hostKey := startServer(t)
	exp, c := linkUp(t, s, addr, hostKey)

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// It stops admitting builds at once...
	deadline := time.Now().Add(10 * time.Second)
	for {
		pub, _ := newKey(t)
		if _, err := s.Expect("build-2", pub); errors.Is(err, ErrServerClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Expect still admits builds during Shutdown")
		}
		time.Sleep(time.Millisecond)
	}
	// ...but waits for the link that is up.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a link up", err)
	default:
	}
	// The runner ends the build: the link closes and Shutdown returns.
	exp.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last link closed")
	}
	if err := c.Wait(); err == nil {
		t.Error("the builder's link ended without an error")
	}
}

func TestShutdownDeadlineClosesLinks(t *testing.T) {
	s, addr, hostKey := startServer(t)
	_, c := linkUp(t, s, addr, hostKey)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the link stayed up after Shutdown's deadline")
	}
}
