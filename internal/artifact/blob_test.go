package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// dbKeepers runs f with a Keeper that keeps files in the database, on
// SQLite and on PostgreSQL, and app "a" with a build; its chunks are 7
// bytes, so that files span several.
func dbKeepers(t *testing.T, f func(t *testing.T, k *Keeper, st *store.Store, b *build.Build)) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var st *store.Store
			var err error
			if backend == "sqlite" {
				st, err = store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
			} else {
				st, err = store.OpenPostgres(context.Background(), pgtest.DB(t))
			}
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
			dir := t.TempDir()
			f(t, &Keeper{Dir: dir, Store: st, InDatabase: true, ChunkSize: 7, Retention: time.Hour}, st, b)
			if got := files(t, dir); len(got) != 0 {
				t.Errorf("files on disk: %q; want none (the database keeps them)", got)
			}
		})
	}
}

// blobs counts the blobs that artifacts and caches name and the database
// holds.
func blobs(t *testing.T, st *store.Store) int {
	t.Helper()
	n := 0
	for _, id := range blobIDs(t, st) {
		if _, err := st.BlobInfo(context.Background(), id); err == nil {
			n++
		}
	}
	return n
}

// blobIDs lists the blobs the artifacts and caches name.
func blobIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for _, list := range []func(context.Context) (map[string]bool, error){st.ArtifactFiles, st.CacheFiles} {
		set, err := list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for f := range set {
			if id, ok := strings.CutPrefix(f, store.BlobFilePrefix); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// TestDatabaseFiles: artifacts and caches kept in the database read back
// whole and by ranges (as downloads ask), across chunks; refused uploads
// leave no blob; a replaced cache's blob goes; the sweep deletes expired
// ones and orphans.
func TestDatabaseFiles(t *testing.T) {
	dbKeepers(t, func(t *testing.T, k *Keeper, st *store.Store, b *build.Build) {
		ctx := context.Background()
		data := []byte("0123456789abcdefghijklmnopqrstuvwxyz\x00\xff")
		a, err := k.PutArtifact(ctx, b.ID, "out/app.apk", bytes.NewReader(data), int64(len(data)), accept)
		if err != nil || a.Size != int64(len(data)) || a.SHA256 != fmt.Sprintf("%x", sha256.Sum256(data)) {
			t.Fatalf("PutArtifact = %+v, %v", a, err)
		}
		if _, err := k.PutArtifact(ctx, b.ID, "big", strings.NewReader(strings.Repeat("x", 30)), 29, accept); !errors.Is(err, ErrTooLarge) {
			t.Errorf("over the bound: %v", err)
		}
		cut := errors.New("the upload did not complete")
		if _, err := k.PutArtifact(ctx, b.ID, "cut", strings.NewReader("12345678901"), 20, func(int64) error { return cut }); !errors.Is(err, cut) {
			t.Errorf("refused by done: %v", err)
		}
		if _, err := k.PutArtifact(ctx, b.ID, "out/app.apk", bytes.NewReader(data), int64(len(data)), accept); !errors.Is(err, store.ErrExists) {
			t.Errorf("same name twice: %v", err)
		}
		if n, err := st.DeleteOrphanBlobs(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("blobs left by refused uploads: %d, %v", n, err)
		}

		f, _, err := k.OpenArtifact(ctx, b.ID, "out/app.apk")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("read back %q, %v", got, err)
		}
		// Ranges, as http.ServeContent seeks for them.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f, a, err := k.OpenArtifact(r.Context(), b.ID, "out/app.apk")
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer f.Close()
			http.ServeContent(w, r, "", a.CreatedAt, f)
		}))
		defer srv.Close()
		for rng, want := range map[string]string{"bytes=5-16": string(data[5:17]), "bytes=-3": string(data[len(data)-3:]), "bytes=30-": string(data[30:])} {
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Range", rng)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent || string(body) != want {
				t.Errorf("Range %s: %s %q; want 206 %q", rng, resp.Status, body, want)
			}
		}

		if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader("first cache"), accept); err != nil {
			t.Fatal(err)
		}
		if _, err := k.PutCache(ctx, "a", "w", b.ID, strings.NewReader("second cache, longer"), accept); err != nil {
			t.Fatal(err)
		}
		rc, c, err := k.OpenCache(ctx, "a", "w")
		if err != nil || c.Size != 20 {
			t.Fatalf("OpenCache: %+v %v", c, err)
		}
		got, _ = io.ReadAll(rc)
		rc.Close()
		if string(got) != "second cache, longer" {
			t.Errorf("cache holds %q, want the newer", got)
		}
		if n, err := st.DeleteOrphanBlobs(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("the replaced cache's blob was left: %d, %v", n, err)
		}
		if n := blobs(t, st); n != 2 {
			t.Errorf("%d blobs, want the artifact's and the cache's", n)
		}
		if err := k.Sweep(ctx, time.Now().Add(30*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := k.OpenArtifact(ctx, b.ID, "out/app.apk"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an expired artifact: %v", err)
		}
		if n, err := st.DeleteOrphanBlobs(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("blobs left after the sweep: %d, %v", n, err)
		}
	})
}

// TestTickets: a download ticket is taken once, by any keeper of the
// database.
func TestTickets(t *testing.T) {
	dbKeepers(t, func(t *testing.T, k *Keeper, st *store.Store, b *build.Build) {
		ctx := context.Background()
		tk, err := k.IssueTicket(ctx, b.ID, "out/app.apk")
		if err != nil {
			t.Fatal(err)
		}
		other := &Keeper{Store: st}
		if id, name, err := other.TakeTicket(ctx, tk); err != nil || id != b.ID || name != "out/app.apk" {
			t.Errorf("TakeTicket = %d %q %v", id, name, err)
		}
		if _, _, err := k.TakeTicket(ctx, tk); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a ticket taken twice: %v", err)
		}
	})
}

// TestDatabaseFilesCutShort: an upload whose body breaks off (a request
// body without its final chunk reads as io.ErrUnexpectedEOF) is not kept
// in the database, as on disk, even when done would accept its bytes.
func TestDatabaseFilesCutShort(t *testing.T) {
	dbKeepers(t, func(t *testing.T, k *Keeper, st *store.Store, b *build.Build) {
		ctx := context.Background()
		cut := func() io.Reader {
			return io.MultiReader(strings.NewReader("0123456789abc"), iotest.ErrReader(io.ErrUnexpectedEOF))
		}
		if a, err := k.PutArtifact(ctx, b.ID, "out/app.apk", cut(), 13, accept); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("an artifact cut short: %+v, %v; want io.ErrUnexpectedEOF", a, err)
		}
		if c, err := k.PutCache(ctx, "a", "w", b.ID, cut(), accept); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("a cache cut short: %+v, %v; want io.ErrUnexpectedEOF", c, err)
		}
		if _, _, err := k.OpenCache(ctx, "a", "w"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("OpenCache after a cut upload: %v; want none kept", err)
		}
		if n, err := st.DeleteOrphanBlobs(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("blobs left by cut uploads: %d, %v", n, err)
		}
	})
}
