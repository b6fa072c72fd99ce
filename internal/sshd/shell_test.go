package sshd

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/proctab"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

// liveShell is an OpenSSH client with a login shell (ssh -tt) that the test
// types into.
type liveShell struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   syncbuf.Buffer
	done  chan error
}

// openShell starts `ssh -tt [flags] builder@127.0.0.1`.
func (h *harness) openShell(t *testing.T, flags ...string) *liveShell {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	t.Cleanup(cancel)
	cmd := h.command(ctx, "ssh", append(append([]string{"-tt"}, flags...), "builder@127.0.0.1")...)
	cmd.Env = h.clientEnv("TERM=xterm")
	l := &liveShell{t: t, cmd: cmd, done: make(chan error, 1)}
	var err error
	if l.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = &l.out, &l.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-l.done
	})
	return l
}

// typeLine sends a line to the shell.
func (l *liveShell) typeLine(line string) {
	l.t.Helper()
	if _, err := io.WriteString(l.stdin, line+"\n"); err != nil {
		l.t.Fatalf("type %q: %v", line, err)
	}
}

// waitOut waits until the client's output contains s.
func (l *liveShell) waitOut(s string) {
	l.t.Helper()
	if !waitFor(20*time.Second, func() bool { return strings.Contains(l.out.String(), s) }) {
		l.t.Fatalf("output lacks %q:\n%q", s, l.out.String())
	}
}

// kill ends the client like kill -9 and waits for it.
func (l *liveShell) kill() {
	_ = l.cmd.Process.Kill()
	<-l.done
	l.done <- nil // for the cleanup
}

// wait waits for the client to exit and returns its exit code.
func (l *liveShell) wait() int {
	l.t.Helper()
	select {
	case err := <-l.done:
		l.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			l.t.Fatalf("ssh: %v", err)
		}
		return 0
	case <-time.After(20 * time.Second):
		l.t.Fatal("ssh did not exit")
		return -1
	}
}

func TestShellSurvivesDroppedConnection(t *testing.T) {
	h := newHarness(t)
	first := h.openShell(t)
	first.typeLine(`export KEPT=v$((40+2)); echo "before-$((1+1))-drop"`)
	first.waitOut("before-2-drop")
	start := h.waitEvent(EventLoginStart, "shell 1")
	pid, _ := strconv.Atoi(strings.TrimSuffix(strings.Fields(start.Detail)[1], ":"))
	first.kill()

	h.waitEvent(EventLoginDetach, "shell 1")
	if !alive(pid) {
		t.Fatal("the shell ended with its connection")
	}
	if n, d := h.srv.LoginShells(), h.srv.DetachedShells(); n != 1 || d != 1 {
		t.Errorf("LoginShells() = %d, DetachedShells() = %d; want 1, 1", n, d)
	}
	if n := len(h.eventsOf(EventLoginEnd)); n != 0 {
		t.Errorf("%d login_end events after a dropped connection, want 0", n)
	}

	second := h.openShell(t)
	// The screen comes back before anything is typed.
	second.waitOut("before-2-drop")
	h.waitEvent(EventLoginAttach, "shell 1")
	second.typeLine(`echo "kept=$KEPT id=$HANGAR_SHELL_ID pid=$$"`)
	second.waitOut("kept=v42 id=1 pid=" + strconv.Itoa(pid))
	second.typeLine("exit 3")
	if code := second.wait(); code != 3 {
		t.Errorf("ssh exit %d, want 3 (the shell's)", code)
	}
	h.waitEvent(EventLoginEnd, "exit status 3")
	if !waitFor(5*time.Second, func() bool { return h.srv.LoginShells() == 0 }) {
		t.Errorf("LoginShells() = %d after exit", h.srv.LoginShells())
	}
}

func TestNewShellWhenAsked(t *testing.T) {
	h := newHarness(t)
	first := h.openShell(t)
	first.typeLine(`echo "id=$HANGAR_SHELL_ID"`)
	first.waitOut("id=1")
	first.kill()
	h.waitEvent(EventLoginDetach, "shell 1")

	// Asked for a new one: shell 2, and shell 1 stays detached.
	second := h.openShell(t, "-o", "SetEnv=HANGAR_SHELL=new")
	second.typeLine(`echo "id=$HANGAR_SHELL_ID var=${HANGAR_SHELL-unset}"`)
	second.waitOut("id=2 var=unset")
	if n, d := h.srv.LoginShells(), h.srv.DetachedShells(); n != 2 || d != 1 {
		t.Errorf("LoginShells() = %d, DetachedShells() = %d; want 2, 1", n, d)
	}
	// With shell 2 attached, a plain login re-attaches to shell 1, the
	// detached one.
	third := h.openShell(t)
	third.typeLine(`echo "now=$HANGAR_SHELL_ID"`)
	third.waitOut("now=1")
	// With none detached, a login starts a new shell (once the live
	// connections answered the keepalive).
	fourth := h.openShell(t)
	fourth.typeLine(`echo "fourth=$HANGAR_SHELL_ID"`)
	fourth.waitOut("fourth=3")

	// A bad choice is refused with a reason.
	bad := h.openShell(t, "-o", "SetEnv=HANGAR_SHELL=sideways")
	if code := bad.wait(); code == 0 {
		t.Error("HANGAR_SHELL=sideways: ssh exit 0")
	}
	if !strings.Contains(bad.out.String(), `HANGAR_SHELL="sideways": use new, attach`) {
		t.Errorf("no reason given: %q", bad.out.String())
	}
	none := h.openShell(t, "-o", "SetEnv=HANGAR_SHELL=9")
	none.wait()
	if !strings.Contains(none.out.String(), "there is no shell 9") {
		t.Errorf("no reason given: %q", none.out.String())
	}
}

// goShell opens a login shell with x/crypto/ssh at cols x rows, with env.
func (h *harness) goShell(t *testing.T, c *ssh.Client, cols, rows int, env map[string]string) (*ssh.Session, io.Writer, *syncbuf.Buffer) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		if err := sess.Setenv(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.RequestPty("xterm", rows, cols, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		t.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	sess.Stdout, sess.Stderr = out, out
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	return sess, stdin, out
}

func waitBuf(t *testing.T, b *syncbuf.Buffer, s string) {
	t.Helper()
	if !waitFor(20*time.Second, func() bool { return strings.Contains(b.String(), s) }) {
		t.Fatalf("output lacks %q:\n%q", s, b.String())
	}
}

func TestReattachTakesTheNewWindowSize(t *testing.T) {
	h := newHarness(t)
	c1 := h.goClient()
	_, in1, out1 := h.goShell(t, c1, 80, 24, nil)
	_, _ = io.WriteString(in1, "stty size\n")
	waitBuf(t, out1, "24 80")
	c1.Close()
	h.waitEvent(EventLoginDetach, "shell 1")

	c2 := h.goClient()
	_, in2, out2 := h.goShell(t, c2, 132, 50, nil)
	waitBuf(t, out2, "24 80") // the restored screen
	_, _ = io.WriteString(in2, "stty size\n")
	waitBuf(t, out2, "50 132")
}

func TestShellTakenOverByNumber(t *testing.T) {
	h := newHarness(t)
	c1 := h.goClient()
	s1, in1, out1 := h.goShell(t, c1, 80, 24, nil)
	_, _ = io.WriteString(in1, "echo first-$HANGAR_SHELL_ID\n")
	waitBuf(t, out1, "first-1")

	c2 := h.goClient()
	_, in2, out2 := h.goShell(t, c2, 80, 24, map[string]string{ShellEnv: "1"})
	waitBuf(t, out2, "first-1")
	// The first client is told and its session closed; the shell lives.
	waitBuf(t, out1, "this shell was attached from another connection")
	waitErr := make(chan error, 1)
	go func() { waitErr <- s1.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(10 * time.Second):
		t.Fatal("the first session was not closed")
	}
	_, _ = io.WriteString(in2, "echo second-$HANGAR_SHELL_ID\n")
	waitBuf(t, out2, "second-1")
	if n := h.srv.LoginShells(); n != 1 {
		t.Errorf("LoginShells() = %d, want 1", n)
	}
}

// freezer is a TCP proxy whose traffic can be stopped without closing
// anything, as a network that drops every packet.
type freezer struct {
	l      net.Listener
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l}
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	go func() {
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, a, b)
			f.mu.Unlock()
			go f.pipe(a, b)
			go f.pipe(b, a)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if n > 0 && !frozen {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

// TestReattachAfterSilentDrop: the network dropped without the server
// noticing; a new login finds the old connection dead (no answer to a
// keepalive), closes it and re-attaches to its shell.
func TestReattachAfterSilentDrop(t *testing.T) {
	h := newHarness(t)
	f := newFreezer(t, h.addr)
	c1, err := ssh.Dial("tcp", f.l.Addr().String(), &ssh.ClientConfig{
		User: "builder", Auth: []ssh.AuthMethod{ssh.PublicKeys(h.userSigner)},
		HostKeyCallback: ssh.FixedHostKey(h.hostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close() })
	_, in1, out1 := h.goShell(t, c1, 80, 24, nil)
	_, _ = io.WriteString(in1, "echo frozen-$((5*5))\n")
	waitBuf(t, out1, "frozen-25")
	f.freeze()

	c2 := h.goClient()
	_, in2, out2 := h.goShell(t, c2, 80, 24, nil)
	waitBuf(t, out2, "frozen-25")
	h.waitEvent(EventDisconnect, "no answer to a keepalive")
	_, _ = io.WriteString(in2, "echo id-$HANGAR_SHELL_ID\n")
	waitBuf(t, out2, "id-1")
}

func TestNoticeReachesDetachedShell(t *testing.T) {
	h := newHarness(t)
	first := h.openShell(t)
	first.typeLine("echo ready")
	first.waitOut("ready")
	first.kill()
	h.waitEvent(EventLoginDetach, "shell 1")
	h.srv.Notice("the steps are done")
	second := h.openShell(t)
	second.waitOut("*** the steps are done ***")
}

// TestCloseAllEndsEverything: when access ends, every process of every
// session goes, detached shells and what they and commands left running
// included, and commands without a terminal are told why on stderr.
func TestCloseAllEndsEverything(t *testing.T) {
	h := newHarness(t)
	pids := filepath.Join(h.dir, "pids")
	// A detached shell with a job that ignores SIGHUP, in its own process
	// group (job control).
	first := h.openShell(t)
	first.typeLine(`(trap '' HUP; exec sleep 300) & echo $! >> ` + pids + `; echo $$ >> ` + pids + `; echo started`)
	first.waitOut("started")
	first.kill()
	h.waitEvent(EventLoginDetach, "shell 1")
	// A command that left a nohup'd process behind, and one in a process
	// group of its own. (One that leaves its session (setsid) and is
	// orphaned is the machine's to end: e2e tests that.)
	h.mustSSH("", `nohup sleep 301 >/dev/null 2>&1 & echo $! >> `+pids+`; set -m; sleep 302 >/dev/null 2>&1 < /dev/null & echo $! >> `+pids)
	// A command that runs while access ends.
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	running := h.command(ctx, "ssh", sshTo("echo running; sleep 303")...)
	var out syncbuf.Buffer
	running.Stdout, running.Stderr = &out, &out
	h.background(running)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(out.String(), "running") }) {
		t.Fatal("the command did not start")
	}
	var all []int
	b, _ := os.ReadFile(pids)
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		all = append(all, n)
	}
	if len(all) != 4 {
		t.Fatalf("pids %q", b)
	}
	h.srv.CloseAll("Hangar: SSH access to build 1 ended: test")
	// CloseAll returns once they are gone.
	for _, pid := range all {
		if alive(pid) {
			t.Errorf("process %d still runs after CloseAll", pid)
		}
	}
	for _, p := range proctab.Table() {
		if p.PPID == os.Getpid() {
			if c, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline"); strings.Contains(string(c), "sleep") {
				t.Errorf("a session's process %d (%q) is left", p.PID, c)
			}
		}
	}
	h.waitEvent(EventLoginEnd, "pid")
	if !waitFor(10*time.Second, func() bool { return strings.Contains(out.String(), "Hangar: SSH access to build 1 ended: test\n") }) {
		t.Errorf("the command's stderr lacks the reason: %q", out.String())
	}
}
