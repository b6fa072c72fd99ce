package sshd

import (
	"strings"
	"sync/atomic"
	"testing"
)

// TestBanner: a new login shell shows the banner, fresh each time, before
// the shell's own output; a command does not, and a re-attached shell gets
// its screen back rather than a second banner.
func TestBanner(t *testing.T) {
	var n atomic.Int32
	h := newHarness(t, func(h *harness) {
		h.srv.Banner = func() string {
			return "Hangar banner " + string(rune('0'+n.Add(1))) + "\nsecond line\n"
		}
	})
	if out := h.mustSSH("", "echo command-out"); strings.Contains(out, "banner") || strings.TrimSpace(out) != "command-out" {
		t.Errorf("a command's output: %q, want no banner", out)
	}
	first := h.openShell(t)
	first.typeLine(`echo "mark-$((6*7))"`)
	first.waitOut("mark-42")
	out := first.out.String()
	b := strings.Index(out, "Hangar banner 1\r\nsecond line\r\n")
	if b < 0 || b > strings.Index(out, "mark-42") {
		t.Fatalf("the banner is not on its own lines before the shell's output:\n%q", out)
	}
	first.kill()
	h.waitEvent(EventLoginDetach, "shell 1")

	second := h.openShell(t)
	second.waitOut("mark-42") // the screen, restored
	second.typeLine("echo attached-$HANGAR_SHELL_ID")
	second.waitOut("attached-1")
	if strings.Contains(second.out.String(), "Hangar banner 2") {
		t.Errorf("a re-attached shell got a new banner:\n%q", second.out.String())
	}

	third := h.openShell(t, "-o", "SetEnv=HANGAR_SHELL=new")
	third.waitOut("Hangar banner 2\r\nsecond line\r\n")
}
