package e2e

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// The networks of these tests, apart from every other test's.
const (
	coBridge  = "hgco0"
	coSubnet  = "10.213.71.0/24"
	coBridge2 = "hgco1"
	coSubnet2 = "10.213.72.0/24"
)

// holdWorkflow's build "hold" runs until the test creates the file
// /home/release in its machine (see release), then finishes.
const holdWorkflow = `
workflows:
  hold:
    environment:
      vars:
        E2E_RUN: "{{run}}"
    scripts:
      - name: Hold
        script: |
          echo hold-started
          while [ ! -e /home/release ]; do sleep 0.1; done
          echo released
      - name: After
        script: echo after-hold
  quick:
    environment:
      vars:
        E2E_RUN: "{{run}}"
    scripts:
      - name: Quick
        script: echo quick-done
`

func requireSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the sandbox driver needs runc (apt-get install runc)")
	}
}

// coFixture starts a sandbox server on bridge and subnet (data: a new temp
// dir if empty) with an app holding holdWorkflow.
func coFixture(t *testing.T, bridge, subnet, data string) *fixture {
	t.Helper()
	requireSandbox(t)
	s := harness.StartServer(t, harness.Options{Driver: "sandbox", Data: data,
		Args: []string{"--sandbox-bridge", bridge, "--sandbox-subnet", subnet}})
	f := &fixture{t: t, s: s, run: marker(), driver: "sandbox", bridge: bridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(holdWorkflow, "{{run}}", f.run)})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	return f
}

// release lets build id's Hold step end: it creates /home/release in the
// machine (its /home is a directory of its disk, mounted in the server's
// machines dir).
func (f *fixture) release(id int64) {
	f.t.Helper()
	p := filepath.Join(f.s.Data, "machines", fmt.Sprintf("build-%d", id), "disk", "home", "release")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		f.t.Fatalf("release build %d: %v", id, err)
	}
}

// netState describes the host network state of bridge: the bridge (with
// its interface index, so a replaced bridge shows) and the iptables rules
// about its chains.
func netState(t *testing.T, bridge string) []string {
	t.Helper()
	var found []string
	if idx, err := os.ReadFile("/sys/class/net/" + bridge + "/ifindex"); err == nil {
		found = append(found, "bridge "+bridge+" index "+strings.TrimSpace(string(idx)))
	}
	for _, table := range []string{"filter", "nat"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t %s -S: %v\n%s", table, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "HANGAR-") && strings.Contains(line, "-"+bridge) {
				found = append(found, table+": "+line)
			}
		}
	}
	return found
}

// machineCgroups lists the cgroup directories of machine name of the
// server on bridge, in every hierarchy.
func machineCgroups(bridge, name string) []string {
	a, _ := filepath.Glob("/sys/fs/cgroup/*/hangar-" + bridge + "/" + name)
	b, _ := filepath.Glob("/sys/fs/cgroup/hangar-" + bridge + "/" + name)
	return append(a, b...)
}

// waitStatus waits until build id is in status (or has ended).
func waitRunning(t *testing.T, f *fixture, id int64) {
	t.Helper()
	waitLog(t, f, id, "hold-started")
	if b := f.show(id); b.Status != build.Building {
		t.Fatalf("build %d: %s, want building", id, b.Status)
	}
}

// TestTwoServersSideBySide: a second server given the bridge of a running
// one refuses, naming the owner and the flags to use, before it changes
// anything: the first one's bridge, chains and running build are
// untouched and the build finishes. With its own bridge and subnet it runs
// beside the first.
func TestTwoServersSideBySide(t *testing.T) {
	f := coFixture(t, coBridge, coSubnet, "")
	b := f.start("--workflow hold")
	waitRunning(t, f, b.ID)
	before := netState(t, coBridge)
	if len(before) < 3 {
		t.Fatalf("the network check sees too little of a running server: %v", before)
	}

	log := harness.StartServerFails(t, harness.Options{Driver: "sandbox",
		Args: []string{"--sandbox-bridge", coBridge, "--sandbox-subnet", coSubnet}})
	for _, want := range []string{"bridge " + coBridge + " belongs to another Hangar server", f.s.Data, "--sandbox-bridge", "--sandbox-subnet"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, log)
		}
	}
	if after := netState(t, coBridge); !slices.Equal(after, before) {
		t.Errorf("the refused server changed the first one's network:\nbefore %q\nafter  %q", before, after)
	}
	if left := f.leftovers(b.ID, fmt.Sprintf("build-%d", b.ID)); len(left) < 2 {
		t.Errorf("the first server's machine is damaged: only %v left of it", left)
	}

	// Its own network: both run builds at once.
	g := coFixture(t, coBridge2, coSubnet2, "")
	q, qlog := g.wait(g.start("--workflow quick").ID, 2*time.Minute)
	if q.Status != build.Finished || !strings.Contains(qlog, "quick-done") {
		t.Errorf("the second server's build: %s %q\n%s", q.Status, q.Message, qlog)
	}
	if got := f.show(b.ID); got.Status != build.Building {
		t.Errorf("the first server's build: %s %q while the second ran, want building", got.Status, got.Message)
	}

	f.release(b.ID)
	done, logs := f.wait(b.ID, 2*time.Minute)
	if done.Status != build.Finished || !strings.Contains(logs, "released") || !strings.Contains(logs, "after-hold") {
		t.Errorf("the first server's build: %s %q\n%s", done.Status, done.Message, logs)
	}
	g.s.Stop()
	f.s.Stop()
	for _, br := range []string{coBridge, coBridge2} {
		if left := netState(t, br); len(left) > 0 {
			t.Errorf("the stopped servers left: %v", left)
		}
	}
}

// TestSecondServerSameDataDir: a second server on the data dir of a
// running one refuses (naming its PID) before it changes anything, even
// with another bridge: the first one's build keeps running and finishes.
func TestSecondServerSameDataDir(t *testing.T) {
	f := coFixture(t, coBridge, coSubnet, "")
	b := f.start("--workflow hold")
	waitRunning(t, f, b.ID)
	before := netState(t, coBridge)

	log := harness.StartServerFails(t, harness.Options{Driver: "sandbox", Data: f.s.Data,
		Args: []string{"--sandbox-bridge", coBridge2, "--sandbox-subnet", coSubnet2}})
	for _, want := range []string{"data dir in use", fmt.Sprintf("pid %d", f.s.PID())} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + coBridge2); err == nil {
		t.Errorf("the refused server created its bridge %s", coBridge2)
	}
	if after := netState(t, coBridge); !slices.Equal(after, before) {
		t.Errorf("the refused server changed the first one's network:\nbefore %q\nafter  %q", before, after)
	}
	got := f.show(b.ID)
	if got.Status != build.Building || stepStatuses(got)["Hold"] != build.StepRunning {
		t.Errorf("the running build after the refusal: %s %q %v", got.Status, got.Message, got.Steps)
	}
	f.release(b.ID)
	done, logs := f.wait(b.ID, 2*time.Minute)
	if done.Status != build.Finished || !strings.Contains(logs, "after-hold") {
		t.Errorf("the build: %s %q\n%s", done.Status, done.Message, logs)
	}
}

// TestKillDuringBuild: after kill -9 of the server during a build, a
// restart on the same data dir destroys the machine (processes, runc
// container, netns, veth, cgroups, directory) and ends the build failed,
// saying why, with no step left running.
func TestKillDuringBuild(t *testing.T) {
	f := coFixture(t, coBridge, coSubnet, "")
	b := f.start("--workflow hold")
	waitRunning(t, f, b.ID)
	name := fmt.Sprintf("build-%d", b.ID)
	f.s.Kill()
	// Control: the machine outlives the killed server, and the checks see it.
	if left := f.leftovers(b.ID, name); len(left) < 4 {
		t.Fatalf("the leftover check sees too little of an orphaned machine: %v", left)
	}
	if len(machineCgroups(coBridge, name)) == 0 {
		t.Fatalf("the cgroup check sees no cgroup of the orphaned machine")
	}

	f.s = harness.StartServer(t, harness.Options{Driver: "sandbox", Data: f.s.Data,
		Args: []string{"--sandbox-bridge", coBridge, "--sandbox-subnet", coSubnet}})
	// The server answers only once the machine is gone and the build ended.
	if left := f.leftovers(b.ID, name); len(left) > 0 {
		t.Errorf("the restarted server left the killed one's machine: %s", strings.Join(left, "; "))
	}
	if cg := machineCgroups(coBridge, name); len(cg) > 0 {
		t.Errorf("the restarted server left the killed one's cgroups: %v", cg)
	}
	got := f.show(b.ID)
	const want = "the server stopped during the build (crash or kill); its machine was destroyed at restart"
	if got.Status != build.Failed || got.Message != want {
		t.Errorf("build after the restart: %s %q, want failed %q", got.Status, got.Message, want)
	}
	for _, st := range got.Steps {
		if st.Status == build.StepRunning || st.Status == build.StepPending {
			t.Errorf("step %q is %s after the restart", st.Name, st.Status)
		}
	}
	if st := stepStatuses(got); st["Hold"] != build.StepFailed || st["After"] != build.StepSkipped {
		t.Errorf("steps after the restart: %v", st)
	}
	if logs := f.hangar(fmt.Sprintf("build logs %d", b.ID)).Stdout; !strings.Contains(logs, "hangar: "+want) {
		t.Errorf("the build's log does not say why it ended:\n%s", logs)
	}
	// The restarted server works and cleans up after itself.
	q, _ := f.wait(f.start("--workflow quick").ID, 2*time.Minute)
	if q.Status != build.Finished {
		t.Errorf("a build after the restart: %s %q", q.Status, q.Message)
	}
	f.s.Stop()
	if left := netState(t, coBridge); len(left) > 0 {
		t.Errorf("the stopped server left: %v", left)
	}
}

// TestOriginHasNoCredentials: an app whose repository URL carries a token
// (smart HTTP with basic auth, the real git-http-backend) builds, and
// nothing in the machine holds the token: not the clone's origin, not the
// mirror it borrows objects from, not the environment.
func TestOriginHasNoCredentials(t *testing.T) {
	requireSandbox(t)
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skip("git is not installed")
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	const tokenA, tokenB = "ghp_E2E", "ORIGINTOKEN7"
	run := marker()
	// The script joins the token's halves to look for it; it never prints it.
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": `
workflows:
  origin:
    environment:
      vars:
        E2E_RUN: "` + run + `"
    scripts:
      - name: Origin
        script: |
          git remote -v
          m=$(dirname "$(cat .git/objects/info/alternates)")
          echo "mirror=$m"
          t="` + tokenA + `"; t="${t}` + tokenB + `"
          [ ${#t} = ` + fmt.Sprint(len(tokenA+tokenB)) + ` ] || { echo "bad token check"; exit 1; }
          for f in .git/config "$m/config" "$m/FETCH_HEAD" /proc/1/environ /proc/1/cmdline /proc/self/environ; do
            if grep -qsF "$t" "$f"; then echo "TOKEN-IN $f"; fi
          done
          if grep -rqsF "$t" .git "$m"; then echo "TOKEN-IN the clone or the mirror"; fi
          echo origin-checked
`})
	root := filepath.Dir(repo.Path)
	git := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != tokenA+tokenB {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		git.ServeHTTP(w, r)
	}))
	defer srv.Close()
	plain := srv.URL + "/" + filepath.Base(repo.Path)
	url := strings.Replace(plain, "http://", "http://bot:"+tokenA+tokenB+"@", 1)

	s := harness.StartServer(t, harness.Options{Driver: "sandbox",
		Args: []string{"--sandbox-bridge", coBridge2, "--sandbox-subnet", coSubnet2}})
	f := &fixture{t: t, s: s, run: run, driver: "sandbox", bridge: coBridge2}
	if r := s.Hangar("app", "add", "demo", "--repo", url); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	b, logs := f.wait(f.start("--workflow origin").ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(logs, "origin-checked") {
		t.Fatalf("build: %s %q\n%s", b.Status, b.Message, logs)
	}
	if !strings.Contains(logs, "origin\t"+plain+" (fetch)") {
		t.Errorf("git remote -v does not show the URL without credentials (%s):\n%s", plain, logs)
	}
	if strings.Contains(logs, "TOKEN-IN") || strings.Contains(logs, tokenA+tokenB) || strings.Contains(logs, "bot@") {
		t.Errorf("the machine holds the repository's token:\n%s", logs)
	}
}
