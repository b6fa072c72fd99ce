package store

import (
	"context"
	"errors"
	"fmt"
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
	// 2500 lines in chunks of 1 to 7 lines, steps changing between chunks.
	var chunks []build.LogChunk
	for seq := 1; seq <= 2500; {
		n := min(1+seq%7, 2501-seq)
		var data []byte
		for i := 0; i < n; i++ {
			data = fmt.Appendf(data, "line %d\n", seq+i)
		}
		chunks = append(chunks, build.LogChunk{Seq: int64(seq), Lines: n, Step: seq % 3, Time: time.Now(), Data: data})
		seq += n
	}
	if err := s.AppendLog(ctx, b.ID, chunks); err != nil {
		t.Fatal(err)
	}
	for _, page := range []struct {
		after int64
		limit int
		first int64
		n     int
	}{
		{0, 10000, 1, 2500},
		{1000, 1000, 1001, 1000},
		{1001, 3, 1002, 3},
		{2499, 10, 2500, 1},
		{2500, 10, 0, 0},
	} {
		got, err := s.Logs(ctx, b.ID, page.after, page.limit)
		if err != nil || len(got) != page.n {
			t.Fatalf("after %d limit %d: %d lines, %v", page.after, page.limit, len(got), err)
		}
		for i, l := range got {
			seq := page.first + int64(i)
			if l.Seq != seq || l.Text != fmt.Sprintf("line %d", seq) {
				t.Fatalf("after %d: line %d = %+v", page.after, i, l)
			}
		}
	}
	if err := s.AppendLog(ctx, b.ID, chunks[:1]); err == nil {
		t.Fatal("a repeated line number was accepted")
	}
}
