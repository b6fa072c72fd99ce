package sshd

import (
	"strings"
	"testing"
)

func TestFeederFeedsInOrderAndSyncs(t *testing.T) {
	scr := newScreen(20, 4)
	f := newFeeder(scr)
	done := make(chan struct{})
	go func() { f.run(); close(done) }()
	f.add([]byte("one\r\n"))
	f.add([]byte("two\r\n"))
	f.sync()
	if got := strings.TrimSpace(scr.text()); got != "one\ntwo" {
		t.Errorf("after sync: %q", got)
	}
	f.close()
	<-done
}

func TestFeederKeepsTheNewestWhenFlooded(t *testing.T) {
	scr := newScreen(20, 4)
	f := newFeeder(scr) // not running: everything stays queued
	line := []byte(strings.Repeat("x", 18) + "\r\n")
	for range feedMax / len(line) * 2 {
		f.add(line)
	}
	f.add([]byte("last\r\n"))
	f.mu.Lock()
	n, dropped := len(f.queue), f.dropped
	f.mu.Unlock()
	if n > feedMax || !dropped {
		t.Fatalf("queue %d bytes (max %d), dropped %v", n, feedMax, dropped)
	}
	done := make(chan struct{})
	go func() { f.run(); close(done) }()
	f.sync()
	if got := scr.text(); !strings.Contains(got, "last") {
		t.Errorf("the newest output is not on the screen: %q", got)
	}
	f.close()
	<-done
}
