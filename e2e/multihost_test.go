package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/app"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway/gatewaytest"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// multiHostWorkflows: "hold" prints its host and build, then waits until
// the file release-<build id> of {{dir}} exists; "ssh" prints the same
// and ends its steps (the build then waits for its SSH user).
const multiHostWorkflows = `
workflows:
  hold:
    max_build_duration: 10
    scripts:
      - name: Hold
        script: |
          echo "on-$(cat /proc/sys/kernel/hostname)"
          echo "holding-$FCI_BUILD_ID"
          while [ ! -e "{{dir}}/release-$FCI_BUILD_ID" ]; do sleep 0.2; done
          echo "released-$FCI_BUILD_ID"
  ssh:
    max_build_duration: 10
    scripts:
      - name: Hello
        script: |
          echo "ssh-build-$FCI_BUILD_ID"
          echo "on-$(cat /proc/sys/kernel/hostname)"
`

// multiHost is TestMultiHost's deployment.
type multiHost struct {
	t       *testing.T
	ctx     context.Context
	url     string // PostgreSQL
	servers [2]*harness.Server
	gws     [2]*gatewayProc
	lb      *gatewaytest.LB
	tokens  map[string]string // runner name -> token
	runners map[string]*harness.Runner
	hosts   map[string]*harness.Host // runner name -> its host
	servArg map[string]string        // runner name -> its --server
	release string                   // dir of the hold builds' release files
	// Left by runnerKill for serverKill: r2's builds that hold, and the
	// machine directories that the killed r1 left.
	r2Held map[int64]*followed
	r1Left []string
}

// TestMultiHost is issue 12's acceptance: PostgreSQL, two API-only
// `hangar server` replicas, two `hangar gateway` processes behind one
// address, and two `hangar runner` processes (host driver), each on its
// own test host: a network namespace with its own address and host name,
// which reaches the servers and the gateways' address through its own
// link and nothing else. 20 builds spread over both runners and finish
// with their logs; SSH builds on both runners are reached with OpenSSH
// through either gateway, one gateway is killed with sessions open and the
// sessions come back through the other, every SSH build finishes; one
// runner is killed (SIGKILL) and its builds fail naming it within the
// bound, and when it starts again it removes the machines it left; one
// server is killed and the API, the runners and their builds go on
// through the other.
func TestMultiHost(t *testing.T) {
	nt := harness.NewNet(t, 2)
	started := time.Now()
	m := &multiHost{t: t, ctx: t.Context(), url: pgtest.DB(t), release: t.TempDir(),
		tokens: map[string]string{}, runners: map[string]*harness.Runner{},
		hosts: map[string]*harness.Host{}, servArg: map[string]string{}}
	keyFile := secretsKeyFile(t)
	// The one gateway address, where the hosts' builders and the users
	// reach the gateways.
	m.lb = gatewaytest.NewLBOn(t, net.JoinHostPort(nt.HostIP, "0"))
	args := []string{"--database", m.url, "--secrets-key", keyFile, "--no-runner",
		"--gateway-addr", m.lb.Addr, "--ssh-public-host", nt.HostIP, "--ssh-after-steps", "10m"}
	for i := range m.servers {
		m.servers[i] = harness.StartServer(t, harness.Options{Driver: "host", IP: nt.HostIP, Args: args})
	}
	m.gws[0] = startGatewayWith(t, "a", m.url, "--secrets-key", keyFile)
	m.gws[1] = startGatewayWith(t, "b", m.url, "--secrets-key", keyFile)
	m.lb.SetBackends(m.gws[0].addr, m.gws[1].addr)

	// r1 on host 1 talks to server 1 first, r2 on host 2 to server 0.
	s0, s1 := m.servers[0].URL, m.servers[1].URL
	for i, name := range []string{"r1", "r2"} {
		r := m.servers[i].Hangar("runner", "token", "create", name)
		if r.Code != 0 {
			t.Fatalf("runner token create %s: %s", name, r.Stderr)
		}
		m.tokens[name] = strings.TrimSpace(r.Stdout)
		m.hosts[name] = nt.Hosts[i]
	}
	m.servArg["r1"], m.servArg["r2"] = s1+","+s0, s0+","+s1
	for _, name := range []string{"r1", "r2"} {
		m.startRunner(name, "")
	}
	waitRunners(t, m.servers[0], map[string]bool{"r1": true, "r2": true})
	list, err := m.servers[1].Client().Runners(m.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if h := m.hosts[r.Name]; h != nil && r.Host != h.Name {
			t.Errorf("runner %s reports host %q, want its test host %q", r.Name, r.Host, h.Name)
		}
	}
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(multiHostWorkflows, "{{dir}}", m.release)})
	if r := m.servers[0].Hangar("app", "add", "demo", "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	t.Logf("PostgreSQL, 2 servers, 2 gateways, 2 runners on their hosts up in %v", time.Since(started).Round(time.Millisecond))

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"20 builds over both runners", m.twentyBuilds},
		{"SSH through either gateway, one killed", m.sshAndGatewayKill},
		{"runner killed", m.runnerKill},
		{"server killed", m.serverKill},
	}
	for _, s := range steps {
		phase := time.Now()
		if !t.Run(s.name, s.fn) {
			t.FailNow()
		}
		t.Logf("%s: %v", s.name, time.Since(phase).Round(time.Millisecond))
	}
	t.Logf("whole test: %v", time.Since(started).Round(time.Millisecond))
}

// secretsKeyFile writes a new secrets key (32 random bytes, base64) to a
// file for --secrets-key.
func secretsKeyFile(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRunner starts runner name on its host (data: "" for a new data dir)
// with capacity 2.
func (m *multiHost) startRunner(name, data string) *harness.Runner {
	r := harness.StartRunnerOn(m.t, m.hosts[name], m.servArg[name], m.tokens[name], data, "--capacity", "2")
	m.runners[name] = r
	return r
}

// startHolds starts n hold builds, alternately through each live server,
// and follows each through follower.
func (m *multiHost) startHolds(t *testing.T, n int, follower *harness.Server, through ...*harness.Server) map[int64]*followed {
	t.Helper()
	out := map[int64]*followed{}
	for i := range n {
		b, err := through[i%len(through)].Client().StartBuild(m.ctx, api.StartRequest{App: "demo", Workflow: "hold"})
		if err != nil {
			t.Fatalf("start build %d of %d: %v", i+1, n, err)
		}
		out[b.ID] = follow(m.ctx, t, follower.Client(), b.ID)
	}
	return out
}

// waitHolding waits until n of the followed builds hold (the others wait
// for a runner) and returns them with the runner that claimed each. With
// n the two runners' capacity together, each runner holds its capacity.
func (m *multiHost) waitHolding(t *testing.T, fs map[int64]*followed, n int) map[int64]string {
	t.Helper()
	held := make(chan int64, len(fs))
	stop := make(chan struct{})
	defer close(stop)
	for id, f := range fs {
		go func() {
			select {
			case <-f.holding:
				held <- id
			case <-stop:
			}
		}()
	}
	deadline := time.After(2 * time.Minute)
	out := map[int64]string{}
	for len(out) < n {
		select {
		case id := <-held:
			out[id] = ""
		case <-deadline:
			t.Fatalf("%d of %d builds hold after 2 minutes, want %d", len(out), len(fs), n)
		}
	}
	owners := buildRunners(t, m.url)
	count := map[string]int{}
	for id := range out {
		out[id] = owners[id]
		count[owners[id]]++
	}
	if count["r1"] != n/2 || count["r2"] != n/2 {
		t.Fatalf("holding builds by runner: %v, want %d each", count, n/2)
	}
	return out
}

// releaseBuilds lets the hold builds ids end.
func (m *multiHost) releaseBuilds(t *testing.T, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		if err := os.WriteFile(filepath.Join(m.release, fmt.Sprintf("release-%d", id)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFinished waits until the followed build id ends and checks that it
// finished with its whole log, on the host of the runner that ran it, and
// that its machine is gone.
func (m *multiHost) waitFinished(t *testing.T, id int64, f *followed) string {
	t.Helper()
	select {
	case <-f.ended:
	case <-time.After(2 * time.Minute):
		t.Fatalf("build %d did not end within 2 minutes:\n%s", id, f.log())
	}
	runner := buildRunners(t, m.url)[id]
	h := m.hosts[runner]
	if h == nil {
		t.Fatalf("build %d was claimed by %q, not by a test host's runner", id, runner)
	}
	want := fmt.Sprintf("on-%s\nholding-%d\nreleased-%d", h.Name, id, id)
	if got := f.build(); got == nil || got.Status != build.Finished || !strings.Contains(f.log(), want) {
		t.Errorf("build %d of %s: %+v, want finished with %q in its log:\n%s", id, runner, got, want, f.log())
	}
	machine := filepath.Join(m.runners[runner].Data, "machines", build.Alias(id))
	if _, err := os.Stat(machine); !os.IsNotExist(err) {
		t.Errorf("build %d ended, its machine %s is left: %v", id, machine, err)
	}
	return runner
}

// twentyBuilds: 20 builds, started through either server and followed
// through the other. The first four hold until released: two on each
// runner (capacity 2); then every one runs and finishes.
func (m *multiHost) twentyBuilds(t *testing.T) {
	fs := map[int64]*followed{}
	for i := range 20 {
		b, err := m.servers[i%2].Client().StartBuild(m.ctx, api.StartRequest{App: "demo", Workflow: "hold"})
		if err != nil {
			t.Fatalf("start build %d of 20: %v", i+1, err)
		}
		fs[b.ID] = follow(m.ctx, t, m.servers[1-i%2].Client(), b.ID)
	}
	m.waitHolding(t, fs, 4)
	var ids []int64
	for id := range fs {
		ids = append(ids, id)
	}
	m.releaseBuilds(t, ids...)
	ran := map[string]int{}
	for id, f := range fs {
		ran[m.waitFinished(t, id, f)]++
	}
	if ran["r1"] == 0 || ran["r2"] == 0 || ran["r1"]+ran["r2"] != 20 {
		t.Errorf("builds run by runner: %v, want all 20 by r1 and r2, some by each", ran)
	}
	t.Logf("20 builds: %d on r1 (%s), %d on r2 (%s)", ran["r1"], m.hosts["r1"].Name, ran["r2"], m.hosts["r2"].Name)
}

// sshAndGatewayKill: four SSH builds, two on each runner's host, their
// tunnels on gateway a. OpenSSH gets into each with the generated script
// through each gateway (b forwards the hop to a over the peer link),
// pinning the gateways by the host CA alone with StrictHostKeyChecking
// yes, and with the ssh_config of the other server. A login shell is open
// in each, through a, when a is killed: the builders' tunnels come back
// through b, the next login (through b) re-attaches to each shell, and
// logging out of it finishes the build: no build is lost.
func (m *multiHost) sshAndGatewayKill(t *testing.T) {
	harness.Need(t, "ssh", "bash")
	list, err := m.servers[0].Client().Runners(m.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if m.hosts[r.Name] != nil && !r.SSH {
			t.Fatalf("runner %s runs no SSH builds, want it to: the servers have separate gateways (--gateway-addr)", r.Name)
		}
	}
	a, b := m.gws[0], m.gws[1]
	sf := &sshFixture{fixture: &fixture{t: t, s: m.servers[0], run: marker(), driver: "host"}, home: t.TempDir()}

	// Tunnels land on a (the balancer's first backend).
	m.lb.SetBackends(a.addr, b.addr)
	fs := map[int64]*followed{}
	var ids []int64
	for i := range 4 {
		bld, err := m.servers[i%2].Client().StartBuild(m.ctx, api.StartRequest{App: "demo", Workflow: "ssh", SSH: true})
		if err != nil {
			t.Fatalf("start SSH build %d of 4: %v", i+1, err)
		}
		t.Cleanup(func() { m.servers[1].Hangar("build", "cancel", fmt.Sprint(bld.ID)) })
		ids = append(ids, bld.ID)
		fs[bld.ID] = follow(m.ctx, t, m.servers[1-i%2].Client(), bld.ID)
	}
	for _, id := range ids {
		sf.waitSSH(id)
		waitRouteHolder(t, m.url, build.Alias(id), a.id)
	}
	owners := buildRunners(t, m.url)
	count := map[string]int{}
	for _, id := range ids {
		count[owners[id]]++
	}
	if count["r1"] != 2 || count["r2"] != 2 {
		t.Fatalf("SSH builds by runner: %v, want 2 each (capacity 2)", count)
	}

	// Into each, with the script of either server, through each gateway.
	confs := map[int64]string{}
	for i, id := range ids {
		s := m.servers[i%2]
		r := s.Hangar("build", "ssh-script", fmt.Sprint(id))
		if r.Code != 0 {
			t.Fatalf("ssh-script of build %d: %s", id, r.Stderr)
		}
		if !strings.Contains(r.Stdout, "@cert-authority hangar-gateway ssh-ed25519 ") || !strings.Contains(r.Stdout, "StrictHostKeyChecking yes") {
			t.Fatalf("build %d's script does not pin the gateways' host CA strictly:\n%s", id, r.Stdout)
		}
		script := filepath.Join(t.TempDir(), "connect.sh")
		if err := os.WriteFile(script, []byte(r.Stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, g := range []*gatewayProc{a, b} {
			m.lb.SetBackends(g.addr)
			want := fmt.Sprintf("in-%d-via-%s-on-%s", id, g.id, m.hosts[owners[id]].Name)
			cmd := fmt.Sprintf("echo in-%d-via-%s-on-$(cat /proc/sys/kernel/hostname)", id, g.id)
			if r := sf.run("bash", script, cmd); r.Code != 0 || r.Stdout != want+"\n" {
				t.Fatalf("build %d (%s) through gateway %s: exit %d, stdout %q, stderr %q", id, owners[id], g.id, r.Code, r.Stdout, r.Stderr)
			}
		}
		dir := filepath.Join(t.TempDir(), "cfg")
		if r := m.servers[1-i%2].Hangar("build", "ssh-config", fmt.Sprint(id), "--dir", dir); r.Code != 0 {
			t.Fatalf("ssh-config of build %d: %s", id, r.Stderr)
		}
		confs[id] = filepath.Join(dir, "config")
		var written strings.Builder
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, p := range files {
			body, _ := os.ReadFile(p)
			written.Write(body)
		}
		if w := written.String(); !strings.Contains(w, "StrictHostKeyChecking yes") || !strings.Contains(w, "@cert-authority hangar-gateway ssh-ed25519 ") {
			t.Fatalf("build %d's ssh_config does not pin the gateways' host CA strictly:\n%s", id, w)
		}
	}

	// A login shell in each, through a.
	m.lb.SetBackends(a.addr)
	lives := map[int64]*liveSSH{}
	for _, id := range ids {
		l := startLive(t, sf, "ssh", "-F", confs[id], "-tt", build.Alias(id))
		l.typeLine(fmt.Sprintf(`export KEPT=v%d-$((40+2)); echo "before-kill-$((%d+1))"`, id, id))
		l.waitOut(fmt.Sprintf("before-kill-%d", id+1))
		lives[id] = l
	}

	// a dies: every tunnel comes back through the one address, on b.
	m.lb.SetBackends(a.addr, b.addr)
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	killed := time.Now()
	for _, id := range ids {
		waitRouteHolder(t, m.url, build.Alias(id), b.id)
	}
	t.Logf("the 4 builders' tunnels were on gateway b %v after gateway a was killed", time.Since(killed).Round(time.Millisecond))
	for _, id := range ids {
		if code := lives[id].waitExit(); code == 0 {
			t.Errorf("build %d: the login through the killed gateway ended with status 0", id)
		}
		waitEvent(t, sf, id, "ssh_login_detach", "shell 1")
	}
	// The next login re-attaches to the shell, and logging out of it
	// finishes the build.
	for _, id := range ids {
		l := startLive(t, sf, "ssh", "-F", confs[id], "-tt", build.Alias(id))
		l.typeLine(`echo "kept=$KEPT"`)
		l.waitOut(fmt.Sprintf("kept=v%d-42", id))
		l.typeLine("exit")
		l.waitExit()
	}
	for _, id := range ids {
		f := fs[id]
		select {
		case <-f.ended:
		case <-time.After(time.Minute):
			t.Fatalf("SSH build %d did not end within a minute of its logout:\n%s", id, f.log())
		}
		want := fmt.Sprintf("ssh-build-%d\non-%s", id, m.hosts[owners[id]].Name)
		if got := f.build(); got == nil || got.Status != build.Finished || !strings.Contains(f.log(), want) {
			t.Errorf("SSH build %d of %s: %+v, want finished with %q in its log:\n%s", id, owners[id], got, want, f.log())
		}
	}
}

// waitRouteHolder waits until the gateways' registry (in the database at
// url) names gateway want as holding alias's tunnel.
func waitRouteHolder(t *testing.T, url, alias, want string) {
	t.Helper()
	ctx := t.Context()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	deadline := time.Now().Add(time.Minute)
	for {
		var got string
		_ = db.QueryRow(ctx, `SELECT gateway_id FROM gateway_routes WHERE alias = $1`, alias).Scan(&got)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry names %q as holding %s's tunnel, want %q", got, alias, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runnerKill: four hold builds, two on each runner; r1 is killed with
// SIGKILL: its builds fail within app.StaleAfter + app.SweepInterval
// with a reason naming it and its host, r2's go on.
func (m *multiHost) runnerKill(t *testing.T) {
	// Followed through server 1, which stays.
	fs := m.startHolds(t, 4, m.servers[1], m.servers[0], m.servers[1])
	owners := m.waitHolding(t, fs, 4)
	r1 := m.runners["r1"]
	killed := time.Now()
	r1.Kill()
	bound := app.StaleAfter + app.SweepInterval
	want := fmt.Sprintf("runner r1 on host %s stopped answering at ", m.hosts["r1"].Name)
	for id, f := range fs {
		if owners[id] != "r1" {
			continue
		}
		select {
		case <-f.ended:
		case <-time.After(bound + 30*time.Second):
			t.Fatalf("build %d of the killed runner r1 did not end within %v of the kill", id, bound+30*time.Second)
		}
		// The server's record of the end, not when the stream told it.
		b, err := m.servers[1].Client().Build(m.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status != build.Failed || !strings.HasPrefix(b.Message, want) {
			t.Errorf("build %d of the killed runner: %s %q, want failed %q...", id, b.Status, b.Message, want)
		}
		if on := fmt.Sprintf("on-%s\nholding-%d", m.hosts["r1"].Name, id); !strings.Contains(f.log(), on) {
			t.Errorf("build %d of the killed runner: no %q in its log:\n%s", id, on, f.log())
		}
		if b.FinishedAt == nil {
			t.Fatalf("build %d ended without finished_at", id)
		}
		took := b.FinishedAt.Sub(killed)
		if took > bound {
			t.Errorf("build %d failed %v after its runner was killed, want within %v (app.StaleAfter + app.SweepInterval)", id, took.Round(time.Millisecond), bound)
		}
		t.Logf("build %d of killed runner r1 failed %v after the kill: %s", id, took.Round(time.Millisecond), b.Message)
	}
	// r2's builds hold on; the server kill lets them end.
	for id, f := range fs {
		if owners[id] != "r2" {
			continue
		}
		select {
		case <-f.ended:
			t.Fatalf("build %d of r2 ended when r1 was killed: %+v\n%s", id, f.build(), f.log())
		default:
		}
	}
	m.r2Held = map[int64]*followed{}
	for id, f := range fs {
		if owners[id] == "r2" {
			m.r2Held[id] = f
		}
	}
	// What r1 left: its builds' machine directories, with their steps'
	// processes (the host driver's builder died with the runner, its
	// children did not). They stay until r1 starts again.
	for id := range fs {
		if owners[id] != "r1" {
			continue
		}
		dir := filepath.Join(r1.Data, "machines", build.Alias(id))
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the killed runner's machine %s: %v (want it left until the runner comes back)", dir, err)
		}
		if len(procsIn(dir)) == 0 {
			t.Errorf("no process left in the killed runner's machine %s", dir)
		}
		m.r1Left = append(m.r1Left, dir)
	}
}

// serverKill: server 0 is killed (SIGKILL). The API answers through
// server 1; r2, which talked to server 0, moves to server 1 and its
// builds finish; r1 starts again on its host and removes the machines it
// left; four more builds, two on each runner, finish.
func (m *multiHost) serverKill(t *testing.T) {
	dead, live := m.servers[0], m.servers[1]
	dead.Kill()
	if _, err := live.Client().Builds(m.ctx, "demo", 50); err != nil {
		t.Fatalf("the API through the remaining server: %v", err)
	}
	var ids []int64
	for id := range m.r2Held {
		ids = append(ids, id)
	}
	m.releaseBuilds(t, ids...)
	for id, f := range m.r2Held {
		m.waitFinished(t, id, f)
	}
	if !strings.Contains(m.runners["r2"].Log(), "moved to another server") {
		t.Errorf("r2 did not move to the remaining server:\n%s", m.runners["r2"].Log())
	}

	m.startRunner("r1", m.runners["r1"].Data)
	waitRunners(t, live, map[string]bool{"r1": true, "r2": true})
	for _, dir := range m.r1Left {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("r1 started again and left its machine %s: %v", dir, err)
		}
		if pids := procsIn(dir); len(pids) > 0 {
			t.Errorf("r1 started again and left processes %v of its machine %s", pids, dir)
		}
	}

	fs := m.startHolds(t, 4, live, live)
	m.waitHolding(t, fs, 4)
	ids = ids[:0]
	for id := range fs {
		ids = append(ids, id)
	}
	m.releaseBuilds(t, ids...)
	for id, f := range fs {
		m.waitFinished(t, id, f)
	}
}
