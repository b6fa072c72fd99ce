package store

import (
	"context"
	"errors"
	"testing"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestDeliveries: a delivery id is new once per app; its result is kept;
// a forgotten one is new again; deleting the app deletes its deliveries.
func TestDeliveries(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		for _, name := range []string{"a", "b"} {
			if err := s.CreateApp(ctx, &App{Name: name, Repo: "/r/" + name}); err != nil {
				t.Fatal(err)
			}
		}
		for _, tt := range []struct {
			app, id string
			fresh   bool
		}{{"a", "d1", true}, {"a", "d1", false}, {"b", "d1", true}, {"a", "d2", true}, {"nope", "d3", false}} {
			if got, err := s.AddDelivery(ctx, tt.app, tt.id, "push"); err != nil || got != tt.fresh {
				t.Errorf("AddDelivery(%s, %s) = %v, %v; want %v", tt.app, tt.id, got, err, tt.fresh)
			}
		}
		if err := s.SetDeliveryResult(ctx, "a", "d1", "202: build #1 of w (queued)"); err != nil {
			t.Fatal(err)
		}
		list, err := s.Deliveries(ctx, "a", 10)
		if err != nil || len(list) != 2 {
			t.Fatalf("deliveries of a: %v %+v", err, list)
		}
		for _, d := range list {
			if d.ID == "d1" && (d.Result != "202: build #1 of w (queued)" || d.Event != "push") {
				t.Errorf("d1: %+v", d)
			}
		}
		if err := s.ForgetDelivery(ctx, "a", "d1"); err != nil {
			t.Fatal(err)
		}
		if fresh, err := s.AddDelivery(ctx, "a", "d1", "push"); err != nil || !fresh {
			t.Errorf("a forgotten delivery is not new: %v %v", fresh, err)
		}
		if err := s.DeleteApp(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if list, _ := s.Deliveries(ctx, "b", 10); len(list) != 0 {
			t.Errorf("deliveries of a deleted app: %+v", list)
		}
	})
}

// TestLastSuccessfulAndActiveWebhookBuilds: what a changeset compares with
// and what cancel_previous_builds cancels.
func TestLastSuccessfulAndActiveWebhookBuilds(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.LastSuccessfulCommit(ctx, "a", "w", "main"); !errors.Is(err, ErrNotFound) {
			t.Errorf("no builds: %v", err)
		}
		add := func(wf, branch, commit string, st build.Status, tr build.Trigger) *build.Build {
			b := &build.Build{App: "a", Workflow: wf, WorkflowName: wf, Branch: branch, Commit: commit, Status: st, Trigger: tr,
				MaxDuration: 60, Steps: build.NewSteps(nil)}
			if err := s.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			return b
		}
		add("w", "main", "c1", build.Finished, build.Manual)
		ok := add("w", "main", "c2", build.Finished, build.Webhook)
		add("w", "main", "c3", build.Failed, build.Webhook)
		add("other", "main", "c4", build.Finished, build.Webhook)
		add("w", "dev", "c5", build.Finished, build.Webhook)
		if c, n, err := s.LastSuccessfulCommit(ctx, "a", "w", "main"); err != nil || c != "c2" || n != ok.Number {
			t.Errorf("last successful: %s #%d %v", c, n, err)
		}
		q1 := add("w", "main", "c6", build.Queued, build.Webhook)
		add("w", "main", "c7", build.Queued, build.Manual)
		q2 := add("w", "main", "c8", build.Queued, build.Webhook)
		ids, err := s.ActiveWebhookBuilds(ctx, "a", "w", "main")
		if err != nil || len(ids) != 2 || ids[0] != q1.ID || ids[1] != q2.ID {
			t.Errorf("active webhook builds: %v %v", ids, err)
		}
	})
}
