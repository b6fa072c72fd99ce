package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/app"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway/gatewaytest"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// TestCluster is issue 12's acceptance as far as one host goes: on one
// PostgreSQL, two `hangar server` replicas, each with its own runner
// (host driver) and --gateway-addr, and two `hangar gateway` processes
// behind one address. SSH builds spread over both runners and their
// tunnels over both gateways. OpenSSH (StrictHostKeyChecking=yes, the
// gateways pinned by the host CA) gets into each build, through each
// gateway, with the script and the ssh_config served by the replica that
// does NOT run the build: the replicas share their SSH keys (the
// database's, sealed with the one --secrets-key). One gateway is killed:
// a new connection gets in through the other. One replica is killed: the
// API answers through the other, the killed replica's builds fail with a
// reason naming its runner within the bound, and their SSH access is
// closed on the gateways. An SSH extension asked of the replica that does
// not run the build reaches the build's runner through the store.
func TestCluster(t *testing.T) {
	harness.Need(t, "ssh", "bash")
	url := pgtest.DB(t)
	ctx := context.Background()
	lb := gatewaytest.NewLB(t)
	keyFile := secretsKeyFile(t)
	args := []string{"--database", url, "--secrets-key", keyFile, "--gateway-addr", lb.Addr,
		"--ssh-public-host", "127.0.0.1", "--ssh-after-steps", "10m", "--max-builds", "2"}
	started := time.Now()
	servers := []*harness.Server{
		harness.StartServer(t, harness.Options{Driver: "host", Args: args}),
		harness.StartServer(t, harness.Options{Driver: "host", Args: args}),
	}
	names := map[string]int{} // server (runner) name -> index in servers
	for i, s := range servers {
		b, err := os.ReadFile(filepath.Join(s.Data, "server-id"))
		if err != nil {
			t.Fatal(err)
		}
		names[strings.TrimSpace(string(b))] = i
	}
	gws := []*gatewayProc{
		startGatewayWith(t, "a", url, "--secrets-key", keyFile),
		startGatewayWith(t, "b", url, "--secrets-key", keyFile),
	}
	t.Logf("2 servers and 2 gateways up in %v", time.Since(started).Round(time.Millisecond))

	sf := hostSSHApp(t, servers[0])
	f := sf.fixture

	// Four SSH builds, started through either server; each runner takes
	// two (--max-builds 2). Build i's tunnel lands on gateway i%2.
	const n = 4
	ids := make([]int64, n)
	for i := range ids {
		lb.SetBackends(gws[i%2].addr, gws[1-i%2].addr)
		r := servers[i%2].Hangar("build", "start", "demo", "--json", "--workflow", "hold", "--ssh")
		if r.Code != 0 {
			t.Fatalf("build start through server %d: %s", i%2, r.Stderr)
		}
		var b build.Build
		if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
			t.Fatalf("build start: %v: %s", err, r.Stdout)
		}
		ids[i] = b.ID
		t.Cleanup(func() { servers[1].Hangar("build", "cancel", fmt.Sprint(b.ID)) })
		waitLog(t, f, b.ID, "holding")
		sf.waitSSH(b.ID)
		waitRouteHolder(t, url, build.Alias(b.ID), gws[i%2].id)
	}
	owner := map[int64]int{} // build -> index of the server whose runner runs it
	runs := [2]int{}
	for id, name := range buildRunners(t, url) {
		i, ok := names[name]
		if !ok {
			t.Fatalf("build %d claimed by %q, not a server's runner", id, name)
		}
		owner[id] = i
		runs[i]++
	}
	if runs[0] != 2 || runs[1] != 2 {
		t.Fatalf("builds per server's runner: %v, want 2 and 2", runs)
	}

	// Into each build, through each gateway, with the script and the
	// ssh_config of the replica that does not run it.
	scripts := map[int64]string{}
	for _, id := range ids {
		other := servers[1-owner[id]]
		r := other.Hangar("build", "ssh-script", fmt.Sprint(id))
		if r.Code != 0 {
			t.Fatalf("ssh-script of build %d from the other replica: %s", id, r.Stderr)
		}
		if !strings.Contains(r.Stdout, "@cert-authority hangar-gateway ssh-ed25519 ") || !strings.Contains(r.Stdout, "StrictHostKeyChecking yes") {
			t.Fatalf("build %d's script does not pin the host CA strictly:\n%s", id, r.Stdout)
		}
		scripts[id] = filepath.Join(t.TempDir(), "connect.sh")
		if err := os.WriteFile(scripts[id], []byte(r.Stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, g := range gws {
			lb.SetBackends(g.addr)
			want := fmt.Sprintf("in-%d-via-%s", id, g.id)
			if r := sf.run("bash", scripts[id], "echo", want); r.Code != 0 || r.Stdout != want+"\n" {
				t.Fatalf("build %d (runner of server %d), script from server %d, through gateway %s: exit %d, stdout %q, stderr %q",
					id, owner[id], 1-owner[id], g.id, r.Code, r.Stdout, r.Stderr)
			}
		}
		cfgDir := filepath.Join(t.TempDir(), "cfg")
		if r := other.Hangar("build", "ssh-config", fmt.Sprint(id), "--dir", cfgDir); r.Code != 0 {
			t.Fatalf("ssh-config of build %d from the other replica: %s", id, r.Stderr)
		}
		want := fmt.Sprintf("config-%d", id)
		if r := sf.run("ssh", "-F", filepath.Join(cfgDir, "config"), build.Alias(id), "echo "+want); r.Code != 0 || r.Stdout != want+"\n" {
			t.Fatalf("build %d through the other replica's ssh_config: exit %d, stdout %q, stderr %q", id, r.Code, r.Stdout, r.Stderr)
		}
	}

	// Extend, asked of the replica that does not run the build, reaches
	// the build's runner through the store.
	for _, id := range ids {
		if _, err := servers[1-owner[id]].Client().ExtendSSH(ctx, id, 5*time.Minute); err != nil {
			t.Fatalf("ssh-extend of build %d through the other replica: %v", id, err)
		}
		evs, err := servers[owner[id]].Client().Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		extended := false
		for _, ev := range evs {
			extended = extended || ev.Kind == "ssh_extended"
		}
		if !extended {
			t.Fatalf("build %d: no ssh_extended event after an extension through the other replica: %+v", id, evs)
		}
	}

	// The browser terminal: its ticket, issued by the replica that runs
	// the build, opens the terminal through the other one.
	{
		id := ids[0]
		tk, err := servers[owner[id]].Client().TerminalTicket(ctx, id)
		if err != nil {
			t.Fatalf("terminal ticket of build %d: %v", id, err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		ws, _, err := websocket.Dial(wctx, "ws"+strings.TrimPrefix(servers[1-owner[id]].URL, "http")+tk.URL, nil)
		if err != nil {
			t.Fatalf("build %d's terminal through the other replica: %v", id, err)
		}
		want := fmt.Sprintf("term-%d-%d", id, 6*7)
		in, _ := json.Marshal(map[string]string{"type": "input", "data": fmt.Sprintf("echo term-%d-$((6*7))\n", id)})
		if err := ws.Write(wctx, websocket.MessageText, in); err != nil {
			t.Fatal(err)
		}
		var screen strings.Builder
		for !strings.Contains(screen.String(), want) {
			_, data, err := ws.Read(wctx)
			if err != nil {
				t.Fatalf("build %d's terminal through the other replica: waiting for %q: %v\nscreen:\n%s", id, want, err, screen.String())
			}
			screen.Write(data)
		}
		ws.CloseNow()
		cancel()
	}

	// Gateway a dies: its builders' tunnels come back through b, and new
	// connections through the one address get in.
	lb.SetBackends(gws[0].addr, gws[1].addr)
	if err := gws[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-gws[0].exited
	killed := time.Now()
	for _, id := range ids {
		waitRouteHolder(t, url, build.Alias(id), "b")
	}
	t.Logf("every tunnel was on gateway b %v after gateway a was killed", time.Since(killed).Round(time.Millisecond))
	for _, id := range ids {
		want := fmt.Sprintf("after-gw-%d", id)
		if r := sf.run("bash", scripts[id], "echo", want); r.Code != 0 || r.Stdout != want+"\n" {
			t.Fatalf("build %d after gateway a died: exit %d, stdout %q, stderr %q", id, r.Code, r.Stdout, r.Stderr)
		}
	}

	// Server 0 dies: the API answers through server 1, and server 0's
	// builds fail, naming its runner, within the bound.
	dead, live := servers[0], servers[1]
	deadName := ""
	for name, i := range names {
		if i == 0 {
			deadName = name
		}
	}
	dead.Kill()
	killed = time.Now()
	if _, err := live.Client().Builds(ctx, "demo", 10); err != nil {
		t.Fatalf("the API through the remaining server: %v", err)
	}
	host, _ := os.Hostname()
	for _, id := range ids {
		if owner[id] != 0 {
			continue
		}
		var b *build.Build
		for {
			var err error
			b, err = live.Client().Build(ctx, id)
			if err != nil {
				t.Fatalf("build %d through the remaining server: %v", id, err)
			}
			if b.Status.Done() {
				break
			}
			if time.Since(killed) > staleBound+10*time.Second {
				t.Fatalf("build %d of the killed server is %s %v after the kill", id, b.Status, time.Since(killed).Round(time.Second))
			}
			time.Sleep(200 * time.Millisecond)
		}
		took := time.Since(killed)
		want := fmt.Sprintf("runner %s on host %s stopped answering at ", deadName, host)
		if b.Status != build.Failed || !strings.HasPrefix(b.Message, want) {
			t.Errorf("build %d of the killed server: %s %q, want failed %q...", id, b.Status, b.Message, want)
		}
		if took > staleBound {
			t.Errorf("build %d failed %v after its server was killed, want within %v", id, took.Round(time.Second), staleBound)
		}
		t.Logf("build %d of the killed server failed %v after the kill: %s", id, took.Round(100*time.Millisecond), b.Message)
		// Its access is closed on the gateways (its machine, left by the
		// killed server, still runs until that server starts again).
		wantRefused := "hangar: " + app.ReasonRunnerStale
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := sf.run("bash", scripts[id], "true")
			if r.Code != 0 && strings.Contains(r.Stderr, wantRefused) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("build %d ended, its SSH still: exit %d, stderr %q; want refused %q", id, r.Code, r.Stderr, wantRefused)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Server 1's builds go on: SSH still gets in.
	for _, id := range ids {
		if owner[id] != 1 {
			continue
		}
		want := fmt.Sprintf("after-server-%d", id)
		if r := sf.run("bash", scripts[id], "echo", want); r.Code != 0 || r.Stdout != want+"\n" {
			t.Fatalf("build %d of the remaining server: exit %d, stdout %q, stderr %q", id, r.Code, r.Stdout, r.Stderr)
		}
	}
	// The killed server, started again on its data dir, removes the
	// machines it left; then it is stopped at cleanup.
	harness.StartServer(t, harness.Options{Driver: "host", Data: dead.Data, Args: args})
	for _, id := range ids {
		if owner[id] != 0 {
			continue
		}
		dir := filepath.Join(dead.Data, "machines", build.Alias(id))
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the restarted server left its machine %s: %v", dir, err)
		}
		if pids := procsIn(dir); len(pids) > 0 {
			t.Errorf("the restarted server left processes %v of its machine %s", pids, dir)
		}
	}
	t.Logf("whole test: %v", time.Since(started).Round(time.Second))
}
