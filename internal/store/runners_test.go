package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// queue adds a queued build of app "a" (made if missing) with spec.
func queue(t *testing.T, s *Store, spec build.Spec, ssh bool) int64 {
	t.Helper()
	ctx := context.Background()
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil && !errors.Is(err, ErrExists) {
		t.Fatal(err)
	}
	data, _ := json.Marshal(spec)
	b := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}, SSH: build.SSH{Enabled: ssh}}
	if err := s.CreateBuild(ctx, b, data); err != nil {
		t.Fatal(err)
	}
	return b.ID
}

// TestRunnerClaims: a runner claims the builds of its labels (a spec
// without an instance type is "linux"), none with SSH when it runs none,
// records itself on them, and sees the cancel requests of its own builds.
func TestRunnerClaims(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		plain := queue(t, s, build.Spec{}, false)
		x2 := queue(t, s, build.Spec{InstanceType: "linux_x2"}, false)
		withSSH := queue(t, s, build.Spec{InstanceType: "linux"}, true)
		onFailure := queue(t, s, build.Spec{InstanceType: "linux", SSHOnFailure: true}, false)
		one, err := s.CreateRunner(ctx, "one", "hash-one")
		if err != nil {
			t.Fatal(err)
		}
		two, err := s.CreateRunner(ctx, "two", "hash-two")
		if err != nil {
			t.Fatal(err)
		}
		x2Only := s.ForRunner(Claim{Runner: one.ID, Labels: []string{"linux_x2"}, NoSSH: true})
		noSSH := s.ForRunner(Claim{Runner: two.ID, Labels: []string{"linux", "linux_x2"}, NoSSH: true})
		if b, _, err := x2Only.ClaimBuild(ctx); err != nil || b.ID != x2 {
			t.Fatalf("linux_x2 runner claimed %v, %v; want build %d", b, err, x2)
		}
		if _, _, err := x2Only.ClaimBuild(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("linux_x2 runner's second claim: %v", err)
		}
		if b, _, err := noSSH.ClaimBuild(ctx); err != nil || b.ID != plain {
			t.Fatalf("runner without SSH claimed %v, %v; want build %d", b, err, plain)
		}
		if _, _, err := noSSH.ClaimBuild(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("runner without SSH claimed an SSH build: %v", err)
		}
		if _, _, err := s.ForRunner(Claim{Runner: two.ID, Labels: []string{}}).ClaimBuild(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("runner with no labels claimed: %v", err)
		}
		any := s.ForRunner(Claim{Runner: two.ID})
		for _, want := range []int64{withSSH, onFailure} {
			if b, _, err := any.ClaimBuild(ctx); err != nil || b.ID != want {
				t.Fatalf("runner of everything claimed %v, %v; want build %d", b, err, want)
			}
		}
		for id, want := range map[int64]int64{x2: one.ID, plain: two.ID, withSSH: two.ID} {
			if got, err := s.BuildRunner(ctx, id); err != nil || got != want {
				t.Errorf("build %d's runner: %d, %v; want %d", id, got, err, want)
			}
		}
		for _, id := range []int64{x2, plain} {
			if _, err := s.CancelBuild(ctx, id, "canceled"); err != nil {
				t.Fatal(err)
			}
		}
		if ids, err := x2Only.CancelRequests(ctx); err != nil || len(ids) != 1 || ids[0] != x2 {
			t.Errorf("runner one's cancel requests: %v, %v; want [%d]", ids, err, x2)
		}
		if ids, err := noSSH.CancelRequests(ctx); err != nil || len(ids) != 1 || ids[0] != plain {
			t.Errorf("runner two's cancel requests: %v, %v; want [%d]", ids, err, plain)
		}
		list, err := s.Runners(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "one" || list[0].Running != 1 || list[1].Running != 3 {
			t.Errorf("runners: %+v, %v", list, err)
		}
	})
}

// TestRunnerTokens: a runner's name is unique while it is not revoked;
// revoking it ends its token and fails its running builds, saying so;
// its name can then be given a new token.
func TestRunnerTokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		r, err := s.CreateRunner(ctx, "r1", "h1")
		if err != nil || r.Name != "r1" || r.Server {
			t.Fatalf("create: %+v, %v", r, err)
		}
		if _, err := s.CreateRunner(ctx, "r1", "h2"); !errors.Is(err, ErrExists) {
			t.Fatalf("second runner r1: %v", err)
		}
		if got, err := s.RunnerByToken(ctx, "h1"); err != nil || got.ID != r.ID {
			t.Fatalf("by token: %+v, %v", got, err)
		}
		queue(t, s, build.Spec{}, false)
		b, _, err := s.ForRunner(Claim{Runner: r.ID}).ClaimBuild(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeRunner(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeRunner(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("revoke an unknown runner: %v", err)
		}
		if _, err := s.RunnerByToken(ctx, "h1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a revoked token still finds its runner: %v", err)
		}
		got, _ := s.Build(ctx, b.ID)
		if got.Status != build.Failed || got.Message != "runner r1 was revoked during the build" {
			t.Errorf("the revoked runner's build: %s %q", got.Status, got.Message)
		}
		again, err := s.CreateRunner(ctx, "r1", "h3")
		if err != nil || again.ID != r.ID || again.RevokedAt != nil {
			t.Errorf("r1 again: %+v, %v", again, err)
		}
	})
}

// TestRunnerRestart: a runner starting fails only its own interrupted
// builds (and those claimed by no runner), not another runner's.
func TestRunnerRestart(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		mine, err := s.ServerRunner(ctx, "server-a")
		if err != nil {
			t.Fatal(err)
		}
		if again, err := s.ServerRunner(ctx, "server-a"); err != nil || again != mine {
			t.Fatalf("server runner again: %d, %v (was %d)", again, err, mine)
		}
		theirs, err := s.ServerRunner(ctx, "server-b")
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			queue(t, s, build.Spec{}, false)
		}
		m, _, _ := s.ForRunner(Claim{Runner: mine}).ClaimBuild(ctx)
		o, _, _ := s.ForRunner(Claim{Runner: theirs}).ClaimBuild(ctx)
		legacy, _, _ := s.ClaimBuild(ctx)
		n, err := s.FailRunnerBuilds(ctx, mine, "interrupted")
		if err != nil || n != 2 {
			t.Fatalf("failed %d, %v; want 2", n, err)
		}
		for id, want := range map[int64]build.Status{m.ID: build.Failed, legacy.ID: build.Failed, o.ID: build.Preparing} {
			if got, _ := s.Build(ctx, id); got.Status != want {
				t.Errorf("build %d: %s, want %s", id, got.Status, want)
			}
		}
	})
}

// TestStaleRunners: the builds of a runner silent for too long fail with
// a message naming it, its host and when it was last seen, once however
// many servers sweep; a runner that answers keeps its builds.
func TestStaleRunners(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		silent, _ := s.CreateRunner(ctx, "silent", "h1")
		alive, _ := s.CreateRunner(ctx, "alive", "h2")
		if err := s.StartRunner(ctx, silent.ID, RunnerInfo{Host: "host-1", Labels: []string{"linux"}, Capacity: 2, Driver: "host"}, "s1", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.StartRunner(ctx, alive.ID, RunnerInfo{Host: "host-2"}, "s2", time.Minute); err != nil {
			t.Fatal(err)
		}
		var silentBuilds []int64
		for range 4 {
			queue(t, s, build.Spec{}, false)
			b, _, _ := s.ForRunner(Claim{Runner: silent.ID}).ClaimBuild(ctx)
			silentBuilds = append(silentBuilds, b.ID)
		}
		queue(t, s, build.Spec{}, false)
		kept, _, _ := s.ForRunner(Claim{Runner: alive.ID}).ClaimBuild(ctx)

		if got, err := s.FailStaleRunners(ctx, time.Hour); err != nil || len(got) != 0 {
			t.Fatalf("within the bound: %+v, %v", got, err)
		}
		// The silent runner was last seen an hour ago.
		if _, err := s.db.ExecContext(ctx, `UPDATE runners SET last_seen = last_seen - 3600000 WHERE id = $1`, silent.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.RunnerHeartbeat(ctx, alive.ID, "s2"); err != nil {
			t.Fatal(err)
		}
		var seen time.Time
		list, _ := s.Runners(ctx)
		for _, r := range list {
			if r.Name == "silent" {
				seen = *r.LastSeen
				if r.Host != "host-1" || r.Capacity != 2 || strings.Join(r.Labels, ",") != "linux" || r.Driver != "host" {
					t.Errorf("silent runner as listed: %+v", r)
				}
			}
		}
		// Two servers sweep at once.
		other := db.open(t)
		var wg sync.WaitGroup
		results := make([][]StaleRunner, 2)
		for i, st := range []*Store{s, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				results[i], err = st.FailStaleRunners(ctx, 30*time.Minute)
				if err != nil {
					t.Errorf("sweep: %v", err)
				}
			}()
		}
		wg.Wait()
		failed := map[int64]int{}
		for _, res := range results {
			for _, r := range res {
				for _, id := range r.Builds {
					failed[id]++
				}
			}
		}
		want := StaleMessage("silent", "host-1", seen)
		if !strings.Contains(want, "runner silent on host host-1 stopped answering at ") {
			t.Errorf("message %q", want)
		}
		for _, id := range silentBuilds {
			b, _ := s.Build(ctx, id)
			if b.Status != build.Failed || b.Message != want {
				t.Errorf("build %d: %s %q, want failed %q", id, b.Status, b.Message, want)
			}
			lines, _ := s.Logs(ctx, id, 0, 100)
			if n := strings.Count(linesText(lines), "hangar: "+want); n != 1 || failed[id] != 1 {
				t.Errorf("build %d: failed %d times, %d log lines of it", id, failed[id], n)
			}
		}
		if b, _ := s.Build(ctx, kept.ID); b.Status != build.Preparing {
			t.Errorf("the live runner's build: %s %q", b.Status, b.Message)
		}
	})
}

func linesText(lines []build.LogLine) string {
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(l.Text)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// TestRunnerSessions: a second process with a runner's identity on
// another host is refused while the first answers; on the same host (the
// first is gone: its data dir's lock is free) it takes over, and the first
// learns it was replaced.
func TestRunnerSessions(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		r, _ := s.CreateRunner(ctx, "r", "h")
		if err := s.StartRunner(ctx, r.ID, RunnerInfo{Host: "a"}, "first", time.Minute); err != nil {
			t.Fatal(err)
		}
		var inUse *RunnerInUseError
		if err := s.StartRunner(ctx, r.ID, RunnerInfo{Host: "b"}, "second", time.Minute); !errors.As(err, &inUse) || inUse.Host != "a" {
			t.Fatalf("second process on another host: %v", err)
		}
		if err := s.StartRunner(ctx, r.ID, RunnerInfo{Host: "a"}, "third", time.Minute); err != nil {
			t.Fatalf("on the same host: %v", err)
		}
		if err := s.RunnerHeartbeat(ctx, r.ID, "first"); !errors.Is(err, ErrReplaced) {
			t.Errorf("the replaced process's heartbeat: %v", err)
		}
		if err := s.RunnerHeartbeat(ctx, r.ID, "third"); err != nil {
			t.Errorf("heartbeat: %v", err)
		}
		// Silent past the bound, another host may take over.
		if err := s.StartRunner(ctx, r.ID, RunnerInfo{Host: "b"}, "fourth", -time.Hour); err != nil {
			t.Errorf("after the bound: %v", err)
		}
	})
}

// TestQueueChanges: a queued build and a cancel request made through one
// Store wake the QueueChanges subscribers of another (a runner's wait);
// the log of a running build does not.
func TestQueueChanges(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		server, runner := twoStores(t, db)
		wake, unsub := runner.Subscribe(QueueChanges)
		defer unsub()
		id := queue(t, server, build.Spec{}, false)
		awaitWake(t, wake, "build queued")
		if b, _, err := runner.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v", b, err)
		}
		changed, unsubBuild := runner.Subscribe(id)
		defer unsubBuild()
		if err := server.AppendLog(ctx, id, []build.LogChunk{{Seq: 1, Lines: 1, Time: time.Now(), Data: []byte("x\n")}}); err != nil {
			t.Fatal(err)
		}
		awaitWake(t, changed, "the log, for the build's subscribers")
		select {
		case <-wake:
			t.Fatal("a running build's log woke the runners")
		default:
		}
		if _, err := server.CancelBuild(ctx, id, "canceled"); err != nil {
			t.Fatal(err)
		}
		awaitWake(t, wake, "cancel requested")
	})
}

// awaitWake waits up to 30 s for a wake-up on ch.
func awaitWake(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no wake-up within 30 s: %s", what)
	}
}
