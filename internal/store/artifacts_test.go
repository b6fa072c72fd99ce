package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestArtifacts: a build's artifacts are listed by name, one per name;
// expired ones are neither listed nor found, and the sweep takes their
// files; deleting the app deletes the rows (the sweep then finds their
// files unnamed).
func TestArtifacts(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		b := newBuild(t, s, build.Finished)
		now := time.Now().UTC().Truncate(time.Millisecond)
		later := now.Add(time.Hour)
		apk := build.Artifact{Name: "build/app.apk", Size: 3, MD5: "m", SHA256: "s", CreatedAt: now, ExpiresAt: later}
		old := build.Artifact{Name: "old.txt", Size: 1, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
		if err := s.AddArtifact(ctx, b.ID, apk, "1/a"); err != nil {
			t.Fatal(err)
		}
		if err := s.AddArtifact(ctx, b.ID, apk, "1/b"); !errors.Is(err, ErrExists) {
			t.Errorf("same name twice: %v", err)
		}
		if err := s.AddArtifact(ctx, b.ID, old, "1/c"); err != nil {
			t.Fatal(err)
		}
		if err := s.AddArtifact(ctx, b.ID+100, apk, "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("artifact of no build: %v", err)
		}
		list, err := s.Artifacts(ctx, b.ID)
		if err != nil || !reflect.DeepEqual(list, []build.Artifact{apk}) {
			t.Errorf("Artifacts = %+v, %v", list, err)
		}
		got, file, err := s.Artifact(ctx, b.ID, "build/app.apk")
		if err != nil || file != "1/a" || !reflect.DeepEqual(got, apk) {
			t.Errorf("Artifact = %+v %q %v", got, file, err)
		}
		if _, _, err := s.Artifact(ctx, b.ID, "old.txt"); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired artifact: %v", err)
		}
		files, err := s.TakeExpiredArtifacts(ctx, now)
		if err != nil || !reflect.DeepEqual(files, []string{"1/c"}) {
			t.Errorf("TakeExpiredArtifacts = %q, %v", files, err)
		}
		if set, err := s.ArtifactFiles(ctx); err != nil || !reflect.DeepEqual(set, map[string]bool{"1/a": true}) {
			t.Errorf("ArtifactFiles = %v, %v", set, err)
		}
		if err := s.DeleteApp(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if set, err := s.ArtifactFiles(ctx); err != nil || len(set) != 0 {
			t.Errorf("after the app's deletion: %v, %v", set, err)
		}
	})
}

// TestCaches: one cache per app and workflow, replaced by the next save
// (which returns the old file); listed per app or all; cleared per
// workflow or app; expired ones taken by the sweep.
func TestCaches(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		for _, name := range []string{"a", "b"} {
			if err := s.CreateApp(ctx, &App{Name: name, Repo: "/r"}); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now().UTC().Truncate(time.Millisecond)
		c := func(app, wf string, size int64, expires time.Time) build.Cache {
			return build.Cache{App: app, Workflow: wf, Size: size, Build: 7, CreatedAt: now, ExpiresAt: expires}
		}
		later := now.Add(time.Hour)
		if old, err := s.PutCache(ctx, c("a", "w", 10, later), "a-w-1"); err != nil || old != "" {
			t.Fatalf("first PutCache = %q, %v", old, err)
		}
		if old, err := s.PutCache(ctx, c("a", "w", 20, later), "a-w-2"); err != nil || old != "a-w-1" {
			t.Errorf("second PutCache = %q, %v", old, err)
		}
		if _, err := s.PutCache(ctx, c("nope", "w", 1, later), "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("cache of no app: %v", err)
		}
		for _, p := range []struct {
			app, wf, file string
			exp           time.Time
		}{{"a", "v", "a-v", later}, {"b", "w", "b-w", later}, {"b", "gone", "b-gone", now.Add(-time.Second)}} {
			if _, err := s.PutCache(ctx, c(p.app, p.wf, 5, p.exp), p.file); err != nil {
				t.Fatal(err)
			}
		}
		got, file, err := s.Cache(ctx, "a", "w")
		if err != nil || file != "a-w-2" || !reflect.DeepEqual(got, c("a", "w", 20, later)) {
			t.Errorf("Cache = %+v %q %v", got, file, err)
		}
		if _, _, err := s.Cache(ctx, "b", "gone"); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired cache: %v", err)
		}
		all, err := s.Caches(ctx, "")
		if err != nil || len(all) != 3 || all[0].Workflow != "v" || all[2].App != "b" {
			t.Errorf("Caches() = %+v, %v", all, err)
		}
		if of, _ := s.Caches(ctx, "b"); len(of) != 1 {
			t.Errorf("Caches(b) = %+v", of)
		}
		if files, err := s.TakeExpiredCaches(ctx, now); err != nil || !reflect.DeepEqual(files, []string{"b-gone"}) {
			t.Errorf("TakeExpiredCaches = %q, %v", files, err)
		}
		if files, err := s.DeleteCaches(ctx, "a", "w"); err != nil || !reflect.DeepEqual(files, []string{"a-w-2"}) {
			t.Errorf("DeleteCaches(a, w) = %q, %v", files, err)
		}
		if _, err := s.PutCache(ctx, c("a", "w", 20, later), "a-w-3"); err != nil {
			t.Fatal(err)
		}
		if files, err := s.DeleteCaches(ctx, "a", ""); err != nil || len(files) != 2 {
			t.Errorf("DeleteCaches(a) = %q, %v", files, err)
		}
		if set, err := s.CacheFiles(ctx); err != nil || !reflect.DeepEqual(set, map[string]bool{"b-w": true}) {
			t.Errorf("CacheFiles = %v, %v", set, err)
		}
	})
}

// TestArtifactBound: an artifact that would take its build's artifacts
// that have not expired past the bound is refused (ErrFull).
func TestArtifactBound(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		b := newBuild(t, s, build.Building)
		now := time.Now().UTC().Truncate(time.Millisecond)
		add := func(name string, size int64, expires time.Time, max int64) error {
			return s.AddArtifactWithin(ctx, b.ID, build.Artifact{Name: name, Size: size, CreatedAt: now, ExpiresAt: expires}, "f/"+name, max)
		}
		if err := add("expired", 10, now.Add(-time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		if err := add("three", 3, now.Add(time.Hour), 5); err != nil {
			t.Fatal(err)
		}
		if err := add("three-more", 3, now.Add(time.Hour), 5); !errors.Is(err, ErrFull) {
			t.Errorf("3 + 3 bytes within 5: %v; want ErrFull", err)
		}
		if err := add("two", 2, now.Add(time.Hour), 5); err != nil {
			t.Errorf("3 + 2 bytes within 5 (the expired artifact not counted): %v", err)
		}
		if err := s.AddArtifactWithin(ctx, b.ID+100, build.Artifact{Name: "x", Size: 1}, "x", 5); !errors.Is(err, ErrNotFound) {
			t.Errorf("artifact of no build, with a bound: %v", err)
		}
		if list, err := s.Artifacts(ctx, b.ID); err != nil || len(list) != 2 {
			t.Errorf("Artifacts = %+v, %v; want three and two", list, err)
		}
	})
}
