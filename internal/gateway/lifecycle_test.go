package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestShutdownWaitsForConnections: Shutdown stops accepting at once, waits
// for a connection still open (here, one in its handshake) and returns when
// it is gone; a deadline closes what is left.
func TestShutdownWaitsForConnections(t *testing.T) {
	gw, _, _, gwAddr, _, _ := setup(t)
	c, err := net.Dial("tcp", gwAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The gateway speaks first: its handler runs.
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-Hangar") {
		t.Fatalf("version line %q: %v", line, err)
	}
	shut := make(chan error, 1)
	go func() { shut <- gw.Shutdown(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := net.Dial("tcp", gwAddr)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway still accepts during Shutdown")
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a connection open", err)
	default:
	}
	c.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the connection closed")
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	gw, _, _, gwAddr, _, _ := setup(t)
	c, err := net.Dial("tcp", gwAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := gw.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	// Within the gateway's handshake timeout (2s in setup), which would
	// close it too.
	_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if _, err := r.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("read after Shutdown's deadline: %v, want the connection closed", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
