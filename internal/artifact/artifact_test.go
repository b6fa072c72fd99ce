package artifact

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

func keeper(t *testing.T) (*Keeper, *store.Store, *build.Build) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.CreateApp(ctx, &store.App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "a", Workflow: "w", Status: build.Finished, Trigger: build.Manual, Steps: []build.Step{}}
	if err := st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	return &Keeper{Dir: dir, Store: st, Retention: time.Hour}, st, b
}

// files lists the kept files (relative to dir) but the database's.
func files(t *testing.T, dir string) []string {
	var out []string
	for _, kind := range []string{"artifacts", "caches"} {
		_ = filepath.WalkDir(filepath.Join(dir, kind), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(dir, p)
				out = append(out, rel)
			}
			return nil
		})
	}
	return out
}

var accept = func(int64) error { return nil }

// TestPut: an upload is kept only when done accepts it and it is within
// its bound; nothing is left of a refused one.
func TestPut(t *testing.T) {
	k, _, b := keeper(t)
	ctx := context.Background()
	a, err := k.PutArtifact(ctx, b.ID, "out/app.apk", strings.NewReader("apk"), 3, accept)
	if err != nil || a.Size != 3 || a.MD5 != fmt.Sprintf("%x", md5.Sum([]byte("apk"))) || a.SHA256 != fmt.Sprintf("%x", sha256.Sum256([]byte("apk"))) {
		t.Fatalf("PutArtifact = %+v, %v", a, err)
	}
	if _, err := k.PutArtifact(ctx, b.ID, "big", strings.NewReader("12345"), 4, accept); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the bound: %v", err)
	}
	incomplete := errors.New("the upload did not complete")
	if _, err := k.PutArtifact(ctx, b.ID, "cut", strings.NewReader("12"), 4, func(int64) error { return incomplete }); !errors.Is(err, incomplete) {
		t.Errorf("refused by done: %v", err)
	}
	if _, err := k.PutArtifact(ctx, b.ID, "out/app.apk", strings.NewReader("apk"), 3, accept); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("same name twice: %v", err)
	}
	for _, bad := range []string{"../x", "/etc/passwd", "a//b", "a/./b", "dir/", "a\x00b", ""} {
		if _, err := k.PutArtifact(ctx, b.ID, bad, strings.NewReader("x"), 1, accept); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if got := files(t, k.Dir); len(got) != 1 {
		t.Errorf("files on disk: %q, want the one kept", got)
	}
	f, got, err := k.OpenArtifact(ctx, b.ID, "out/app.apk")
	if err != nil || got.Name != "out/app.apk" {
		t.Fatalf("OpenArtifact: %+v %v", got, err)
	}
	f.Close()
	k.MaxCache = 10
	if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader(strings.Repeat("x", 11)), accept); !errors.Is(err, ErrTooLarge) {
		t.Errorf("cache over the bound: %v", err)
	}
	if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader("one"), accept); err != nil {
		t.Fatal(err)
	}
	if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader("two"), accept); err != nil {
		t.Fatal(err)
	}
	rc, c, err := k.OpenCache(ctx, "a", "w")
	if err != nil || c.Size != 3 {
		t.Fatalf("OpenCache: %+v %v", c, err)
	}
	data := make([]byte, 8)
	n, _ := rc.Read(data)
	rc.Close()
	if string(data[:n]) != "two" {
		t.Errorf("cache holds %q, want the newer", data[:n])
	}
	if got := files(t, k.Dir); len(got) != 2 {
		t.Errorf("files on disk: %q, want one artifact and one cache (the replaced one removed)", got)
	}
}

// TestSweep: expired artifacts and caches go with their files; a file no
// row names goes once it is old; a young one (an upload in progress) stays.
func TestSweep(t *testing.T) {
	k, st, b := keeper(t)
	ctx := context.Background()
	if _, err := k.PutArtifact(ctx, b.ID, "a.txt", strings.NewReader("a"), 1, accept); err != nil {
		t.Fatal(err)
	}
	if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader("c"), accept); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(k.Dir, "artifacts", "99", "old")
	young := filepath.Join(k.Dir, "artifacts", "99", "young.part")
	for _, p := range []string{orphan, young} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if err := os.Chtimes(orphan, now.Add(-2*time.Hour), now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := k.Sweep(ctx, now); err != nil {
		t.Fatal(err)
	}
	if got := files(t, k.Dir); len(got) != 3 {
		t.Errorf("after a sweep now: %q, want the artifact, the cache and the young file", got)
	}
	if err := k.Sweep(ctx, now.Add(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := files(t, k.Dir); len(got) != 0 {
		t.Errorf("after everything expired: %q", got)
	}
	if list, _ := st.Artifacts(ctx, b.ID); len(list) != 0 {
		t.Errorf("rows left: %+v", list)
	}
}
