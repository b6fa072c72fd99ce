package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// filesServer is an API server with a real artifact.Keeper over a SQLite
// store, an app "demo" with a finished build, an admin token "secret" and
// a token "other" for another app only.
func filesServer(t *testing.T) (*store.Store, *artifact.Keeper, *httptest.Server, *build.Build) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, a := range []string{"demo", "elsewhere"} {
		if err := st.CreateApp(ctx, &store.App{Name: a, Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddToken(ctx, HashToken("secret"), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, HashToken("other"), store.Token{Name: "other", Apps: []string{"elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "w", Branch: "main", Commit: "c", Status: build.Finished, Trigger: build.Manual, MaxDuration: 60, Steps: []build.Step{}}
	if err := st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	k := &artifact.Keeper{Dir: dir, Store: st}
	srv := httptest.NewServer(New(Config{Store: st, Files: k, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	return st, k, srv, b
}

func put(t *testing.T, k *artifact.Keeper, id int64, name string, data []byte) build.Artifact {
	t.Helper()
	a, err := k.PutArtifact(context.Background(), id, name, bytes.NewReader(data), int64(len(data)), func(int64) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t *testing.T, url, token string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestArtifactsAPI: list, download (attachment, ranges), tickets for the
// browser, and who may do what.
func TestArtifactsAPI(t *testing.T) {
	_, k, srv, b := filesServer(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789"), 10000)
	put(t, k, b.ID, "build/out/app release.apk", data)
	put(t, k, b.ID, "notes.txt", []byte("hi\n"))

	c := api.New(srv.URL, "secret", nil)
	list, err := c.Artifacts(ctx, b.ID)
	if err != nil || len(list) != 2 || list[0].Name != "build/out/app release.apk" || list[0].Size != int64(len(data)) || list[0].SHA256 == "" {
		t.Fatalf("Artifacts = %+v, %v", list, err)
	}
	if want := srv.URL + fmt.Sprintf("/api/v1/builds/%d/artifacts/build/out/app%%20release.apk", b.ID); list[0].URL != want {
		t.Errorf("URL %q, want %q", list[0].URL, want)
	}

	resp, body := get(t, list[0].URL, "secret", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(body))
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="app release.apk"` {
		t.Errorf("Content-Disposition %q", cd)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.android.package-archive" && ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	resp, body = get(t, list[0].URL, "secret", http.Header{"Range": {"bytes=10-19"}})
	if resp.StatusCode != http.StatusPartialContent || string(body) != "0123456789" || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(data)) {
		t.Errorf("range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	// An HTML artifact (the build's) never runs with the UI's origin.
	put(t, k, b.ID, "report/index.html", []byte("<script>fetch('/api/v1/apps')</script>"))
	resp, _ = get(t, srv.URL+fmt.Sprintf("/api/v1/builds/%d/artifacts/report/index.html", b.ID), "secret", nil)
	if csp := resp.Header.Get("Content-Security-Policy"); resp.StatusCode != 200 || !strings.Contains(csp, "sandbox") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("HTML artifact: %d, Content-Security-Policy %q, X-Content-Type-Options %q", resp.StatusCode, csp, resp.Header.Get("X-Content-Type-Options"))
	}
	rc, err := c.DownloadArtifact(ctx, b.ID, "notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "hi\n" {
		t.Errorf("client download: %q", got)
	}

	// Refusals: no token, another app's token, no such artifact.
	if resp, _ := get(t, list[0].URL, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d", resp.StatusCode)
	}
	if resp, _ := get(t, list[0].URL, "other", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another app's token: %d", resp.StatusCode)
	}
	if _, err := api.New(srv.URL, "other", nil).Artifacts(ctx, b.ID); api.StatusOf(err) != http.StatusForbidden {
		t.Errorf("another app's token lists: %v", err)
	}
	if resp, body := get(t, srv.URL+fmt.Sprintf("/api/v1/builds/%d/artifacts/nope.apk", b.ID), "secret", nil); resp.StatusCode != 404 || !strings.Contains(string(body), "has no artifact") {
		t.Errorf("missing artifact: %d %s", resp.StatusCode, body)
	}

	// A ticket downloads once without the Authorization header.
	ticket := func(token, name string) (int, api.ArtifactTicket) {
		req, _ := http.NewRequest("POST", srv.URL+fmt.Sprintf("/api/v1/builds/%d/artifact-tickets", b.ID), strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tk api.ArtifactTicket
		_ = json.NewDecoder(resp.Body).Decode(&tk)
		return resp.StatusCode, tk
	}
	code, tk := ticket("secret", "notes.txt")
	if code != http.StatusCreated || !strings.Contains(tk.URL, "?ticket=") {
		t.Fatalf("ticket: %d %+v", code, tk)
	}
	if resp, body := get(t, srv.URL+tk.URL, "", nil); resp.StatusCode != 200 || string(body) != "hi\n" {
		t.Errorf("ticket download: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, srv.URL+tk.URL, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ticket used twice: %d", resp.StatusCode)
	}
	_, tk = ticket("secret", "notes.txt")
	other := strings.Replace(tk.URL, "notes.txt", "build/out/app%20release.apk", 1)
	if resp, _ := get(t, srv.URL+other, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a ticket for another artifact: %d", resp.StatusCode)
	}
	if code, _ := ticket("other", "notes.txt"); code != http.StatusForbidden {
		t.Errorf("ticket with another app's token: %d", code)
	}
	if code, _ := ticket("secret", "nope"); code != http.StatusNotFound {
		t.Errorf("ticket for a missing artifact: %d", code)
	}
}

// TestCachesAPI: list (filtered by the token's apps) and clear, which
// removes the archive from disk.
func TestCachesAPI(t *testing.T) {
	_, k, srv, b := filesServer(t)
	ctx := context.Background()
	for _, app := range []string{"demo", "elsewhere"} {
		if _, err := k.PutCache(ctx, app, "w", b.ID, strings.NewReader("archive of "+app), func(int64) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	admin, other := api.New(srv.URL, "secret", nil), api.New(srv.URL, "other", nil)
	if all, err := admin.Caches(ctx, ""); err != nil || len(all) != 2 {
		t.Errorf("admin's caches: %+v %v", all, err)
	}
	if mine, err := other.Caches(ctx, ""); err != nil || len(mine) != 1 || mine[0].App != "elsewhere" || mine[0].Size != int64(len("archive of elsewhere")) {
		t.Errorf("other's caches: %+v %v", mine, err)
	}
	if _, err := other.Caches(ctx, "demo"); api.StatusOf(err) != http.StatusForbidden {
		t.Errorf("other lists demo's: %v", err)
	}
	if _, err := other.ClearCaches(ctx, "demo", ""); api.StatusOf(err) != http.StatusForbidden {
		t.Errorf("other clears demo's: %v", err)
	}
	files := func() int {
		n := 0
		_ = filepath.WalkDir(filepath.Join(k.Dir, "caches"), func(_ string, d os.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	if n := files(); n != 2 {
		t.Fatalf("%d cache files on disk, want 2", n)
	}
	if n, err := admin.ClearCaches(ctx, "demo", "other-workflow"); err != nil || n != 0 {
		t.Errorf("clear another workflow: %d %v", n, err)
	}
	if n, err := admin.ClearCaches(ctx, "demo", "w"); err != nil || n != 1 {
		t.Errorf("clear: %d %v", n, err)
	}
	if n := files(); n != 1 {
		t.Errorf("%d cache files on disk after clear, want 1", n)
	}
}

// chunkCounter is a store that counts the blob chunks read.
type chunkCounter struct {
	*store.Store
	reads atomic.Int64
}

func (c *chunkCounter) BlobChunk(ctx context.Context, id string, seq int64) ([]byte, error) {
	c.reads.Add(1)
	return c.Store.BlobChunk(ctx, id, seq)
}

// TestArtifactRanges: a download of an artifact kept in the database
// reads each chunk at most about once, whatever ranges it asks: many
// one-byte ranges that alternate between chunks do not make a chunk read
// per range (a small request that reads the database many times over).
func TestArtifactRanges(t *testing.T) {
	st, _, srv, b := filesServer(t)
	counter := &chunkCounter{Store: st}
	k := &artifact.Keeper{Dir: t.TempDir(), Store: counter, InDatabase: true, ChunkSize: 10}
	s := httptest.NewServer(New(Config{Store: st, Files: k, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer s.Close()
	srv.Close()
	data := bytes.Repeat([]byte("0123456789"), 10) // 10 chunks
	put(t, k, b.ID, "app.apk", data)
	url := s.URL + fmt.Sprintf("/api/v1/builds/%d/artifacts/app.apk", b.ID)

	// A few ranges are served as asked.
	resp, body := get(t, url, "secret", http.Header{"Range": {"bytes=0-1,50-51"}})
	if resp.StatusCode != http.StatusPartialContent || !strings.Contains(string(body), "01") {
		t.Errorf("two ranges: %d %q", resp.StatusCode, body)
	}
	var rs []string
	for i := range 40 {
		rs = append(rs, fmt.Sprintf("%d-%d", (i%2)*50+i/2, (i%2)*50+i/2))
	}
	counter.reads.Store(0)
	resp, body = get(t, url, "secret", http.Header{"Range": {"bytes=" + strings.Join(rs, ",")}})
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("many ranges: %d %q", resp.StatusCode, body)
	}
	if n := counter.reads.Load(); n > 10 {
		t.Errorf("40 one-byte ranges read %d chunks of a 10-chunk artifact; want at most 10", n)
	}
}
