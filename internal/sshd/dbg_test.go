package sshd
import ("testing";"time";"context")
func TestDbgSize(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"300000000"} {
		start := time.Now()
		cmd := h.command(context.Background(), "ssh", sshTo("head -c "+n+" /dev/zero")...)
		out, err := cmd.Output()
		t.Logf("%s: got %d bytes err %v in %v", n, len(out), err, time.Since(start))
	}
}
