package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestGatewayAccess: the access state a runner writes is what gateways
// read, a Disconnect counts only for closed access, Forget drops only a
// closed build's access for its key, and each change wakes the
// gateways' subscribers of another Store (another process), never those
// of every build.
func TestGatewayAccess(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		runner, gw := twoStores(t, db)
		changes, unsub := gw.Subscribe(GatewayAccessChanges)
		defer unsub()
		builds, unsub := gw.Subscribe(0)
		defer unsub()
		wait := func(what string) {
			t.Helper()
			select {
			case <-changes:
			case <-time.After(30 * time.Second):
				t.Fatalf("no wake-up within 30 s: %s", what)
			}
		}
		if err := runner.SetGatewayAccess(ctx, "build-7", "ssh-ed25519 AAAA", true, ""); err != nil {
			t.Fatal(err)
		}
		wait("access opened")
		a, err := gw.GatewayAccessOf(ctx, "build-7")
		if err != nil || !a.Open || a.Key != "ssh-ed25519 AAAA" || a.Disconnects != 0 {
			t.Fatalf("after open: %+v, %v", a, err)
		}
		// A Disconnect while access is open does nothing.
		if err := runner.DisconnectGateway(ctx, "build-7"); err != nil {
			t.Fatal(err)
		}
		if a, _ := gw.GatewayAccessOf(ctx, "build-7"); a.Disconnects != 0 {
			t.Errorf("disconnect of open access counted: %+v", a)
		}
		if err := runner.SetGatewayAccess(ctx, "build-7", "", false, "the build finished"); err != nil {
			t.Fatal(err)
		}
		wait("access closed")
		if err := runner.DisconnectGateway(ctx, "build-7"); err != nil {
			t.Fatal(err)
		}
		wait("disconnect")
		all, err := gw.GatewayAccessAll(ctx)
		if err != nil || len(all) != 1 {
			t.Fatalf("all: %+v, %v", all, err)
		}
		if a := all[0]; a.Open || a.Reason != "the build finished" || a.Disconnects != 1 || a.Key != "ssh-ed25519 AAAA" {
			t.Errorf("after close and disconnect: %+v", a)
		}
		// Forget with another key leaves it; with its key drops it.
		if err := runner.ForgetGatewayAccess(ctx, "build-7", "ssh-ed25519 BBBB"); err != nil {
			t.Fatal(err)
		}
		if _, err := gw.GatewayAccessOf(ctx, "build-7"); err != nil {
			t.Errorf("forgotten with another key: %v", err)
		}
		if err := runner.ForgetGatewayAccess(ctx, "build-7", "ssh-ed25519 AAAA"); err != nil {
			t.Fatal(err)
		}
		if _, err := gw.GatewayAccessOf(ctx, "build-7"); !errors.Is(err, ErrNotFound) {
			t.Errorf("after forget: %v, want ErrNotFound", err)
		}
		wait("forget")
		select {
		case <-builds:
			t.Error("a change of gateway access woke the subscribers of every build")
		default:
		}
	})
}

// TestGatewayRoutes: the newest holder of a tunnel wins, only the holder
// renews or removes its route, and an expired route is not returned.
func TestGatewayRoutes(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		now := time.Now()
		if _, err := s.GatewayRouteOf(ctx, "build-1", now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("no route yet: %v", err)
		}
		if err := s.PutGatewayRoute(ctx, GatewayRoute{Alias: "build-1", GatewayID: "a", PeerAddr: "10.0.0.1:2224", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutGatewayRoute(ctx, GatewayRoute{Alias: "build-1", GatewayID: "b", PeerAddr: "10.0.0.2:2224", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		r, err := s.GatewayRouteOf(ctx, "build-1", now)
		if err != nil || r.GatewayID != "b" || r.PeerAddr != "10.0.0.2:2224" {
			t.Fatalf("route: %+v, %v; want gateway b's", r, err)
		}
		// a no longer holds it: its renewal and removal leave b's route.
		if err := s.RenewGatewayRoutes(ctx, "a", []string{"build-1"}, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteGatewayRoute(ctx, "build-1", "a"); err != nil {
			t.Fatal(err)
		}
		r, err = s.GatewayRouteOf(ctx, "build-1", now)
		if err != nil || r.GatewayID != "b" || r.ExpiresAt.After(now.Add(2*time.Minute)) {
			t.Fatalf("route after a's renewal and removal: %+v, %v", r, err)
		}
		if err := s.RenewGatewayRoutes(ctx, "b", []string{"build-1"}, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if r, err := s.GatewayRouteOf(ctx, "build-1", now.Add(30*time.Minute)); err != nil || r.GatewayID != "b" {
			t.Fatalf("renewed route: %+v, %v", r, err)
		}
		if _, err := s.GatewayRouteOf(ctx, "build-1", now.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired route returned: %v", err)
		}
		if err := s.PruneGatewayRoutes(ctx, now.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GatewayRouteOf(ctx, "build-1", now); !errors.Is(err, ErrNotFound) {
			t.Errorf("pruned route returned: %v", err)
		}
		if err := s.PutGatewayRoute(ctx, GatewayRoute{Alias: "build-2", GatewayID: "b", PeerAddr: "x", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteGatewayRoute(ctx, "build-2", "b"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GatewayRouteOf(ctx, "build-2", now); !errors.Is(err, ErrNotFound) {
			t.Errorf("removed route returned: %v", err)
		}
	})
}

// TestGatewayEvents: events a gateway records reach another Store's
// subscribers and read back in order; pruning drops the old ones.
func TestGatewayEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		gw, runner := twoStores(t, db)
		wake, unsub := runner.Subscribe(GatewayEventChanges)
		defer unsub()
		start := time.Now().Add(-time.Second)
		old := &GatewayEvent{Time: start.Add(-time.Hour), GatewayID: "g1", Alias: "build-3", Kind: "connect"}
		if err := gw.AddGatewayEvent(ctx, old); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"connect", "channel", "disconnect"} {
			if err := gw.AddGatewayEvent(ctx, &GatewayEvent{GatewayID: "g1", Alias: "build-3", Kind: k, Remote: "192.0.2.1:5000", Client: "OpenSSH_9.2", Detail: k}); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-wake:
		case <-time.After(30 * time.Second):
			t.Fatal("no wake-up within 30 s for the gateway's events")
		}
		evs, err := runner.GatewayEventsSince(ctx, start)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, ev := range evs {
			kinds = append(kinds, ev.Kind)
			if ev.Alias != "build-3" || ev.GatewayID != "g1" || ev.Remote != "192.0.2.1:5000" || ev.Client != "OpenSSH_9.2" || ev.Detail != ev.Kind {
				t.Errorf("event %+v", ev)
			}
		}
		if len(kinds) != 3 || kinds[0] != "connect" || kinds[1] != "channel" || kinds[2] != "disconnect" {
			t.Errorf("events since the start: %v", kinds)
		}
		if err := runner.PruneGatewayEvents(ctx, start); err != nil {
			t.Fatal(err)
		}
		all, err := runner.GatewayEventsSince(ctx, time.Time{})
		if err != nil || len(all) != 3 {
			t.Errorf("after pruning: %d events, %v; want the 3 recent ones", len(all), err)
		}
	})
}

// twoStores returns two Stores of db as two processes would have them
// (on SQLite, whose one process wakes only its own Store's subscribers,
// one Store twice).
func twoStores(t *testing.T, db testDB) (*Store, *Store) {
	a := db.open(t)
	if !db.postgres {
		return a, a
	}
	return a, db.open(t)
}

// TestGatewayAccessOfEndedBuilds: the open access of a build that ended
// without a revocation (its runner crashed) is closed and disconnected;
// that of a running build stays; closed access goes after a while.
func TestGatewayAccessOfEndedBuilds(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		ended := newBuild(t, s, build.Failed)
		running := &build.Build{App: "a", Status: build.Building, Trigger: build.Manual, Steps: []build.Step{}}
		if err := s.CreateBuild(ctx, running, nil); err != nil {
			t.Fatal(err)
		}
		for _, b := range []*build.Build{ended, running} {
			if err := s.SetGatewayAccess(ctx, build.Alias(b.ID), "k", true, ""); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.CloseEndedGatewayAccess(ctx, "the build has ended")
		if err != nil || n != 1 {
			t.Fatalf("closed %d, %v; want 1", n, err)
		}
		if a, _ := s.GatewayAccessOf(ctx, build.Alias(ended.ID)); a == nil || a.Open || a.Reason != "the build has ended" || a.Disconnects != 1 {
			t.Errorf("the ended build's access: %+v", a)
		}
		if a, _ := s.GatewayAccessOf(ctx, build.Alias(running.ID)); a == nil || !a.Open {
			t.Errorf("the running build's access: %+v", a)
		}
		if err := s.PruneGatewayAccess(ctx, time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GatewayAccessOf(ctx, build.Alias(ended.ID)); err != nil {
			t.Errorf("recently closed access pruned: %v", err)
		}
		if err := s.PruneGatewayAccess(ctx, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GatewayAccessOf(ctx, build.Alias(ended.ID)); !errors.Is(err, ErrNotFound) {
			t.Errorf("closed access not pruned: %v", err)
		}
		if _, err := s.GatewayAccessOf(ctx, build.Alias(running.ID)); err != nil {
			t.Errorf("open access pruned: %v", err)
		}
	})
}

// TestRunnerGatewayEvents: a runner reads the gateways' events of the
// builds it claimed only.
func TestRunnerGatewayEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		mine, err := s.CreateRunner(ctx, "mine", "hash-mine")
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := s.CreateRunner(ctx, "theirs", "hash-theirs")
		if err != nil {
			t.Fatal(err)
		}
		a := queue(t, s, build.Spec{}, true)
		b := queue(t, s, build.Spec{}, true)
		if got, _, err := s.ForRunner(Claim{Runner: mine.ID}).ClaimBuild(ctx); err != nil || got.ID != a {
			t.Fatalf("claim: %v, %v", got, err)
		}
		if got, _, err := s.ForRunner(Claim{Runner: theirs.ID}).ClaimBuild(ctx); err != nil || got.ID != b {
			t.Fatalf("claim: %v, %v", got, err)
		}
		since := time.Now().Add(-time.Second)
		for _, alias := range []string{build.Alias(a), build.Alias(b), "nobody", build.Alias(a), "build-0x1"} {
			if err := s.AddGatewayEvent(ctx, &GatewayEvent{GatewayID: "g", Alias: alias, Kind: "connect"}); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := s.RunnerGatewayEventsSince(ctx, mine.ID, since)
		if err != nil || len(evs) != 2 || evs[0].Alias != build.Alias(a) || evs[1].Alias != build.Alias(a) || evs[0].ID >= evs[1].ID {
			t.Errorf("mine: %+v, %v; want the 2 events of build %d in order", evs, err, a)
		}
		if evs, err := s.RunnerGatewayEventsSince(ctx, mine.ID, time.Now().Add(time.Minute)); err != nil || len(evs) != 0 {
			t.Errorf("since a minute from now: %+v, %v", evs, err)
		}
	})
}
