package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/sshca"
)

const sshWorkflows = `
workflows:
  hold:
    max_build_duration: 10
    scripts:
      - name: Export
        script: echo "E2E_EXPORTED=exported-by-step" >> "$CM_ENV"
      - name: Serve a port
        script: |
          (while true; do echo hello-from-port | nc -l 127.0.0.1 8000 >/dev/null 2>&1 || sleep 0.2; done) >/dev/null 2>&1 &
          echo serving
      - name: Hold
        script: sleep 300
  quick:
    max_build_duration: 10
    scripts:
      - name: Quick
        script: echo "E2E_EXPORTED=quick-export" >> "$CM_ENV"
  settle:
    max_build_duration: 10
    scripts:
      - name: Settle
        script: sleep 5
  short:
    max_build_duration: "4s"
    scripts:
      - echo short
  debug:
    max_build_duration: 10
    scripts:
      - name: Export
        script: |
          echo "E2E_STEP_VAR=from-step-one" >> "$CM_ENV"
          mkdir -p "$CM_BUILD_DIR/sub"
      - name: Breaks
        working_directory: sub
        script: |
          echo "var=$E2E_STEP_VAR dir=$(basename "$PWD")"
          exit 3
`

// sshFixture is a sandbox server with SSH and an app with sshWorkflows.
type sshFixture struct {
	*fixture
	home string // a clean HOME without ~/.ssh for the OpenSSH client
}

func newSSHFixture(t *testing.T, bridge, subnet, window string) *sshFixture {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	for _, bin := range []string{"runc", "ssh", "scp", "nc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (make deps installs it)", bin)
		}
	}
	s := harness.StartServer(t, harness.Options{Driver: "sandbox", Args: []string{
		"--sandbox-bridge", bridge, "--sandbox-subnet", subnet,
		"--ssh", "127.0.0.1:0", "--ssh-after-steps", window, "--ssh-handshake-timeout", "2s",
	}})
	f := &fixture{t: t, s: s, run: marker(), driver: "sandbox", bridge: bridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": sshWorkflows})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	return &sshFixture{fixture: f, home: t.TempDir()}
}

// waitSSH waits until build id's SSH access is ready.
func (f *sshFixture) waitSSH(id int64) *build.Build {
	f.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b := f.show(id)
		if b.SSH.State == build.SSHReady || b.SSH.State == build.SSHConnected {
			return b
		}
		if b.Status.Done() || time.Now().After(deadline) {
			f.t.Fatalf("build %d: SSH never ready (%s, ssh %s)", id, b.Status, b.SSH.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// script fetches build id's bash script into a file.
func (f *sshFixture) script(id int64) string {
	f.t.Helper()
	r := f.hangar(fmt.Sprintf("build ssh-script %d", id))
	if r.Code != 0 {
		f.t.Fatalf("ssh-script: %s", r.Stderr)
	}
	p := filepath.Join(f.t.TempDir(), "connect.sh")
	if err := os.WriteFile(p, []byte(r.Stdout), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// run runs a command with the clean HOME and no terminal.
func (f *sshFixture) run(name string, args ...string) harness.Result {
	f.t.Helper()
	return f.runIn("", name, args...)
}

func TestSSH(t *testing.T) {
	f := newSSHFixture(t, "hgssh0", "10.213.96.0/24", "10m")
	b := f.start("--workflow hold --ssh")
	if !b.SSH.Enabled || b.SSH.State != build.SSHPending || !strings.HasPrefix(b.SSH.Command, "curl -fsSL '") {
		t.Fatalf("ssh in build JSON: %+v", b.SSH)
	}
	waitLog(t, f.fixture, b.ID, "serving")
	f.waitSSH(b.ID)
	script := f.script(b.ID)
	if strings.Contains(script, "StrictHostKeyChecking no") {
		t.Fatal("the script turns host key checking off")
	}

	t.Run("commands", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
			code int
		}{
			{[]string{"printenv", "FCI_BUILD_DIR"}, "/home/builder/clone\n", 0},
			{[]string{"printenv", "E2E_EXPORTED"}, "exported-by-step\n", 0},
			{[]string{"sudo", "-n", "true"}, "", 0},
			{[]string{"whoami"}, "builder\n", 0},
			{[]string{"exit 7"}, "", 7},
			{[]string{"cd $FCI_BUILD_DIR && git rev-parse --is-inside-work-tree"}, "true\n", 0},
		} {
			r := f.run("bash", append([]string{script}, c.args...)...)
			if r.Code != c.code || (c.want != "" && r.Stdout != c.want) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d %q", c.args, r.Code, r.Stdout, r.Stderr, c.code, c.want)
			}
		}
		r := f.run("bash", script, "ps", "-eo", "args")
		if !strings.Contains(r.Stdout, "sleep 300") {
			t.Errorf("ps does not show the running step:\n%s", r.Stdout)
		}
		// hangar ssh: the same through the CLI, like ssh's own arguments.
		id := strconv.FormatInt(b.ID, 10)
		env := []string{"HOME=" + f.home, "HANGAR_TOKEN=" + f.s.Token}
		if r := f.s.HangarEnv(env, "ssh", id, "--", "printenv", "FCI_BUILD_DIR"); r.Code != 0 || r.Stdout != "/home/builder/clone\n" {
			t.Errorf("hangar ssh printenv: %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		if r := f.s.HangarEnv(env, "ssh", id, "--", "exit 7"); r.Code != 7 {
			t.Errorf("hangar ssh 'exit 7': %d %q", r.Code, r.Stderr)
		}
		// Without an ID, in a checkout of the app's repository: the newest
		// SSH build of its branch.
		clone := filepath.Join(t.TempDir(), "clone")
		if out, err := exec.Command("git", "clone", "-q", f.repo.Path, clone).CombinedOutput(); err != nil {
			t.Fatalf("git clone: %v %s", err, out)
		}
		if r := f.s.HangarIn(clone, env, "ssh", "--", "printenv", "FCI_BUILD_DIR"); r.Code != 0 || r.Stdout != "/home/builder/clone\n" || !strings.Contains(r.Stderr, fmt.Sprintf("(build %d), branch main", b.ID)) {
			t.Errorf("hangar ssh without an ID: %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		if r := f.s.HangarIn(t.TempDir(), env, "ssh"); r.Code == 0 || !strings.Contains(r.Stderr, "not a git checkout") {
			t.Errorf("hangar ssh without an ID outside a checkout: %d %q", r.Code, r.Stderr)
		}
	})

	dir := filepath.Join(t.TempDir(), "cfg")
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", b.ID, dir)); r.Code != 0 {
		t.Fatalf("ssh-config: %s", r.Stderr)
	}
	cfg := filepath.Join(dir, "config")
	alias := fmt.Sprintf("build-%d", b.ID)

	t.Run("scp both ways", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "up.bin")
		data := make([]byte, 3<<20)
		_, _ = rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if r := f.run("scp", "-F", cfg, src, alias+":/tmp/up.bin"); r.Code != 0 {
			t.Fatalf("scp up: %s", r.Stderr)
		}
		back := filepath.Join(t.TempDir(), "down.bin")
		if r := f.run("scp", "-F", cfg, alias+":/tmp/up.bin", back); r.Code != 0 {
			t.Fatalf("scp down: %s", r.Stderr)
		}
		got, _ := os.ReadFile(back)
		if !bytes.Equal(got, data) {
			t.Errorf("the file came back different (%d bytes)", len(got))
		}
		if r := f.run("ssh", "-F", cfg, alias, "stat -c %U /tmp/up.bin"); strings.TrimSpace(r.Stdout) != "builder" {
			t.Errorf("uploaded file owner: %q %s", r.Stdout, r.Stderr)
		}
		batch := filepath.Join(t.TempDir(), "batch")
		sftpBack := filepath.Join(t.TempDir(), "sftp.bin")
		_ = os.WriteFile(batch, []byte("cd /tmp\nls\nget up.bin "+sftpBack+"\n"), 0o644)
		if r := f.run("sftp", "-F", cfg, "-b", batch, alias); r.Code != 0 || !strings.Contains(r.Stdout, "up.bin") {
			t.Errorf("sftp: %d %s %s", r.Code, r.Stdout, r.Stderr)
		}
		if got, _ := os.ReadFile(sftpBack); !bytes.Equal(got, data) {
			t.Errorf("sftp get returned %d bytes, want the %d uploaded", len(got), len(data))
		}
	})

	t.Run("port forwarding", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		fwd := exec.CommandContext(ctx, "ssh", "-F", cfg, "-N", "-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:8000", port), alias)
		fwd.Env = []string{"HOME=" + f.home, "PATH=" + os.Getenv("PATH")}
		var fwdErr bytes.Buffer
		fwd.Stderr = &fwdErr
		if err := fwd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = fwd.Wait() }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				got, _ := io.ReadAll(c)
				c.Close()
				if strings.Contains(string(got), "hello-from-port") {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("ssh -L never reached the step's port (last: %v); ssh said: %s", err, fwdErr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("commands are not logins", func(t *testing.T) {
		if nb := f.show(b.ID); nb.Status != build.Building || nb.SSH.State == build.SSHClosed {
			t.Fatalf("after commands and copies the build is %s, ssh %s", nb.Status, nb.SSH.State)
		}
	})

	t.Run("credentials are per build", func(t *testing.T) {
		other := f.start("--workflow hold --ssh")
		f.waitSSH(other.ID)
		otherAlias := fmt.Sprintf("build-%d", other.ID)
		// A's credential, asking the gateway for B's machine.
		r := f.run("ssh", "-F", cfg, "-o", "ConnectTimeout=10", "-W", otherAlias+":22", "hangar-gateway-"+alias)
		if r.Code == 0 {
			t.Errorf("build A's credential reached build B")
		}
		// A's credential, logging in to the gateway as B.
		r = f.run("ssh", "-F", cfg, "-o", "User="+otherAlias, "-W", otherAlias+":22", "hangar-gateway-"+alias)
		if r.Code == 0 {
			t.Errorf("build A's credential logged in as build B")
		}
		f.hangar(fmt.Sprintf("build cancel %d", other.ID))
		f.wait(other.ID, time.Minute)
	})

	t.Run("strangers are refused", func(t *testing.T) {
		addr := gatewayAddr(t, cfg)
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		stranger, _ := ssh.NewSignerFromKey(priv)
		otherCA, err := sshca.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
		if err != nil {
			t.Fatal(err)
		}
		cred, err := otherCA.Issue(alias, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
		certSigner, _ := ssh.NewCertSigner(cred.Certificate, key)
		for name, signer := range map[string]ssh.Signer{"key of no build": stranger, "certificate of another CA": certSigner} {
			c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: alias, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
			if err == nil {
				c.Close()
				t.Errorf("%s was admitted", name)
			}
		}
		// Gateway refuses sessions: it only forwards.
		r := f.run("ssh", "-F", cfg, "hangar-gateway-"+alias, "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, "only forwards") {
			t.Errorf("a shell on the gateway: %d %s", r.Code, r.Stderr)
		}
	})

	t.Run("403 without access to the app", func(t *testing.T) {
		if r := f.s.Hangar("app", "add", "other", "--repo", f.repo.Path); r.Code != 0 {
			t.Fatal(r.Stderr)
		}
		tok := strings.TrimSpace(f.hangar("token create outsider --app other").Stdout)
		r := f.s.HangarEnv([]string{"HANGAR_TOKEN=" + tok}, "build", "ssh-script", strconv.FormatInt(b.ID, 10))
		if r.Code == 0 || !strings.Contains(r.Stderr, "no access") {
			t.Errorf("outsider fetched the script: %d %s", r.Code, r.Stderr)
		}
		if _, err := f.s.ClientWith(tok).SSHScript(t.Context(), b.ID, ""); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("status %d, want 403 (%v)", api.StatusOf(err), err)
		}
	})

	t.Run("events", func(t *testing.T) {
		var evs []build.Event
		r := f.hangar(fmt.Sprintf("build events %d --json", b.ID))
		if err := json.Unmarshal([]byte(r.Stdout), &evs); err != nil {
			t.Fatal(err, r.Stderr)
		}
		kinds := map[string]int{}
		for _, e := range evs {
			kinds[e.Kind]++
		}
		for _, k := range []string{"ssh_script", "ssh_connect", "ssh_disconnect", "ssh_channel", "ssh_tunnel_up"} {
			if kinds[k] == 0 {
				t.Errorf("no %s event in %v", k, kinds)
			}
		}
	})

	// Cancel ends access: the script fails with a clear message.
	f.hangar(fmt.Sprintf("build cancel %d", b.ID))
	f.wait(b.ID, time.Minute)
	r := f.run("bash", script, "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprintf("hangar: SSH access to build %d ended: the build was canceled", b.ID)) {
		t.Errorf("script after the build: %d %q", r.Code, r.Stderr)
	}
	if r := f.hangar(fmt.Sprintf("build ssh-script %d", b.ID)); r.Code == 0 || !strings.Contains(r.Stderr, "has ended") {
		t.Errorf("ssh-script after the build: %d %q", r.Code, r.Stderr)
	}
}

// gatewayAddr reads the gateway's address from an ssh_config.
func gatewayAddr(t *testing.T, cfg string) string {
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host := regexp.MustCompile(`(?m)^\s*HostName (\S+)`).FindStringSubmatch(string(data))
	port := regexp.MustCompile(`(?m)^\s*Port (\d+)`).FindStringSubmatch(string(data))
	return net.JoinHostPort(host[1], port[1])
}

func TestSSHInteractive(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("needs tmux (make deps installs it)")
	}
	f := newSSHFixture(t, "hgssh1", "10.213.95.0/24", "10m")
	b := f.start("--workflow quick --ssh")
	f.waitSSH(b.ID)
	// Steps done, the machine waits for the user.
	deadline := time.Now().Add(time.Minute)
	for f.show(b.ID).Steps[2].Status != build.StepSuccess {
		if time.Now().After(deadline) {
			t.Fatal("the quick step never finished")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The steps are done; the machine waits for its user, and says so.
	if nb := f.show(b.ID); nb.Status != build.WaitingForSSH || nb.SSH.ExpiresAt == nil {
		t.Fatalf("after the steps: %s, ssh %+v", nb.Status, nb.SSH)
	}
	if r := f.hangar(fmt.Sprintf("build show %d", b.ID)); !strings.Contains(r.Stdout, "Status:   waiting for SSH (") || !strings.Contains(r.Stdout, "Connect:  hangar ssh "+strconv.FormatInt(b.ID, 10)) {
		t.Errorf("build show while waiting for SSH: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// More time: never past max_build_duration (this window reaches it
	// already: the request is recorded and the log says so).
	if r := f.hangar(fmt.Sprintf("build ssh-extend %d --by 1m", b.ID)); r.Code != 0 || !strings.Contains(r.Stdout, "SSH:      ready, until") {
		t.Errorf("ssh-extend --by 1m: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := f.hangar(fmt.Sprintf("build ssh-extend %d --by 2h", b.ID)); r.Code != 0 {
		t.Errorf("ssh-extend --by 2h: %d %s", r.Code, r.Stderr)
	}
	if xb := f.show(b.ID); xb.SSH.ExpiresAt.After(xb.StartedAt.Add(10 * time.Minute)) {
		t.Errorf("extended past max_build_duration: %s, started %s", xb.SSH.ExpiresAt, xb.StartedAt)
	}
	evs := f.hangar(fmt.Sprintf("build events %d", b.ID)).Stdout
	if strings.Count(evs, "ssh_extended") != 2 {
		t.Errorf("events: want two ssh_extended:\n%s", evs)
	}
	oneLiner := f.show(b.ID).SSH.Command
	session := "hangar-e2e-" + marker()
	tmux := func(args ...string) string {
		cmd := exec.Command("tmux", append([]string{"-L", session}, args...)...)
		cmd.Env = []string{"HOME=" + f.home, "PATH=" + os.Getenv("PATH"), "TERM=xterm"}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	tmux("new-session", "-d", "-x", "120", "-y", "40", "bash --noprofile --norc")
	defer tmux("kill-server")
	screenHas := func(want string, within time.Duration) bool {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if strings.Contains(tmux("capture-pane", "-p", "-S", "-200"), want) {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("screen:\n%s", tmux("capture-pane", "-p", "-S", "-200"))
		return false
	}
	tmux("send-keys", oneLiner, "Enter")
	if !screenHas("builder@build-", 30*time.Second) {
		t.Fatal("the one-liner gave no prompt")
	}
	tmux("send-keys", "echo dir=$FCI_BUILD_DIR exported=$E2E_EXPORTED", "Enter")
	if !screenHas("dir=/home/builder/clone exported=quick-export", 10*time.Second) {
		t.Error("echo $FCI_BUILD_DIR did not answer")
	}
	start := time.Now()
	tmux("send-keys", "exit", "Enter")
	nb, _ := f.wait(b.ID, 30*time.Second)
	if nb.Status != build.Finished || nb.SSH.State != build.SSHClosed || !strings.Contains(nb.SSH.ClosedReason, "logged out") {
		t.Errorf("after exit: %s, ssh %+v", nb.Status, nb.SSH)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the build took %s to finish after logout", d)
	}
}

func TestSSHWindow(t *testing.T) {
	f := newSSHFixture(t, "hgssh2", "10.213.94.0/24", "4s")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		// Nobody connects: the machine waits its window after the steps.
		b := f.start("--workflow quick --ssh")
		nb, logs := f.wait(b.ID, time.Minute)
		if nb.Status != build.Finished || nb.SSH.State != build.SSHClosed || !strings.Contains(nb.SSH.ExpiresBecause, "after the steps") {
			t.Errorf("window build: %s %+v\n%s", nb.Status, nb.SSH, logs)
		}
		steps := nb.Steps[len(nb.Steps)-1].FinishedAt
		if d := nb.FinishedAt.Sub(*steps); d < 3*time.Second || d > 15*time.Second {
			t.Errorf("the build ended %s after its steps, want about the 4s window", d)
		}
	}()
	go func() {
		defer wg.Done()
		// max_build_duration (4s) is shorter than steps + window: it wins.
		b := f.start("--workflow short --ssh")
		nb, logs := f.wait(b.ID, time.Minute)
		if nb.Status != build.Finished || nb.SSH.ExpiresBecause != "max_build_duration" {
			t.Errorf("short build: %s %+v\n%s", nb.Status, nb.SSH, logs)
		}
		if d := nb.FinishedAt.Sub(*nb.StartedAt); d > 5*time.Second {
			t.Errorf("the build lasted %s, past its 4s max_build_duration", d)
		}
	}()
	wg.Wait()
	// Webhook-style triggers cannot have SSH.
	_, err := f.s.Client().StartBuild(t.Context(), api.StartRequest{App: "demo", Workflow: "quick", SSH: true, Trigger: "webhook"})
	if api.StatusOf(err)/100 != 4 || !strings.Contains(err.Error(), "manually triggered") {
		t.Errorf("ssh with a webhook trigger: %d %v", api.StatusOf(err), err)
	}
}
