package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// staleBound is the bound: a runner that stops answering has its
// builds failed within it (the servers' sweep: 20 s of silence, swept
// every 5 s).
const staleBound = 30 * time.Second

// replicaWorkflow's builds print a line, then wait until the file {{release}}
// exists.
const replicaWorkflow = `
workflows:
  hold:
    scripts:
      - name: Hold
        script: |
          echo "holding-$FCI_BUILD_ID"
          while [ ! -e {{release}} ]; do sleep 0.2; done
          echo "released-$FCI_BUILD_ID"
`

// followed is what a build's live log (followed through one server)
// showed.
type followed struct {
	holding chan struct{} // closed at its "holding-N" line
	ended   chan struct{} // closed when the stream ended
	mu      sync.Mutex
	lines   []string     // guarded by mu
	last    *build.Build // guarded by mu; the build as last shown
	err     error        // set before ended is closed
	endedAt time.Time    // set before ended is closed
}

// follow follows build id's log through c until it ends.
func follow(ctx context.Context, t *testing.T, c *api.Client, id int64) *followed {
	f := &followed{holding: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(f.ended)
		defer func() { f.endedAt = time.Now() }()
		var once sync.Once
		f.err = c.Follow(ctx, id, func(ev api.LogEvent) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			switch {
			case ev.Line != nil:
				f.lines = append(f.lines, ev.Line.Text)
				if ev.Line.Text == fmt.Sprintf("holding-%d", id) {
					once.Do(func() { close(f.holding) })
				}
			case ev.Build != nil:
				f.last = ev.Build
			}
			return nil
		})
	}()
	return f
}

func (f *followed) build() *build.Build {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *followed) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.lines, "\n")
}

// TestReplicasAndRunners: on one PostgreSQL, two servers (one API only,
// --no-runner) and two runners on "other hosts" (hangar runner, host
// driver). Builds spread over every runner; the live logs, followed
// through the API-only server, show what the runners write through the
// other server. One runner and the server with a runner are killed: their
// builds fail with a reason naming them within the bound, the API answers
// through the remaining server, the other runner moves to it and finishes
// its builds. The killed runner, started again, removes the machines it
// left; a revoked runner stops.
func TestReplicasAndRunners(t *testing.T) {
	url := pgtest.DB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{"--database", url, "--no-runner"}})
	b := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{"--database", url, "--max-builds", "1"}})
	// Each server made its own admin token; neither replaced the other's.
	for _, s := range []*harness.Server{a, b} {
		for _, tok := range []string{a.Token, b.Token} {
			if _, err := s.ClientWith(tok).Apps(ctx); err != nil {
				t.Fatalf("an admin token at %s: %v", s.URL, err)
			}
		}
	}
	tokens := map[string]string{}
	for _, name := range []string{"r1", "r2"} {
		r := a.Hangar("runner", "token", "create", name)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "hrt_") {
			t.Fatalf("runner token create %s: %d %s %s", name, r.Code, r.Stdout, r.Stderr)
		}
		tokens[name] = strings.TrimSpace(r.Stdout)
	}
	if _, err := a.ClientWith(tokens["r1"]).Apps(ctx); api.StatusOf(err) != 401 {
		t.Errorf("a runner token at the user API: %v", err)
	}
	r1 := harness.StartRunner(t, a.URL+","+b.URL, tokens["r1"], "", "--capacity", "2")
	r2 := harness.StartRunner(t, b.URL+","+a.URL, tokens["r2"], "", "--capacity", "2")
	waitRunners(t, a, map[string]bool{"r1": true, "r2": true})

	release := filepath.Join(t.TempDir(), "release")
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(replicaWorkflow, "{{release}}", release)})
	if r := a.Hangar("app", "add", "demo", "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	// Five builds fill the five slots: two of each runner, one of b's.
	follows := map[int64]*followed{}
	for i := range 5 {
		s := []*harness.Server{a, b}[i%2]
		bld, err := s.Client().StartBuild(ctx, api.StartRequest{App: "demo", Workflow: "hold"})
		if err != nil {
			t.Fatal(err)
		}
		follows[bld.ID] = follow(ctx, t, a.Client(), bld.ID)
	}
	for id, f := range follows {
		select {
		case <-f.holding:
		case <-f.ended:
			t.Fatalf("build %d ended before it held: %v\n%s", id, f.err, f.log())
		case <-time.After(2 * time.Minute):
			t.Fatalf("build %d did not start within 2 minutes:\n%s", id, f.log())
		}
	}
	owners := buildRunners(t, url)
	count := map[string]int{}
	for id := range follows {
		count[owners[id]]++
	}
	var bRunner string
	for name, n := range count {
		if strings.HasPrefix(name, "server-") {
			bRunner = name
			if n != 1 {
				t.Errorf("server b's runner runs %d builds, want 1", n)
			}
		}
	}
	if count["r1"] != 2 || count["r2"] != 2 || bRunner == "" {
		t.Fatalf("builds by runner: %v, want r1 2, r2 2, b's own 1", count)
	}
	list := a.Hangar("runner", "list")
	for _, want := range []string{"r1", "r2", bRunner, "answering"} {
		if !strings.Contains(list.Stdout, want) {
			t.Errorf("runner list: no %q in:\n%s", want, list.Stdout)
		}
	}

	// r1 and server b (with its runner) die.
	host, _ := os.Hostname()
	killed := time.Now()
	r1.Kill()
	b.Kill()
	var leftover []string // r1's machines
	for id, f := range follows {
		if owners[id] == "r1" {
			leftover = append(leftover, filepath.Join(r1.Data, "machines", build.Alias(id)))
		}
		if owners[id] == "r2" {
			continue
		}
		select {
		case <-f.ended:
		case <-time.After(staleBound + 10*time.Second):
			t.Fatalf("build %d of %s did not end within %s of the kill", id, owners[id], staleBound+10*time.Second)
		}
		took := f.endedAt.Sub(killed)
		got := f.build()
		want := fmt.Sprintf("runner %s on host %s stopped answering at ", owners[id], host)
		if got == nil || got.Status != build.Failed || !strings.HasPrefix(got.Message, want) {
			t.Errorf("build %d of %s: %+v, want failed %q...", id, owners[id], got, want)
		}
		if took > staleBound {
			t.Errorf("build %d of %s failed %s after its runner died, want within %s", id, owners[id], took.Round(time.Second), staleBound)
		}
		t.Logf("build %d of killed runner %s failed %s after the kill: %s", id, owners[id], took.Round(100*time.Millisecond), got.Message)
	}
	// The API answers through a.
	if _, err := a.Client().Builds(ctx, "demo", 10); err != nil {
		t.Errorf("the API through the remaining server: %v", err)
	}

	// r1 comes back and removes the machines it left.
	// (The host driver's builder died with its runner; its step's
	// processes, in the machine's directory, did not.)
	for _, dir := range leftover {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the killed runner's machine %s: %v (want it left until the runner comes back)", dir, err)
		}
		if len(procsIn(dir)) == 0 {
			t.Errorf("no process left in the killed runner's machine %s", dir)
		}
	}
	harness.StartRunner(t, a.URL, tokens["r1"], r1.Data, "--capacity", "2")
	waitRunners(t, a, map[string]bool{"r1": true, "r2": true})
	for _, dir := range leftover {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the runner came back and left its machine %s: %v", dir, err)
		}
		if pids := procsIn(dir); len(pids) > 0 {
			t.Errorf("the runner came back and left processes %v of its machine %s", pids, dir)
		}
	}

	// r2's builds go on, through a, and finish.
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for id, f := range follows {
		if owners[id] != "r2" {
			continue
		}
		select {
		case <-f.ended:
		case <-time.After(2 * time.Minute):
			t.Fatalf("r2's build %d did not end within 2 minutes of the release", id)
		}
		if got := f.build(); got == nil || got.Status != build.Finished || !strings.Contains(f.log(), fmt.Sprintf("released-%d", id)) {
			t.Errorf("r2's build %d: %+v, log:\n%s", id, got, f.log())
		}
	}
	if !strings.Contains(r2.Log(), "moved to another server") {
		t.Errorf("r2 did not move to the remaining server:\n%s", r2.Log())
	}

	// A revoked runner stops.
	if r := a.Hangar("runner", "revoke", "r2"); r.Code != 0 {
		t.Fatalf("runner revoke: %s", r.Stderr)
	}
	select {
	case <-r2.Exited():
	case <-time.After(30 * time.Second):
		t.Errorf("the revoked runner still runs:\n%s", r2.Log())
	}
}

// waitRunners waits until the runners named in want answer (runner list
// through s).
func waitRunners(t *testing.T, s *harness.Server, want map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := s.Client().Runners(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range list {
			if want[r.Name] && r.Answering {
				n++
			}
		}
		if n == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runners %v not all answering within a minute: %+v", want, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// buildRunners maps builds to the names of the runners that claimed them.
func buildRunners(t *testing.T, url string) map[int64]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT b.id, r.name FROM builds b JOIN runners r ON r.id = b.runner_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			t.Fatal(err)
		}
		out[id] = name
	}
	return out
}

// procsIn returns the processes whose working directory is dir or below.
func procsIn(dir string) []string {
	var pids []string
	cwds, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, p := range cwds {
		if cwd, err := os.Readlink(p); err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}
