package sshd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/syncbuf"
)

func TestOpenSSHClientInstalled(t *testing.T) {
	for _, tool := range []string{"ssh", "scp", "sftp", "ssh-agent", "ssh-add", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Errorf("%s not found: install openssh-client", tool)
		}
	}
}

func TestExecExitStatus(t *testing.T) {
	h := newHarness(t)
	for cmd, want := range map[string]int{"exit 7": 7, "true": 0, "false": 1, "exit 255": 255} {
		if res := h.ssh("", sshTo(cmd)...); res.code != want {
			t.Errorf("%q: exit %d (stderr %q), want %d", cmd, res.code, res.stderr, want)
		}
	}
	h.waitEvent(EventChannel, "exec: exit 7")
	if n := len(h.eventsOf(EventLoginStart)); n != 0 {
		t.Errorf("exec sessions gave %d login_start events, want 0", n)
	}
}

func TestExecStdoutStderrSeparate(t *testing.T) {
	h := newHarness(t)
	res := h.ssh("", sshTo("echo out; echo err >&2; echo out2")...)
	if res.code != 0 || res.stdout != "out\nout2\n" || res.stderr != "err\n" {
		t.Errorf("got %+v, want stdout out,out2 and stderr err", res)
	}
}

func TestExecEnvironmentAndDir(t *testing.T) {
	h := newHarness(t)
	out := h.mustSSH("", `printenv X; pwd; printenv HOME; printenv SHELL; printenv SSH_CONNECTION; printenv USER; printenv LANG; printenv TERM || echo no-term; printenv SSH_AUTH_SOCK || echo no-agent`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 9 {
		t.Fatalf("got %q", out)
	}
	if lines[0] != "from-env" {
		t.Errorf("X = %q, want from-env (from Env)", lines[0])
	}
	if lines[1] != h.dir {
		t.Errorf("pwd = %q, want Dir() %q", lines[1], h.dir)
	}
	if lines[2] != h.home {
		t.Errorf("HOME = %q, want %q", lines[2], h.home)
	}
	if !strings.HasSuffix(lines[3], "sh") {
		t.Errorf("SHELL = %q", lines[3])
	}
	if f := strings.Fields(lines[4]); len(f) != 4 || f[0] != "127.0.0.1" || f[3] != h.port {
		t.Errorf("SSH_CONNECTION = %q", lines[4])
	}
	if lines[5] == "" {
		t.Errorf("USER is empty")
	}
	if lines[6] != "C.UTF-8" {
		t.Errorf("LANG = %q", lines[6])
	}
	if lines[7] != "no-term" || lines[8] != "no-agent" {
		t.Errorf("TERM/SSH_AUTH_SOCK set without pty/agent: %q %q", lines[7], lines[8])
	}
}

func TestDirFallsBackToHome(t *testing.T) {
	h := newHarness(t, func(h *harness) {
		h.srv.Dir = func() string { return filepath.Join(h.dir, "missing") }
	})
	if out := strings.TrimSpace(h.mustSSH("", "pwd")); out != h.home {
		t.Errorf("pwd = %q, want HOME %q", out, h.home)
	}
}

func TestClientEnvSubset(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", sshTo("printenv LC_HANGAR; printenv EVIL || echo unset",
		"-o", "SendEnv=LC_HANGAR EVIL")...)
	cmd.Env = h.clientEnv("LC_HANGAR=yes", "EVIL=1")
	res := h.runCmd(cmd, "")
	if res.code != 0 || res.stdout != "yes\nunset\n" {
		t.Errorf("got %+v, want LC_HANGAR accepted and EVIL ignored", res)
	}
}

func TestStdinPiping(t *testing.T) {
	h := newHarness(t)
	data := make([]byte, 4<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	// cat back what it got: the client's EOF must reach cat's stdin.
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", sshTo("cat")...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh cat: %v", err)
	}
	if sha256.Sum256(out) != sum {
		t.Errorf("cat returned %d bytes that differ from the %d sent", len(out), len(data))
	}
	if got := strings.TrimSpace(h.mustSSH(string(data[:1000]), "wc -c")); got != "1000" {
		t.Errorf("wc -c = %q", got)
	}
}

func TestSignalForwarded(t *testing.T) {
	h := newHarness(t)
	c := h.goClient()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	stdout, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(`trap 'echo got-int; exit 3' INT; echo ready; sleep 30 & wait`); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	if err := sess.Signal(ssh.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	err = sess.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Errorf("Wait: %v, want exit status 3", err)
	}
	if string(rest) != "got-int\n" {
		t.Errorf("output %q, want got-int", rest)
	}
}

func TestExitSignal(t *testing.T) {
	h := newHarness(t)
	c := h.goClient()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	err = sess.Run(`kill -TERM $$`)
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Errorf("Run: %v, want exit-signal TERM", err)
	}
	// OpenSSH reports a remote signal as 255.
	if res := h.ssh("", sshTo("kill -KILL $$")...); res.code != 255 {
		t.Errorf("ssh: %+v, want 255", res)
	}
}

func TestPTYLoginShell(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", "-tt", "builder@127.0.0.1")
	cmd.Env = h.clientEnv("TERM=xterm-hangar")
	res := h.runCmd(cmd, "echo hi-$((6*7)); echo \"argv0=$0\"; tty; printenv TERM; exit\n")
	if res.code != 0 {
		t.Fatalf("ssh -tt: exit %d, %+v", res.code, res)
	}
	out := strings.ReplaceAll(res.stdout, "\r\n", "\n")
	for _, want := range []string{"\nhi-42\n", "\nargv0=-bash\n", "\n/dev/pts/", "\nxterm-hangar\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	start := h.waitEvent(EventLoginStart, "pid")
	end := h.waitEvent(EventLoginEnd, "exit status 0")
	if start.Conn != end.Conn {
		t.Errorf("login events of different connections: %v %v", start, end)
	}
	if !waitFor(5*time.Second, func() bool { return h.srv.LoginShells() == 0 }) {
		t.Errorf("LoginShells() = %d after logout", h.srv.LoginShells())
	}
	// A shell without a pty, and a command with one, are not logins.
	h.mustSSH("", "true", "-tt")
	if res := h.ssh("echo x\n", "-T", "builder@127.0.0.1"); res.stdout != "x\n" {
		t.Errorf("shell without pty: %+v", res)
	}
	if n := len(h.eventsOf(EventLoginStart)); n != 1 {
		t.Errorf("%d login_start events, want 1", n)
	}
}

func TestPTYLoginShellLive(t *testing.T) {
	h := newHarness(t)
	// A live login shell: LoginShells counts it, Notice reaches it.
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", "-tt", "builder@127.0.0.1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	h.waitEvent(EventLoginStart, "pid")
	if n := h.srv.LoginShells(); n != 1 {
		t.Errorf("LoginShells() = %d, want 1", n)
	}
	h.srv.Notice("build finished")
	if !waitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "*** build finished ***") }) {
		t.Errorf("notice not shown: %q", out.String())
	}
	_, _ = io.WriteString(stdin, "exit 4\n")
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 {
			t.Errorf("ssh: %v, want exit 4", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("shell did not exit")
	}
	h.waitEvent(EventLoginEnd, "exit status 4")
}

func TestWindowChange(t *testing.T) {
	h := newHarness(t)
	c := h.goClient()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 30, 100, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start(`stty size; read x; stty size`); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, _ := r.ReadString('\n'); strings.TrimSpace(line) != "30 100" {
		t.Errorf("first size %q, want 30 100", line)
	}
	if err := sess.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	// The request has no reply: a second, replied request orders it.
	if _, err := sess.SendRequest("hangar-sync@example.com", true, nil); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(stdin, "\n")
	rest, _ := io.ReadAll(r)
	if !strings.Contains(string(rest), "50 132") {
		t.Errorf("size after window-change: %q, want 50 132", rest)
	}
	if err := sess.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

func TestSFTPAndSCP(t *testing.T) {
	h := newHarness(t)
	local := t.TempDir()
	data := make([]byte, 3<<20+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(local, "src.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()

	// sftp: relative paths are in Dir().
	batch := filepath.Join(local, "batch")
	got := filepath.Join(local, "got.bin")
	script := "put " + src + " up.bin\nmkdir sub\nls\nget up.bin " + got + "\nrm up.bin\n"
	if err := os.WriteFile(batch, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	res := h.runCmd(h.command(ctx, "sftp", "-b", batch, "builder@127.0.0.1"), "")
	if res.code != 0 {
		t.Fatalf("sftp: %+v", res)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, data) {
		t.Errorf("sftp round trip: %v, %d bytes", err, len(b))
	}
	if !isDir(filepath.Join(h.dir, "sub")) {
		t.Errorf("sftp mkdir sub did not land in Dir()")
	}
	h.waitEvent(EventChannel, "subsystem: sftp")

	// scp (the SFTP protocol in OpenSSH 9) both ways, and the legacy -O one.
	for _, legacy := range []bool{false, true} {
		var flags []string
		if legacy {
			flags = []string{"-O"}
		}
		remote := "builder@127.0.0.1:" + filepath.Join(h.home, "scp.bin")
		res = h.runCmd(h.command(ctx, "scp", append(flags, src, remote)...), "")
		if res.code != 0 {
			t.Fatalf("scp up (legacy %v): %+v", legacy, res)
		}
		back := filepath.Join(local, "scp-back.bin")
		res = h.runCmd(h.command(ctx, "scp", append(flags, remote, back)...), "")
		if res.code != 0 {
			t.Fatalf("scp down (legacy %v): %+v", legacy, res)
		}
		if b, err := os.ReadFile(back); err != nil || !bytes.Equal(b, data) {
			t.Errorf("scp round trip (legacy %v): %v, %d bytes", legacy, err, len(b))
		}
	}
}

func TestRsync(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync not installed")
	}
	h := newHarness(t)
	local := t.TempDir()
	srcDir := filepath.Join(local, "tree")
	for i := range 5 {
		p := filepath.Join(srcDir, "d"+strconv.Itoa(i%2), "f"+strconv.Itoa(i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 100000*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rsh := "ssh " + strings.Join(append(h.opts(), "-p", h.port), " ")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	rsync := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "rsync", append([]string{"-a", "-e", rsh}, args...)...)
		cmd.Env = h.clientEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("rsync %v: %v\n%s", args, err, out)
		}
	}
	rsync(srcDir+"/", "builder@127.0.0.1:tree/")
	back := filepath.Join(local, "back")
	rsync("builder@127.0.0.1:tree/", back+"/")
	cmd := exec.Command("diff", "-r", srcDir, back)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("trees differ: %v\n%s", err, out)
	}
	if !isDir(filepath.Join(h.dir, "tree", "d1")) {
		t.Errorf("rsync did not write into Dir()")
	}
}

func TestCloseAllRevokes(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := h.command(ctx, "ssh", "-tt", "builder@127.0.0.1")
	stdin, err := cmd.StdinPipe() // kept open: the shell waits for input
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	start := h.waitEvent(EventLoginStart, "pid")
	pid, _ := strconv.Atoi(strings.TrimPrefix(start.Detail, "pid "))

	h.srv.CloseAll("access revoked")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ssh still runs after CloseAll")
	}
	if !strings.Contains(out.String(), "*** access revoked ***") {
		t.Errorf("client output lacks the message: %q", out.String())
	}
	if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
		t.Errorf("shell %d still runs after CloseAll", pid)
	}
	h.waitEvent(EventLoginEnd, "pid")
	h.waitEvent(EventDisconnect, "")
	if res := h.ssh("", sshTo("true")...); res.code != 255 {
		t.Errorf("new connection after CloseAll: %+v, want refused", res)
	}
	// ServeConn called directly is refused too.
	a, b := tcpPair(t)
	defer b.Close()
	h.srv.ServeConn(a)
	h.waitEvent(EventReject, "server closed")
}

func TestDisconnectKillsProcesses(t *testing.T) {
	h := newHarness(t)
	pidFile := filepath.Join(h.dir, "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A command, and a straggler in its process group that outlives it.
	cmd := h.command(ctx, "ssh", sshTo(`(trap '' HUP; exec sleep 300) </dev/null >/dev/null 2>&1 & echo $! > `+pidFile+`.bg; echo $$ > `+pidFile+`; sleep 300`)...)
	h.background(cmd)
	var pids []int
	waitFor(10*time.Second, func() bool {
		pids = nil
		for _, f := range []string{pidFile, pidFile + ".bg"} {
			b, _ := os.ReadFile(f)
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				pids = append(pids, n)
			}
		}
		return len(pids) == 2
	})
	if len(pids) != 2 {
		t.Fatal("command did not start")
	}
	_ = cmd.Process.Kill() // the client goes away without a word
	for _, pid := range pids {
		if !waitFor(10*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("process %d still runs after the client went away", pid)
		}
	}
}

func TestAuthRefused(t *testing.T) {
	h := newHarness(t)
	other, _ := writeUserKey(t, filepath.Join(t.TempDir(), "other"))
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	args := h.opts()
	for i, a := range args {
		if a == h.keyFile {
			args[i] = other
		}
	}
	cmd := exec.CommandContext(ctx, "ssh", append(args, "-p", h.port, "builder@127.0.0.1", "true")...)
	cmd.Env = h.clientEnv()
	res := h.runCmd(cmd, "")
	if res.code != 255 || !strings.Contains(res.stderr, "Permission denied") {
		t.Errorf("wrong key: %+v, want Permission denied", res)
	}
	h.waitEvent(EventReject, "handshake")

	// A host key that does not match known_hosts makes the client refuse.
	if err := os.WriteFile(h.knownHosts, []byte("[127.0.0.1]:"+h.port+" "+string(ssh.MarshalAuthorizedKey(h.userSigner.PublicKey()))), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := h.ssh("", sshTo("true")...); res.code != 255 || !strings.Contains(res.stderr, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("changed host key: %+v", res)
	}
}

func TestNilConfigRefuses(t *testing.T) {
	var s Server // the zero value
	var events []Event
	s.Events = func(e Event) { events = append(events, e) }
	a, b := tcpPair(t)
	defer b.Close()
	s.ServeConn(a)
	if len(events) != 1 || events[0].Kind != EventReject {
		t.Errorf("events %v, want one reject", events)
	}
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := b.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read from refused conn: %d, %v; want closed", n, err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.srv.HandshakeTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Say nothing: the server must hang up on its own.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server kept a silent connection open")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v", d)
	}
	h.waitEvent(EventReject, "timed out")
}

func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.srv.IdleTimeout = time.Second })
	// Busy longer than the timeout: not idle.
	if out := h.mustSSH("", "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.25; done"); !strings.HasSuffix(out, "8\n") {
		t.Errorf("got %q", out)
	}
	// Silent: cut.
	res := h.ssh("", sshTo("sleep 20")...)
	if res.code != 255 {
		t.Errorf("idle session: %+v, want the connection closed", res)
	}
}

func TestMaxConns(t *testing.T) {
	h := newHarness(t, func(h *harness) { h.srv.MaxConns = 1 })
	first, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	// Its version line shows that the server handles it: it holds the only
	// slot while it says nothing.
	if line, err := bufio.NewReader(first).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("version line %q, %v", line, err)
	}
	if res := h.ssh("", sshTo("true")...); res.code != 255 {
		t.Errorf("second connection: %+v, want refused", res)
	}
	h.waitEvent(EventReject, "too many connections")
	first.Close()
	if !waitFor(10*time.Second, func() bool { return h.ssh("", sshTo("true")...).code == 0 }) {
		t.Errorf("slot not freed after the first connection closed")
	}
}

func TestGoroutinesSettle(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		h := newHarness(t)
		h.mustSSH("", "echo hi")
		h.mustSSH("ping\n", "cat")
		h.ssh("exit\n", "-tt", "builder@127.0.0.1")
		c := h.goClient()
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Start("sleep 300"); err != nil {
			t.Fatal(err)
		}
		h.waitEvent(EventChannel, "exec: sleep 300")
		h.srv.CloseAll("bye")
		h.waitEvent(EventDisconnect, "")
	}()
	// t.Cleanup of the harness runs at the end of the test; the server is
	// closed already, so everything of it should be gone now.
	var n int
	if !waitFor(15*time.Second, func() bool {
		n = runtime.NumGoroutine()
		return n <= base
	}) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines, %d before:\n%s", n, base, buf)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	return server, client
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// bgServer is a TCP server that a command starts in the background: it
// prints "PORT PID" once it listens (to a pipe the command reads one line
// of), then answers each connection with "hello".
const bgServer = `
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], os.getpid(), flush=True)
sys.stdout.close()
while True:
    c, _ = s.accept()
    c.sendall(b"hello\n")
    c.close()
`

// TestBackgroundOutlivesCommand: as with sshd, a process that a command
// leaves running (`nohup cmd &`) lives on after the command and its
// connection end, and a later connection reaches it; it ends when the
// server closes (the build ends).
func TestBackgroundOutlivesCommand(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3")
	}
	h := newHarness(t)
	prog := filepath.Join(h.dir, "bg.py")
	if err := os.WriteFile(prog, []byte(bgServer), 0o644); err != nil {
		t.Fatal(err)
	}
	// The command ends as soon as the server has said it listens.
	out := h.mustSSH("", `{ nohup python3 bg.py </dev/null 2>/dev/null & } | head -n1`)
	var port, pid int
	if _, err := fmt.Sscan(out, &port, &pid); err != nil {
		t.Fatalf("the command said %q: %v", out, err)
	}
	h.waitEvent(EventDisconnect, "")
	if !alive(pid) {
		t.Fatal("the background server ended with its command")
	}
	// A second connection reaches it, through a forward (ssh -W, as -L).
	res := h.ssh("", "-W", fmt.Sprintf("127.0.0.1:%d", port), "builder@127.0.0.1")
	if res.code != 0 || res.stdout != "hello\n" {
		t.Errorf("ssh -W to the background server: %+v", res)
	}
	// And a command.
	if got := h.mustSSH("", fmt.Sprintf(`python3 -c 'import socket; print(socket.create_connection(("127.0.0.1", %d)).recv(16).decode(), end="")'`, port)); got != "hello\n" {
		t.Errorf("a command reached the background server: %q", got)
	}
	// It ends with the server.
	h.srv.Close()
	if !waitFor(10*time.Second, func() bool { return !alive(pid) }) {
		t.Errorf("process %d still runs after the server closed", pid)
	}
}
