package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
)

// hostSSHWorkflows are the workflows of the host-driver SSH tests.
const hostSSHWorkflows = `
workflows:
  hold:
    max_build_duration: 10
    scripts:
      - name: Artifacts
        script: mkdir -p build && echo artifact > build/out.txt
      - name: Hold
        script: |
          echo holding
          sleep 300
  done:
    max_build_duration: 10
    scripts:
      - name: Quick
        script: echo quick
`

// newHostSSHFixture is a host-driver server with SSH and an app with
// hostSSHWorkflows: for what the sandbox does not change (the scripts, the
// client's side, the builder's SSH server).
func newHostSSHFixture(t *testing.T) *sshFixture {
	return newHostSSHFixtureAfter(t, "10m")
}

// newHostSSHFixtureAfter is newHostSSHFixture with --ssh-after-steps after.
func newHostSSHFixtureAfter(t *testing.T, after string) *sshFixture {
	return newHostSSHFixtureWith(t, after, hostSSHWorkflows)
}

// newHostSSHFixtureWith is newHostSSHFixtureAfter with the app's
// codemagic.yaml.
func newHostSSHFixtureWith(t *testing.T, after, workflows string) *sshFixture {
	harness.Need(t, "ssh", "bash")
	s := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{
		"--ssh", "127.0.0.1:0", "--ssh-after-steps", after, "--ssh-handshake-timeout", "5s",
	}})
	f := &fixture{t: t, s: s, run: marker(), driver: "host"}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": workflows})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	return &sshFixture{fixture: f, home: t.TempDir()}
}

// clientEnv is the environment of client commands: the clean HOME, and
// TMPDIR (where the script makes its directory) when tmp is not empty.
func (f *sshFixture) clientEnv(tmp string, more ...string) []string {
	env := []string{"HOME=" + f.home, "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
	if tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return append(env, more...)
}

// runIn runs a command like run, with TMPDIR=tmp.
func (f *sshFixture) runIn(tmp, name string, args ...string) harness.Result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = f.clientEnv(tmp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := harness.Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("%s: %v", name, err)
	}
	return r
}

// scriptDirs returns the script's temporary directories left in tmp.
func scriptDirs(t *testing.T, tmp string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(tmp, "hangar-ssh.*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startHostSSH starts a build that holds its machine and returns it with
// its script.
func startHostSSH(t *testing.T, f *sshFixture) (id int64, script string) {
	t.Helper()
	b := f.start("--workflow hold --ssh")
	waitLog(t, f.fixture, b.ID, "holding")
	f.waitSSH(b.ID)
	t.Cleanup(func() { f.hangar(fmt.Sprintf("build cancel %d", b.ID)) })
	return b.ID, f.script(b.ID)
}

func TestSSHScriptCleansUp(t *testing.T) {
	f := newHostSSHFixture(t)
	_, script := startHostSSH(t, f)
	tmp := t.TempDir()

	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"normal", []string{"true"}, 0},
		{"failing command", []string{"false"}, 1},
		{"exit status", []string{"exit 7"}, 7},
	} {
		r := f.runIn(tmp, "bash", append([]string{script}, c.args...)...)
		if r.Code != c.code || strings.Contains(r.Stderr, "unbound variable") {
			t.Errorf("%s: exit %d, stderr %q; want %d", c.name, r.Code, r.Stderr, c.code)
		}
		if left := scriptDirs(t, tmp); len(left) != 0 {
			t.Errorf("%s: the script left %v", c.name, left)
		}
	}

	// A signal while the remote command runs: to the script's process
	// group (Ctrl-C, a closed terminal) or to the script alone (kill).
	//
	// The script must start with these signals at their defaults, as from
	// a terminal. A test binary started with SIGHUP or SIGINT ignored (by
	// nohup, or as a background job of a script, which ignores SIGINT)
	// passes that on, and then bash cannot trap them and ssh leaves them
	// ignored: the script never ends. (That made the SIGHUP case hang in
	// full-suite runs started so.) Handling them here makes exec reset
	// them to the default in the children.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)
	for _, c := range []struct {
		name  string
		sig   syscall.Signal
		group bool
	}{
		{"SIGINT to the process group", syscall.SIGINT, true},
		{"SIGHUP to the process group", syscall.SIGHUP, true},
		{"SIGTERM to the script", syscall.SIGTERM, false},
		{"SIGINT to the script", syscall.SIGINT, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp := t.TempDir() // a failure here leaves nothing for the next case
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Its first line says the remote command runs; then it waits
			// quietly (a command that keeps writing, such as yes, would
			// leave ssh blocked on a full pipe nobody reads once the test
			// stops reading: that is the test's doing, not the script's).
			cmd := exec.CommandContext(ctx, "bash", script, "echo y; exec sleep 600")
			cmd.Env = f.clientEnv(tmp)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.WaitDelay = 5 * time.Second // ssh may outlive a stuck script
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The remote command runs once it has said so.
			rd := bufio.NewReader(out)
			line, _ := rd.ReadString('\n')
			go func() { _, _ = io.Copy(io.Discard, rd) }()
			if line != "y\n" {
				_ = cmd.Wait()
				t.Fatalf("the command did not start: %q, stderr %q", line, errb.String())
			}
			if len(scriptDirs(t, tmp)) != 1 {
				t.Errorf("while connected, want the script's one directory in %s", tmp)
			}
			pid := cmd.Process.Pid
			if c.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, c.sig); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = cmd.Wait()
			if ctx.Err() != nil {
				t.Fatalf("the script did not end after %s", c.sig)
			}
			if err == nil {
				t.Errorf("the script exited 0 after %s", c.sig)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the script took %s to end after %s", d, c.sig)
			}
			if strings.Contains(errb.String(), "unbound variable") {
				t.Errorf("stderr: %s", errb.String())
			}
			if left := scriptDirs(t, tmp); len(left) != 0 {
				t.Errorf("after %s the script left %v", c.sig, left)
			}
		})
	}
}

// TestSSHScriptArgs: the script's arguments are a command line for the
// remote shell, joined with spaces, as ssh's are.
func TestSSHScriptArgs(t *testing.T) {
	f := newHostSSHFixture(t)
	id, script := startHostSSH(t, f)
	r := f.run("bash", script, "printenv", "FCI_BUILD_DIR")
	dir := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || dir == "" {
		t.Fatalf("printenv FCI_BUILD_DIR: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cd $FCI_BUILD_DIR && cat build/out.txt"}, "artifact\n"},
		{[]string{"cd", "$FCI_BUILD_DIR", "&&", "pwd"}, dir + "\n"},
		{[]string{"printenv", "FCI_BUILD_ID"}, fmt.Sprintf("%d\n", id)},
		{[]string{"echo 'a  b' | wc -w"}, "2\n"},
	} {
		if r := f.run("bash", append([]string{script}, c.args...)...); r.Code != 0 || r.Stdout != c.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", c.args, r.Code, r.Stdout, r.Stderr, c.want)
		}
	}
	// The same as ssh itself.
	cfg := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, cfg)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	alias := fmt.Sprintf("build-%d", id)
	a := f.run("ssh", "-F", filepath.Join(cfg, "config"), alias, "cd", "$FCI_BUILD_DIR", "&&", "pwd")
	b := f.run("bash", script, "cd", "$FCI_BUILD_DIR", "&&", "pwd")
	if a != b {
		t.Errorf("ssh %+v, the script %+v", a, b)
	}

	// Copies: paths are relative to the clone, where sessions start, as
	// the docs show (build-12:build/).
	conf := filepath.Join(cfg, "config")
	local := t.TempDir()
	if r := f.run("scp", "-F", conf, alias+":build/out.txt", filepath.Join(local, "scp.txt")); r.Code != 0 {
		t.Errorf("scp: %s", r.Stderr)
	} else if got, _ := os.ReadFile(filepath.Join(local, "scp.txt")); string(got) != "artifact\n" {
		t.Errorf("scp copied %q", got)
	}
	if _, err := exec.LookPath("rsync"); err == nil {
		if r := f.run("rsync", "-e", "ssh -F "+conf, "-a", alias+":build/", local+"/rsync/"); r.Code != 0 {
			t.Errorf("rsync: %s", r.Stderr)
		} else if got, _ := os.ReadFile(filepath.Join(local, "rsync", "out.txt")); string(got) != "artifact\n" {
			t.Errorf("rsync copied %q", got)
		}
	}
}

// TestSSHAgentForwarding: -A forwards the user's agent, and nothing else
// does; the agent's keys are never offered to authenticate.
func TestSSHAgentForwarding(t *testing.T) {
	for _, bin := range []string{"ssh-agent", "ssh-add", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s", bin)
		}
	}
	f := newHostSSHFixture(t)
	id, script := startHostSSH(t, f)
	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	cfg := filepath.Join(dir, "config")
	alias := fmt.Sprintf("build-%d", id)

	// The user's agent, with a key of its own.
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "agent.sock")
	out, err := exec.Command("ssh-agent", "-s", "-a", sock).Output()
	if err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	m := regexp.MustCompile(`SSH_AGENT_PID=(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ssh-agent said %q", out)
	}
	agentPID, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { _ = syscall.Kill(agentPID, syscall.SIGTERM) })
	key := filepath.Join(tmp, "id_agent")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agent-only-key", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	add := exec.Command("ssh-add", key)
	add.Env = []string{"SSH_AUTH_SOCK=" + sock, "PATH=" + os.Getenv("PATH")}
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v %s", err, out)
	}

	run := func(args ...string) harness.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = f.clientEnv("", "SSH_AUTH_SOCK="+sock)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		r := harness.Result{Stdout: o.String(), Stderr: e.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.Code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return r
	}
	if r := run("ssh", "-F", cfg, "-A", alias, "ssh-add -l"); r.Code != 0 || !strings.Contains(r.Stdout, "agent-only-key") {
		t.Errorf("ssh -A: ssh-add -l: %d %q %q, want the agent's key", r.Code, r.Stdout, r.Stderr)
	}
	if r := run("ssh", "-F", cfg, "-o", "ForwardAgent=yes", alias, "ssh-add -l"); r.Code != 0 || !strings.Contains(r.Stdout, "agent-only-key") {
		t.Errorf("ssh -o ForwardAgent=yes: ssh-add -l: %d %q %q, want the agent's key", r.Code, r.Stdout, r.Stderr)
	}
	// Not by default, neither with ssh nor with the script.
	for _, args := range [][]string{{"ssh", "-F", cfg, alias, "ssh-add -l"}, {"bash", script, "ssh-add -l"}} {
		if r := run(args...); r.Code != 2 || strings.Contains(r.Stdout, "agent-only-key") || r.Stderr == "" {
			t.Errorf("%v: %d %q %q, want no agent (exit 2)", args, r.Code, r.Stdout, r.Stderr)
		}
	}
	// Only the build's key is offered, to the builder and to the gateway.
	r := run("ssh", "-v", "-F", cfg, "-A", "-o", "ProxyJump=none", "-o", "User="+alias, "-W", alias+":22", "hangar-gateway-"+alias)
	r2 := run("ssh", "-v", "-F", cfg, "-A", alias, "true")
	for _, x := range []harness.Result{r, r2} {
		if strings.Contains(x.Stderr, "agent-only-key") || !strings.Contains(x.Stderr, "Offering public key") {
			t.Errorf("the client offered the agent's key, or none:\n%s", x.Stderr)
		}
	}
}

// TestSSHToldWhyBeforeClose: a session open when the build is canceled is
// told why in its terminal before the connection closes.
func TestSSHToldWhyBeforeClose(t *testing.T) {
	f := newHostSSHFixture(t)
	id, _ := startHostSSH(t, f)
	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", id, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A login session on a pty (-tt: no terminal here).
	cmd := exec.CommandContext(ctx, "ssh", "-F", filepath.Join(dir, "config"), "-tt", fmt.Sprintf("build-%d", id))
	cmd.Env = f.clientEnv("")
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	_, _ = io.WriteString(stdin, "echo ready-$((6*7))\n")
	if !out.waitFor("ready-42", 30*time.Second, done) {
		t.Fatalf("the shell did not answer:\n%s", out.String())
	}
	// A process a command left running outlives the command, not the build.
	conf := filepath.Join(dir, "config")
	alias := fmt.Sprintf("build-%d", id)
	r := f.run("ssh", "-F", conf, alias, "nohup sleep 3600 >/dev/null 2>&1 & echo $!")
	pid := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || pid == "" {
		t.Fatalf("background command: %+v", r)
	}
	if r := f.run("ssh", "-F", conf, alias, "kill -0 "+pid); r.Code != 0 {
		t.Errorf("the background process ended with its command: %+v", r)
	}

	f.hangar(fmt.Sprintf("build cancel %d", id))
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("the session did not end after cancel:\n%s", out.String())
	}
	got := out.String()
	if !strings.Contains(got, "*** Hangar:") || !strings.Contains(got, "canceled") {
		t.Errorf("the session was closed without a word of why:\n%s", got)
	}
	f.wait(id, time.Minute)
	// The host driver's machine is a process of ours: its pids are ours.
	if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Errorf("the background process %s outlived the build: %s", pid, stat)
	}
}

// syncBuf is a buffer a command writes and a test reads.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at each write
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the buffer holds want, the command ends (done) or
// within passes.
func (s *syncBuf) waitFor(want string, within time.Duration, done <-chan error) bool {
	timeout := time.After(within)
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), want) {
			s.mu.Unlock()
			return true
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case err := <-done:
			return strings.Contains(s.String(), want) && err == nil
		case <-timeout:
			return false
		}
	}
}
