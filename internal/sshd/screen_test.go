package sshd

import (
	"strings"
	"testing"
)

func TestScreenRender(t *testing.T) {
	s := newScreen(20, 4)
	s.write([]byte("one\r\n\x1b[31mtwo\x1b[0m\r\nthree\x1b[?2004h\x1b[?1h"))
	if got := s.text(); strings.TrimSpace(got) != "one\ntwo\nthree" {
		t.Errorf("text %q", got)
	}
	r := string(s.render())
	for _, want := range []string{"\x1b[H\x1b[2J", "one", "\x1b[31mtwo", "three", "\x1b[3;6H", "\x1b[?2004h", "\x1b[?1h", "\x1b[?25h"} {
		if !strings.Contains(r, want) {
			t.Errorf("render lacks %q: %q", want, r)
		}
	}
	// Drawn on a fresh terminal, the render gives the same screen.
	again := newScreen(20, 4)
	again.write(s.render())
	if again.text() != s.text() || again.term.CursorPosition() != s.term.CursorPosition() {
		t.Errorf("redrawn: %q at %v, want %q at %v", again.text(), again.term.CursorPosition(), s.text(), s.term.CursorPosition())
	}
}

func TestScreenAltScreenAndHiddenCursor(t *testing.T) {
	s := newScreen(20, 4)
	s.write([]byte("shell\r\n\x1b[?1049h\x1b[Heditor\x1b[?25l"))
	r := string(s.render())
	if !strings.HasPrefix(r, "\x1b[0m\x1b[?1049h") || !strings.Contains(r, "editor") || strings.Contains(r, "shell") || !strings.Contains(r, "\x1b[?25l") {
		t.Errorf("render %q", r)
	}
	s.write([]byte("\x1b[?1049l"))
	if r := string(s.render()); strings.Contains(r, "1049h") || !strings.Contains(r, "shell") {
		t.Errorf("after leaving the alternate screen: %q", r)
	}
}

func TestScreenShrinkKeepsCursorLine(t *testing.T) {
	s := newScreen(10, 6)
	s.write([]byte("a\r\nb\r\nc\r\nd\r\ne\r\n$ "))
	s.resize(10, 3)
	if got := strings.TrimSpace(s.text()); got != "d\ne\n$" {
		t.Errorf("after shrinking: %q, want the last lines", got)
	}
	if p := s.term.CursorPosition(); p.Y != 2 || p.X != 2 {
		t.Errorf("cursor at %v, want (2,2)", p)
	}
	// No size (ssh -tt without a terminal): 80 x 24.
	z := newScreen(0, 0)
	if z.term.Width() != 80 || z.term.Height() != 24 {
		t.Errorf("size %dx%d", z.term.Width(), z.term.Height())
	}
}
