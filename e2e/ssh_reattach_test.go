package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/proctab"
)

// liveSSH is a real OpenSSH client (or the generated script) on a pty-less
// stdin the test types into.
type liveSSH struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   syncBuf
	done  chan error
}

func startLive(t *testing.T, f *sshFixture, name string, args ...string) *liveSSH {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = f.clientEnv("", "TERM=xterm")
	cmd.WaitDelay = 5 * time.Second
	l := &liveSSH{t: t, cmd: cmd, done: make(chan error, 1)}
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
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
		}
	})
	return l
}

func (l *liveSSH) typeLine(s string) {
	l.t.Helper()
	if _, err := io.WriteString(l.stdin, s+"\n"); err != nil {
		l.t.Fatalf("type %q: %v", s, err)
	}
}

func (l *liveSSH) waitOut(want string) {
	l.t.Helper()
	if !l.out.waitFor(want, 30*time.Second, nil) {
		l.t.Fatalf("output lacks %q:\n%s", want, l.out.String())
	}
}

// waitExit waits for the client to end and returns its exit code.
func (l *liveSSH) waitExit() int {
	l.t.Helper()
	select {
	case err := <-l.done:
		l.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 0
	case <-time.After(30 * time.Second):
		l.t.Fatalf("the client did not exit:\n%s", l.out.String())
		return -1
	}
}

// waitEvent waits until build id has an event of kind whose data mentions
// substr.
func waitEvent(t *testing.T, f *sshFixture, id int64, kind, substr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := f.s.Client().Events(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Kind == kind && strings.Contains(fmt.Sprint(e.Data), substr) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event with %q: %+v", kind, substr, evs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSSHReattach: killing the client (kill -9) is no logout: the shell
// and what it started keep running, the build goes on, and the next
// connection (here the generated script, on a terminal) gets the same
// shell back with its screen; HANGAR_SHELL=new gives a separate one; exit
// ends a shell; and when the build ends, nothing any session started is
// left running.
func TestSSHReattach(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script (util-linux)")
	}
	f := newHostSSHFixture(t)
	id, script := startHostSSH(t, f)
	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	conf, alias := filepath.Join(dir, "config"), fmt.Sprintf("build-%d", id)
	pids := filepath.Join(t.TempDir(), "pids")

	first := startLive(t, f, "ssh", "-F", conf, "-tt", alias)
	first.typeLine(`export KEPT=v$((40+2)); echo "before-$((1+1))-drop"`)
	first.waitOut("before-2-drop")
	// Background work of the shell, and of a command: a job, a nohup'd
	// process, one that left its session.
	first.typeLine(`sleep 3601 & echo $! >> ` + pids + `; echo "job-started"`)
	first.waitOut("job-started")
	if r := f.run("ssh", "-F", conf, alias, `nohup sleep 3602 >/dev/null 2>&1 & echo $! >> `+pids+`; setsid sleep 3603 >/dev/null 2>&1 </dev/null & echo $! >> `+pids); r.Code != 0 {
		t.Fatalf("background command: %+v", r)
	}
	_ = first.cmd.Process.Kill() // kill -9: no logout
	first.waitExit()
	waitEvent(t, f, id, "ssh_login_detach", "shell 1")
	if b := f.show(id); b.Status != build.Building || b.SSH.State == build.SSHClosed {
		t.Fatalf("after the client was killed: %s, ssh %+v", b.Status, b.SSH)
	}

	// The generated script, on a terminal (script(1) gives it one).
	again := startLive(t, f, "script", "-qfec", "bash "+script, "/dev/null")
	again.waitOut("before-2-drop") // the restored screen
	waitEvent(t, f, id, "ssh_login_attach", "shell 1")
	again.typeLine(`echo "kept=$KEPT shell=$HANGAR_SHELL_ID"`)
	again.waitOut("kept=v42 shell=1")

	// A separate shell when asked; its exit is no logout while shell 1 is
	// open.
	other := startLive(t, f, "ssh", "-F", conf, "-tt", "-o", "SetEnv=HANGAR_SHELL=new", alias)
	other.typeLine(`echo "other=$HANGAR_SHELL_ID kept=${KEPT-unset}"`)
	other.waitOut("other=2 kept=unset")
	other.typeLine("exit")
	if code := other.waitExit(); code != 0 {
		t.Errorf("exit from shell 2: ssh exit %d", code)
	}
	waitEvent(t, f, id, "ssh_login_end", "exit status 0")
	if b := f.show(id); b.SSH.State == build.SSHClosed {
		t.Fatalf("the end of a second shell closed access: %+v", b.SSH)
	}
	again.typeLine(`echo "still=$KEPT"`)
	again.waitOut("still=v42")

	// Everything goes with the build, whatever started it.
	b, pidList := f.show(id), []string{}
	if data, err := os.ReadFile(pids); err == nil {
		pidList = strings.Fields(string(data))
	}
	if len(pidList) != 3 {
		t.Fatalf("pids %q", pidList)
	}
	f.hangar(fmt.Sprintf("build cancel %d", id))
	if code := again.waitExit(); code == 0 {
		t.Errorf("the script exited 0 after cancel")
	}
	// Told in the terminal, and the script's own last word says the same.
	if out := again.out.String(); !strings.Contains(out, fmt.Sprintf("*** Hangar: SSH access to build %d ended: the build was canceled ***", id)) ||
		!strings.Contains(out, fmt.Sprintf("hangar: SSH access to build %d ended: the build was canceled", id)) {
		t.Errorf("the shell was closed without a word of why:\n%s", out)
	}
	f.wait(id, time.Minute)
	for _, pid := range pidList {
		if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
			t.Errorf("process %s outlived build %d: %s", pid, b.ID, stat)
		}
	}
}

// TestSSHLogoutStillEnds: a lost connection of the script is reported as
// such; exit in the last login shell is still a logout, re-attached or not.
func TestSSHLogoutStillEnds(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script (util-linux)")
	}
	f := newHostSSHFixture(t)
	id, script := startHostSSH(t, f)
	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	conf, alias := filepath.Join(dir, "config"), fmt.Sprintf("build-%d", id)
	// The generated script on a terminal, whose connection is cut (its
	// ProxyJump hop is killed, as a network that goes away): the script
	// says the connection was lost and the shell keeps running.
	first := startLive(t, f, "script", "-qfec", "bash "+script, "/dev/null")
	first.typeLine("echo one-$((0+1))")
	first.waitOut("one-1")
	killed := 0
	for _, pid := range proctab.Descendants(proctab.Table(), first.cmd.Process.Pid) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(cmd), "ssh\x00") && strings.Contains(string(cmd), "\x00-W\x00") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("found %d ProxyJump processes of the script's ssh", killed)
	}
	first.waitOut("hangar: the connection to " + alias + " was lost. Your shell keeps running on the machine: run this again to get it back.")
	first.waitExit()
	waitEvent(t, f, id, "ssh_login_detach", "shell 1")
	second := startLive(t, f, "ssh", "-F", conf, "-tt", alias)
	second.waitOut("one-1")
	second.typeLine("exit")
	second.waitExit()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := f.show(id)
		if b.SSH.State == build.SSHClosed {
			if !strings.Contains(b.SSH.ClosedReason, "logged out") {
				t.Errorf("closed: %q", b.SSH.ClosedReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exit did not log out: %+v", b.SSH)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSSHWindowEndMessages: when the SSH window ends after the steps, every
// session is told why before it is closed: a login shell in its terminal, a
// command without one on its standard error; a shell that was detached
// then is gone too, and the script that tries to reach it says why.
func TestSSHWindowEndMessages(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script (util-linux)")
	}
	f := newHostSSHFixtureAfter(t, "6s")
	b := f.start("--workflow done --ssh")
	f.waitSSH(b.ID)
	id, script := b.ID, f.script(b.ID)
	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	conf, alias := filepath.Join(dir, "config"), fmt.Sprintf("build-%d", id)

	// A shell detached before the end.
	gone := startLive(t, f, "ssh", "-F", conf, "-tt", alias)
	gone.typeLine("echo detached-$((2+2)); echo $$")
	gone.waitOut("detached-4")
	_ = gone.cmd.Process.Kill()
	gone.waitExit()
	waitEvent(t, f, id, "ssh_login_detach", "shell 1")
	// A second shell, attached, and a command without a terminal.
	shell := startLive(t, f, "ssh", "-F", conf, "-tt", "-o", "SetEnv=HANGAR_SHELL=new", alias)
	shell.typeLine("echo attached-$((3+3))")
	shell.waitOut("attached-6")
	cmd := startLive(t, f, "ssh", "-F", conf, alias, "echo cmd-started; sleep 120")
	cmd.waitOut("cmd-started")

	nb, _ := f.wait(id, time.Minute)
	if nb.Status != build.Finished {
		t.Fatalf("build %s, want finished", nb.Status)
	}
	reason := fmt.Sprintf("SSH access to build %d ended: 6s after the steps completed (", id)
	if !strings.HasPrefix(nb.SSH.ClosedReason, reason) {
		t.Errorf("closed reason %q, want %q...", nb.SSH.ClosedReason, reason)
	}
	shell.waitExit()
	if out := shell.out.String(); !strings.Contains(out, "*** Hangar: "+reason) {
		t.Errorf("the shell was not told why:\n%s", out)
	}
	cmd.waitExit()
	if out := cmd.out.String(); !strings.Contains(out, "Hangar: "+reason) {
		t.Errorf("the command was not told why on stderr:\n%s", out)
	}
	// The detached shell went with the window; reaching for it, the script
	// says why it cannot.
	again := startLive(t, f, "script", "-qfec", "bash "+script, "/dev/null")
	if code := again.waitExit(); code == 0 {
		t.Errorf("the script connected after the end:\n%s", again.out.String())
	}
	if out := again.out.String(); !strings.Contains(out, "hangar: "+reason) {
		t.Errorf("the script did not say why:\n%s", out)
	}
}
