package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// Test network of sandbox servers: apart from `make run`'s default.
const (
	testBridge = "hgtest0"
	testSubnet = "10.213.97.0/24"
	testPrefix = "10.213.97."
)

// workflowFile is the repository's codemagic.yaml; {{run}} and {{data}}
// are replaced by the run's marker and the server's data dir.
const workflowFile = `
definitions:
  vars: &vars
    E2E_RUN: "{{run}}"
workflows:
  pass:
    name: Passing workflow
    environment:
      vars:
        <<: *vars
        GREETING: hello e2e
    publishing:
      email:
        recipients: [nobody@example.invalid]
    scripts:
      - name: Greet
        script: echo "greeting=$GREETING number=$BUILD_NUMBER ci=$CI dir=$FCI_BUILD_DIR cm=$CM_BUILD_DIR"
      - name: Check the clone
        script: |
          test "$PWD" = "$FCI_BUILD_DIR"
          cat marker.txt
          echo "commit=$CM_COMMIT branch=$CM_BRANCH"
      - ls "$HOME/.hangar/steps"
  fail:
    environment:
      vars: *vars
    scripts:
      - name: Before
        script: echo before-failure
      - name: Broken
        script: |
          echo about-to-fail
          exit 3
      - name: After
        script: echo SHOULD-NOT-RUN
  many:
    environment:
      vars: *vars
    scripts:
      - name: Many lines
        script: seq 1 25000 | sed 's/^/n=/'
  background:
    environment:
      vars: *vars
    scripts:
      - name: Leave a process behind
        script: |
          (sleep 300; echo NEVER) &
          seq 1 5000 | sed 's/^/bg=/'
      - name: Next
        script: echo next-step
  flood:
    environment:
      vars: *vars
    scripts:
      - name: Flood the builder's own output
        script: |
          # Write 200 MB to the builder's standard error: the machine's init
          # (PID 1, whose stderr is the builder's) in a sandbox, the step's
          # parent on the host.
          pid=$PPID; [ "$(cat /proc/1/comm)" = hangar ] && pid=1
          as_root=; [ "$(id -u)" = 0 ] || as_root="sudo -n"
          $as_root sh -c "yes 'flooding the builder' | head -c 200000000 > /proc/$pid/fd/2"
          echo flood-done
  env:
    environment:
      vars: *vars
    scripts:
      - name: Export
        script: echo "E2E_EXPORTED=from-step-one" >> "$CM_ENV"
      - name: Read
        script: echo "exported=$E2E_EXPORTED"
  timeout:
    max_build_duration: "3s"
    environment:
      vars: *vars
    scripts:
      - name: Sleep
        script: echo sleeping; sleep 120
  cancel:
    environment:
      vars: *vars
    scripts:
      - name: Wait
        script: echo waiting; sleep 120
  sudo:
    environment:
      vars: *vars
    scripts:
      - name: Write to /usr
        script: |
          sudo -n touch /usr/local/bin/hangar-e2e-{{run}}
          ls /usr/local/bin/hangar-e2e-{{run}}
          echo "whoami=$(whoami) sudo=$(sudo -n whoami)"
      - name: Hangar's data is out of reach
        script: |
          if sudo -n cat {{data}}/admin-token; then echo LEAKED; exit 1; fi
          if sudo -n ls {{data}}/hangar.db; then echo LEAKED; exit 1; fi
          for p in /var/log/journal /var/lib/postgresql /etc/ssh/ssh_host_ed25519_key; do
            if sudo -n test -e "$p"; then echo "LEAKED $p"; exit 1; fi
          done
          echo data-hidden
  seccomp:
    environment:
      vars: *vars
    scripts:
      - name: Syscall filter
        script: |
          echo "seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status)" \
            "sudo-seccomp=$(sudo -n awk '/^Seccomp:/ {print $2}' /proc/self/status)"
          if unshare -Urn true; then echo "USERNS-CREATED"; exit 1; fi
          if sudo -n unshare -m true; then echo "MOUNTNS-CREATED"; exit 1; fi
          sudo -n true && echo sudo-works
  listen:
    max_build_duration: "90s"
    environment:
      vars: *vars
    scripts:
      - name: Serve
        script: |
          nc -lk 9000 >/dev/null 2>&1 &
          for i in $(seq 50); do nc -z -w1 127.0.0.1 9000 && break; sleep 0.1; done
          me=$(hostname -I | tr -d ' ')
          nc -z -w2 "$me" 9000 && echo "self-reachable ip=$me"
          sleep 80
  probe:
    environment:
      vars: *vars
    scripts:
      - name: Probe the other machines
        script: |
          me=$(hostname -I | tr -d ' ')
          echo "probing from $me"
          for i in $(seq 2 40); do
            ip={{prefix}}$i
            [ "$ip" = "$me" ] && continue
            (nc -z -w2 "$ip" 9000 && echo "REACHED $ip") &
          done
          wait
          echo probe-done
`

func marker() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// fixture is one server with an app whose repository has workflowFile.
type fixture struct {
	t      *testing.T
	s      *harness.Server
	repo   *harness.Repo
	run    string
	driver string
	bridge string // sandbox: the server's bridge
}

func newFixture(t *testing.T, driver string, serverArgs ...string) *fixture {
	args := driverArgs(t, driver, serverArgs...)
	s := harness.StartServer(t, harness.Options{Driver: driver, Args: args})
	f := &fixture{t: t, s: s, run: marker(), driver: driver, bridge: testBridge}
	yaml := strings.NewReplacer("{{run}}", f.run, "{{data}}", s.Data, "{{prefix}}", testPrefix).Replace(workflowFile)
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": yaml, "marker.txt": "marker-" + f.run + "\n"})
	f.repo.Commit("broken", map[string]string{"codemagic.yaml": "workflows:\n  pass:\n    scripts:\n      - name: ok\n        script: echo ok\n    max_build_duration: 500\n"})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	return f
}

// driverArgs are args with the test bridge and subnet for the sandbox
// driver, which it skips the test without (root, runc).
func driverArgs(t *testing.T, driver string, args ...string) []string {
	if driver != "sandbox" {
		return args
	}
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the sandbox driver needs runc (apt-get install runc)")
	}
	return append(args, "--sandbox-bridge", testBridge, "--sandbox-subnet", testSubnet)
}

func (f *fixture) hangar(args string) harness.Result {
	return f.s.Hangar(strings.Fields(args)...)
}

// start starts a build and returns it as created.
func (f *fixture) start(args string) *build.Build {
	f.t.Helper()
	r := f.hangar("build start demo --json " + args)
	if r.Code != 0 {
		f.t.Fatalf("build start %s: exit %d: %s", args, r.Code, r.Stderr)
	}
	var b build.Build
	if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
		f.t.Fatalf("build start %s: %v: %s", args, err, r.Stdout)
	}
	return &b
}

func (f *fixture) show(id int64) *build.Build {
	f.t.Helper()
	r := f.hangar(fmt.Sprintf("build show %d --json", id))
	if r.Code != 0 {
		f.t.Fatalf("build show %d: %s", id, r.Stderr)
	}
	var b build.Build
	if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
		f.t.Fatal(err)
	}
	return &b
}

// wait waits for build id to end, then checks that nothing of its machine
// is left, and returns it with its log.
func (f *fixture) wait(id int64, within time.Duration) (*build.Build, string) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for {
		b := f.show(id)
		if b.Status.Done() {
			logs := f.hangar(fmt.Sprintf("build logs %d", id))
			f.checkGone(id)
			return b, logs.Stdout
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("build %d still %s after %s", id, b.Status, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkGone asserts that no process, mount, netns, veth or directory of
// build id is left.
func (f *fixture) checkGone(id int64) {
	f.t.Helper()
	name := fmt.Sprintf("build-%d", id)
	// The runner destroys the machine before it records the end; allow a
	// moment for process reaping.
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := f.leftovers(id, name)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Errorf("build %d left behind: %s", id, strings.Join(left, "; "))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) leftovers(id int64, name string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		vars := bytes.Split(env, []byte{0})
		var run, bid, hb bool
		for _, v := range vars {
			s := string(v)
			run = run || s == "E2E_RUN="+f.run
			bid = bid || s == "FCI_BUILD_ID="+strconv.FormatInt(id, 10)
			hb = hb || s == "HANGAR_BUILD="+name
		}
		if (run && bid || hb) && f.ownsProcess(p, name) {
			cmd, _ := os.ReadFile(strings.TrimSuffix(p, "environ") + "cmdline")
			left = append(left, fmt.Sprintf("process %s (%s)", filepath.Base(filepath.Dir(p)), strings.ReplaceAll(string(cmd), "\x00", " ")))
		}
	}
	if _, err := os.Stat(filepath.Join(f.s.Data, "machines", name)); err == nil {
		left = append(left, "directory machines/"+name)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(filepath.Join(f.s.Data, "machines", name)+"/")) {
		left = append(left, "mounts under machines/"+name)
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		if b, err := os.ReadFile(l); err == nil && bytes.Contains(b, []byte(filepath.Join(f.s.Data, "machines", name)+"/")) {
			left = append(left, "loop device "+strings.Split(l, "/")[3])
		}
	}
	if f.driver == "sandbox" {
		// Host-global names of a sandbox machine include the driver's bridge.
		id := "hangar-" + f.bridge + "_" + name
		if _, err := os.Stat("/run/netns/" + id); err == nil {
			left = append(left, "netns "+id)
		}
		sum := sha256.Sum256([]byte(id))
		veth := "hgr" + hex.EncodeToString(sum[:6])
		if _, err := os.Stat("/sys/class/net/" + veth); err == nil {
			left = append(left, "veth "+veth)
		}
		if _, err := os.Stat(filepath.Join(f.s.Data, "machines", ".runc", id)); err == nil {
			left = append(left, "runc container "+id)
		}
	}
	return left
}

// ownsProcess tells processes of this server's machines from those of
// another server (every server numbers its builds from 1).
func (f *fixture) ownsProcess(environ, name string) bool {
	dir := strings.TrimSuffix(environ, "environ")
	if f.driver == "host" {
		cwd, err := os.Readlink(dir + "cwd")
		return err == nil && strings.HasPrefix(cwd, f.s.Data)
	}
	cg, err := os.ReadFile(dir + "cgroup")
	return err == nil && strings.Contains(string(cg), "/hangar-"+f.bridge+"/"+name)
}

func stepStatuses(b *build.Build) map[string]build.StepStatus {
	m := map[string]build.StepStatus{}
	for _, s := range b.Steps {
		m[s.Name] = s.Status
	}
	return m
}

func TestBuildsSandbox(t *testing.T) { testBuilds(t, "sandbox") }

func TestBuildsHost(t *testing.T) { testBuilds(t, "host") }

func testBuilds(t *testing.T, driver string) {
	f := newFixture(t, driver)

	t.Run("pass", func(t *testing.T) {
		t.Parallel()
		b := f.start("--workflow pass")
		if b.Trigger != build.Manual || b.Workflow != "pass" || b.Branch != "main" || len(b.Commit) != 40 {
			t.Errorf("created build: %+v", b)
		}
		b, logs := f.wait(b.ID, 2*time.Minute)
		if b.Status != build.Finished {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		want := []string{
			"greeting=hello e2e number=",
			"ci=true",
			"marker-" + f.run,
			"commit=" + b.Commit + " branch=main",
			"01-greet.sh",
			"Email: NOT sent to nobody@example.invalid",
		}
		if driver == "sandbox" {
			want = append(want, "dir=/home/builder/clone cm=/home/builder/clone")
		}
		for _, w := range want {
			if !strings.Contains(logs, w) {
				t.Errorf("log lacks %q:\n%s", w, logs)
			}
		}
		for _, s := range b.Steps {
			if s.Status != build.StepSuccess || s.StartedAt == nil || s.FinishedAt == nil || s.DurationMS == nil {
				t.Errorf("step %q: %+v", s.Name, s)
			}
		}
		if len(b.Steps) != 5 || b.StartedAt == nil || b.FinishedAt == nil {
			t.Errorf("build: %+v", b)
		}
		resp, err := http.Get(f.s.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(metrics), `hangar_builds_ended_total{status="finished"}`) {
			t.Errorf("/metrics lacks the finished builds counter")
		}
	})

	t.Run("fail", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow fail").ID, 2*time.Minute)
		if b.Status != build.Failed {
			t.Fatalf("status %s, log:\n%s", b.Status, logs)
		}
		st := stepStatuses(b)
		if st["Before"] != build.StepSuccess || st["Broken"] != build.StepFailed || st["After"] != build.StepSkipped {
			t.Errorf("steps: %v", st)
		}
		if !strings.Contains(logs, "about-to-fail") || strings.Contains(logs, "SHOULD-NOT-RUN") {
			t.Errorf("log:\n%s", logs)
		}
		for _, s := range b.Steps {
			if s.Name == "Broken" && (s.ExitCode == nil || *s.ExitCode != 3) {
				t.Errorf("exit code of Broken: %v", s.ExitCode)
			}
		}
		if !strings.Contains(b.Message, "Broken") {
			t.Errorf("message %q does not name the failed step", b.Message)
		}
	})

	t.Run("long log pages", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow many").ID, 2*time.Minute)
		if b.Status != build.Finished {
			t.Fatalf("status %s", b.Status)
		}
		if n := strings.Count(logs, "    n="); n != 25000 || !strings.Contains(logs, "    n=25000\n") {
			t.Errorf("build logs printed %d of 25000 lines", n)
		}
	})

	t.Run("background process does not hold its step", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow background").ID, 2*time.Minute)
		if b.Status != build.Finished || !strings.Contains(logs, "next-step") {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		if n := strings.Count(logs, "    bg="); n != 5000 || !strings.Contains(logs, "    bg=5000\n") {
			t.Errorf("build logs printed %d of 5000 lines", n)
		}
		if strings.Contains(logs, "NEVER") {
			t.Errorf("the background process outlived the build")
		}
	})

	t.Run("builder output is capped", func(t *testing.T) {
		t.Parallel()
		before := len(f.s.Log())
		b, logs := f.wait(f.start("--workflow flood").ID, 2*time.Minute)
		if b.Status != build.Finished {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		// One cap covers all the machine writes: past it, one marker and
		// nothing more (not even the step's own last line).
		if strings.Count(logs, "wrote more than 64 MiB") != 1 || strings.Contains(logs, "flood-done") {
			t.Errorf("the build log does not say the machine's output was capped:\n%s", logs)
		}
		// 200 MB written to the builder's standard error; what reaches the
		// service log is bounded (other subtests log a little meanwhile).
		if grew := len(f.s.Log()) - before; grew > 2<<20 {
			t.Errorf("the server's log grew by %d bytes", grew)
		}
	})

	t.Run("cm_env", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow env").ID, 2*time.Minute)
		if b.Status != build.Finished || !strings.Contains(logs, "exported=from-step-one") {
			t.Fatalf("status %s, log:\n%s", b.Status, logs)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		b, logs := f.wait(f.start("--workflow timeout").ID, time.Minute)
		if b.Status != build.Timeout {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		if !strings.Contains(b.Message, "max_build_duration") || !strings.Contains(logs, "max_build_duration") {
			t.Errorf("message %q / log does not say why:\n%s", b.Message, logs)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("timeout took %s", d)
		}
		if st := stepStatuses(b); st["Sleep"] != build.StepCanceled {
			t.Errorf("steps: %v", st)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		b := f.start("--workflow cancel")
		waitLog(t, f, b.ID, "waiting")
		// Control: the leftover check sees a running machine, so it would
		// see one left behind.
		if left := f.leftovers(b.ID, fmt.Sprintf("build-%d", b.ID)); len(left) < 2 {
			t.Errorf("the leftover check sees too little of a running build: %v", left)
		} else {
			t.Logf("a running build has: %v", left)
		}
		start := time.Now()
		if r := f.hangar(fmt.Sprintf("build cancel %d", b.ID)); r.Code != 0 || !strings.Contains(r.Stdout, "canceled") {
			t.Fatalf("cancel: %d %s %s", r.Code, r.Stdout, r.Stderr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancel took %s", d)
		}
		b, _ = f.wait(b.ID, time.Minute)
		if b.Status != build.Canceled {
			t.Fatalf("status %s", b.Status)
		}
		if r := f.hangar(fmt.Sprintf("build cancel %d", b.ID)); r.Code == 0 || !strings.Contains(r.Stderr, "already ended") {
			t.Errorf("second cancel: %d %s", r.Code, r.Stderr)
		}
	})

	t.Run("malformed workflow file", func(t *testing.T) {
		t.Parallel()
		b := f.start("--branch broken")
		if b.Status != build.Failed || !strings.Contains(b.Message, "codemagic.yaml:6") || !strings.Contains(b.Message, "max_build_duration") {
			t.Fatalf("build: %s %q", b.Status, b.Message)
		}
		r := f.hangar("build start demo --branch broken --follow")
		if r.Code == 0 || !strings.Contains(r.Stderr, "codemagic.yaml:6") {
			t.Errorf("start --follow: %d %s", r.Code, r.Stderr)
		}
	})

	t.Run("clear errors", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			args, want string
			env        []string
		}{
			{args: "build start demo --workflow nope", want: `no workflow "nope"`},
			{args: "build start demo", want: "several workflows"},
			{args: "build start nope", want: `no app "nope"`},
			{args: "build start demo --workflow pass --branch nope", want: `no branch "nope"`},
			{args: "build show 99999", want: "no build 99999"},
			{args: "build show abc", want: "not a build id"},
			{args: "app list", env: []string{"HANGAR_TOKEN=wrong"}, want: "invalid API token"},
			{args: "app list", env: []string{"HANGAR_TOKEN="}, want: "missing API token"},
			{args: "app add demo --repo /nonexistent/repo", want: "no such directory"},
			{args: "app add 'bad name' --repo /tmp", want: "not valid"},
		} {
			var r harness.Result
			args := strings.Fields(c.args)
			if c.args == "app add 'bad name' --repo /tmp" {
				args = []string{"app", "add", "bad name", "--repo", "/tmp"}
			}
			if c.env != nil {
				r = f.s.HangarEnv(c.env, args...)
			} else {
				r = f.s.Hangar(args...)
			}
			if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("hangar %s: exit %d, stderr %q, want %q", c.args, r.Code, r.Stderr, c.want)
			}
		}
	})

	t.Run("webhook", func(t *testing.T) {
		t.Parallel()
		testWebhook(t, f)
	})

	if driver != "sandbox" {
		return
	}

	t.Run("sudo stays in the machine", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow sudo").ID, 2*time.Minute)
		if b.Status != build.Finished {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		if !strings.Contains(logs, "whoami=builder sudo=root") || !strings.Contains(logs, "data-hidden") {
			t.Errorf("log:\n%s", logs)
		}
		if _, err := os.Stat("/usr/local/bin/hangar-e2e-" + f.run); err == nil {
			os.Remove("/usr/local/bin/hangar-e2e-" + f.run)
			t.Errorf("the build's sudo write reached the host's /usr")
		}
	})

	t.Run("syscall filter", func(t *testing.T) {
		t.Parallel()
		b, logs := f.wait(f.start("--workflow seccomp").ID, 2*time.Minute)
		if b.Status != build.Finished {
			t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
		}
		if !strings.Contains(logs, "seccomp=2 sudo-seccomp=2") || !strings.Contains(logs, "sudo-works") {
			t.Errorf("log:\n%s", logs)
		}
	})

	t.Run("machines cannot reach each other", func(t *testing.T) {
		t.Parallel()
		a := f.start("--workflow listen")
		waitLog(t, f, a.ID, "self-reachable")
		b, logs := f.wait(f.start("--workflow probe").ID, 2*time.Minute)
		if b.Status != build.Finished || !strings.Contains(logs, "probe-done") {
			t.Fatalf("probe: %s, log:\n%s", b.Status, logs)
		}
		if strings.Contains(logs, "REACHED") {
			t.Errorf("a machine reached another:\n%s", logs)
		}
		if ab := f.show(a.ID); ab.Status != build.Building {
			t.Errorf("the listening build ended early (%s): the probe proves nothing", ab.Status)
		}
		f.hangar(fmt.Sprintf("build cancel %d", a.ID))
		f.wait(a.ID, time.Minute)
	})
}

// waitLog waits until build id's log contains s.
func waitLog(t *testing.T, f *fixture, id int64, s string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := f.hangar(fmt.Sprintf("build logs %d", id))
		if strings.Contains(r.Stdout, s) {
			return
		}
		if b := f.show(id); b.Status.Done() || time.Now().After(deadline) {
			t.Fatalf("build %d (%s) never logged %q:\n%s", id, b.Status, s, r.Stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var webhookMu sync.Mutex

func testWebhook(t *testing.T, f *fixture) {
	webhookMu.Lock()
	defer webhookMu.Unlock()
	// A second app with a known secret and a workflow triggered on push.
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": `
workflows:
  on-push:
    triggering:
      events: [push]
      branch_patterns:
        - pattern: 'release/*'
    environment:
      vars:
        E2E_RUN: "` + f.run + `"
    scripts:
      - echo pushed
  manual-only:
    scripts:
      - echo manual
`})
	commit := repo.Commit("release/1.0", nil)
	if r := f.s.Hangar("app", "add", "hooked", "--repo", repo.Path, "--webhook-secret", "s3cret"); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	post := func(body []byte, sig string) (int, string) {
		req, _ := http.NewRequest("POST", f.s.URL+"/api/v1/webhooks/hooked", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	sign := func(secret string, body []byte) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	before := len(listBuilds(t, f, "hooked"))
	body := []byte(`{"ref":"refs/heads/release/1.0","after":"` + commit + `"}`)
	for _, sig := range []string{"", "sha256=00", sign("wrong", body), "sha1=abc"} {
		if code, msg := post(body, sig); code != http.StatusUnauthorized || !strings.Contains(msg, "signature") {
			t.Errorf("signature %q: %d %s", sig, code, msg)
		}
	}
	if n := len(listBuilds(t, f, "hooked")); n != before {
		t.Fatalf("a refused webhook started %d builds", n-before)
	}
	code, msg := post(body, sign("s3cret", body))
	if code != http.StatusAccepted {
		t.Fatalf("signed webhook: %d %s", code, msg)
	}
	var res struct{ Builds []build.Build }
	if err := json.Unmarshal([]byte(msg), &res); err != nil || len(res.Builds) != 1 {
		t.Fatalf("signed webhook started %s", msg)
	}
	b := res.Builds[0]
	if b.Trigger != build.Webhook || b.Workflow != "on-push" || b.Commit != commit || b.Branch != "release/1.0" {
		t.Errorf("webhook build: %+v", b)
	}
	// A push to a branch no pattern matches starts nothing.
	other := []byte(`{"ref":"refs/heads/main","after":""}`)
	if code, msg := post(other, sign("s3cret", other)); code != http.StatusAccepted || !strings.Contains(msg, `"builds": []`) {
		t.Errorf("unmatched push: %d %s", code, msg)
	}
	nb, logs := f.wait(b.ID, 2*time.Minute)
	if nb.Status != build.Finished || !strings.Contains(logs, "pushed") {
		t.Errorf("webhook build: %s\n%s", nb.Status, logs)
	}
}

func listBuilds(t *testing.T, f *fixture, app string) []build.Build {
	r := f.hangar("build list --json --app " + app)
	var list []build.Build
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil {
		t.Fatalf("build list: %v %s %s", err, r.Stdout, r.Stderr)
	}
	return list
}

// TestDataDirUnderVar: with the data dir where packaged services keep
// theirs (/var/lib/...), which the machines' /var overlay shows, the server
// works with no other flag (machines' layers in <data>/machines, inside
// /var), and builds still cannot read the data dir, even as root.
func TestDataDirUnderVar(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	data, err := os.MkdirTemp("/var/lib", "hangar-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	s := harness.StartServer(t, harness.Options{Driver: "sandbox", Data: data, Args: []string{
		"--sandbox-bridge", "hgvar0", "--sandbox-subnet", "10.213.87.0/24"}})
	f := &fixture{t: t, s: s, run: marker(), driver: "sandbox", bridge: "hgvar0"}
	yaml := strings.NewReplacer("{{run}}", f.run, "{{data}}", s.Data, "{{prefix}}", "10.213.87.").Replace(workflowFile)
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": yaml, "marker.txt": "m\n"})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	b, logs := f.wait(f.start("--workflow sudo").ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(logs, "data-hidden") || strings.Contains(logs, "LEAKED") {
		t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
	}
}
