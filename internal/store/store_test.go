package store

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAppsAndBuilds(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate app: %v", err)
	}
	if _, err := s.App(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown app: %v", err)
	}
	// Numbers are per app and unique under concurrency.
	var wg sync.WaitGroup
	ids := make(chan int64, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := &build.Build{App: "a", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c", Status: build.Queued, Trigger: build.Manual, MaxDuration: 60, Steps: build.NewSteps(nil)}
			if err := s.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
				t.Errorf("create build: %v", err)
				return
			}
			ids <- b.Number
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for n := range ids {
		if seen[n] || n < 1 || n > 20 {
			t.Errorf("build number %d repeated or out of range", n)
		}
		seen[n] = true
	}

	wake, unsub := s.Subscribe(0)
	defer unsub()
	b, spec, err := s.ClaimBuild(ctx)
	if err != nil || b.Status != build.Preparing || b.StartedAt == nil || string(spec) != "{}" {
		t.Fatalf("claim: %+v %s %v", b, spec, err)
	}
	select {
	case <-wake:
	case <-time.After(time.Second):
		t.Fatal("no notification after claim")
	}
	now := time.Now().UTC()
	b.Status, b.FinishedAt = build.Finished, &now
	if ok, err := s.UpdateBuild(ctx, b); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	// An ended build never changes again.
	b.Status = build.Building
	if ok, _ := s.UpdateBuild(ctx, b); ok {
		t.Fatal("an ended build was changed")
	}
	got, err := s.Build(ctx, b.ID)
	if err != nil || got.Status != build.Finished || len(got.Steps) != 2 {
		t.Fatalf("read back: %+v %v", got, err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Build(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("build of a deleted app: %v", err)
	}
}

func TestLogs(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
	if err := s.CreateBuild(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	var lines []build.LogLine
	for i := 1; i <= 2500; i++ {
		lines = append(lines, build.LogLine{Seq: int64(i), Step: i % 3, Time: time.Now(), Text: "line"})
	}
	if err := s.AppendLogs(ctx, b.ID, lines); err != nil {
		t.Fatal(err)
	}
	got, err := s.Logs(ctx, b.ID, 1000, 1000)
	if err != nil || len(got) != 1000 || got[0].Seq != 1001 || got[999].Seq != 2000 {
		t.Fatalf("page: %d lines, %v", len(got), err)
	}
	if err := s.AppendLogs(ctx, b.ID, lines[:1]); err == nil {
		t.Fatal("a repeated seq was accepted")
	}
}
