package runnerapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
)

// The client opens secrets and keeps files for the runner.
var (
	_ runner.Secrets = (*Client)(nil)
	_ runner.Files   = (*RemoteFiles)(nil)
)

// fileServers are two replicas of the runner API on e's store that open
// secrets with vault and keep files each with its own Keeper: on
// PostgreSQL in the database, each with its own directory (nothing
// shared on disk); on SQLite in one directory (one server).
func fileServers(t *testing.T, e *env, vault *secrets.Vault) ([]string, []*artifact.Keeper) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	shared := t.TempDir()
	var urls []string
	var keepers []*artifact.Keeper
	for range 2 {
		k := &artifact.Keeper{Dir: shared, Store: e.st, MaxFile: 100, MaxBuild: 150, MaxCache: 64}
		if strings.HasSuffix(t.Name(), "/postgres") {
			k.Dir, k.InDatabase, k.ChunkSize = t.TempDir(), true, 16
		}
		srv := httptest.NewServer(server.New(server.Config{Store: e.st, Logger: log, Runners: e.st, RunnerStaleAfter: time.Minute,
			RunnerAPI: New(Config{Store: e.st, Logger: log, StaleAfter: time.Minute, MaxWait: 2 * time.Second,
				Secrets: vault, Files: k, PublicURL: func() string { return "https://ci.example.com" }})}))
		t.Cleanup(srv.Close)
		urls, keepers = append(urls, srv.URL), append(keepers, k)
	}
	return urls, keepers
}

// TestRunnerSecretsAndFiles: a runner opens the groups and keystores its
// claimed build's spec names, and nothing else, nor another runner's
// build's; it keeps the build's artifacts and cache through one server
// and reads them through the other, within the servers' limits; an
// upload the runner finds incomplete is not kept; an ended build gets
// nothing.
func TestRunnerSecretsAndFiles(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		sealer, _, err := secrets.LoadSealer("", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		vault := &secrets.Vault{Store: e.st, Sealer: sealer}
		if err := vault.SetGroup(ctx, "demo", "play", []secrets.Var{{Name: "PLAY_TOKEN", Value: "tok-s3cret"}}); err != nil {
			t.Fatal(err)
		}
		if err := vault.SetGroup(ctx, "demo", "other", []secrets.Var{{Name: "OTHER", Value: "not-yours"}}); err != nil {
			t.Fatal(err)
		}
		if err := vault.PutKeystore(ctx, "demo", "upload", &secrets.Keystore{File: []byte("jks\x00"), Password: "store-pw", Alias: "up", KeyPassword: "key-pw"}); err != nil {
			t.Fatal(err)
		}
		urls, keepers := fileServers(t, e, vault)
		id := e.queue(t, build.Spec{Groups: []string{"play"}, Keystores: []string{"upload"}, CachePaths: []string{"$HOME/.gradle"}}, false)
		noCache := e.queue(t, build.Spec{}, false)
		c := NewClient(urls, e.runner(t, "r1"), nil)
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 2}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []int64{id, noCache} {
			if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != want {
				t.Fatalf("claim: %v %v; want %d", b, err, want)
			}
		}

		res, err := c.Resolve(ctx, id, "demo", []string{"play"}, []string{"upload"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Env, []string{"PLAY_TOKEN=tok-s3cret"}) || len(res.Keystores) != 1 || string(res.Keystores[0].File) != "jks\x00" ||
			res.Keystores[0].KeyPassword != "key-pw" || !slices.Contains(res.Secure, "tok-s3cret") || !slices.Contains(res.Secure, "store-pw") {
			t.Errorf("resolved: %+v", res)
		}
		// What the spec does not name is refused, without a value.
		for _, ask := range [][2][]string{{{"other"}, nil}, {{"play", "other"}, nil}, {nil, {"nope"}}} {
			_, err := c.Resolve(ctx, id, "demo", ask[0], ask[1])
			if api.StatusOf(err) != http.StatusForbidden || strings.Contains(err.Error(), "not-yours") {
				t.Errorf("resolve %v: %v; want 403", ask, err)
			}
		}
		if _, err := c.Resolve(ctx, noCache, "demo", []string{"play"}, nil); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("a group of a build that names none: %v", err)
		}
		other := NewClient(urls, e.runner(t, "r2"), nil)
		if _, err := other.Start(ctx, StartRequest{Host: "h2", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Resolve(ctx, id, "demo", []string{"play"}, nil); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner's build: %v", err)
		}

		files, err := c.Files(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l := files.Limits(); l != (artifact.Limits{ArtifactFile: 100, ArtifactBuild: 150, Cache: 64}) || files.PublicURL() != "https://ci.example.com" {
			t.Errorf("limits %+v, public URL %q", l, files.PublicURL())
		}
		accept := func(int64) error { return nil }
		apk := bytes.Repeat([]byte("apk\x00"), 20)
		a, err := files.PutArtifact(ctx, id, "out/app release.apk", bytes.NewReader(apk), int64(len(apk)), accept)
		if err != nil || a.Size != 80 || a.Name != "out/app release.apk" {
			t.Fatalf("PutArtifact = %+v, %v", a, err)
		}
		cut := errors.New("the upload did not complete")
		if _, err := files.PutArtifact(ctx, id, "cut.txt", strings.NewReader("12345"), 5, func(int64) error { return cut }); !errors.Is(err, cut) {
			t.Errorf("an upload the runner found incomplete: %v", err)
		}
		// Past the servers' bounds: one file, the build's total, a body
		// longer than announced.
		for name, up := range map[string]struct {
			n    int64
			data string
		}{"huge": {101, strings.Repeat("x", 101)}, "total": {71, strings.Repeat("x", 71)}, "longer": {3, "12345"}} {
			if _, err := files.PutArtifact(ctx, id, name, strings.NewReader(up.data), up.n, accept); !errors.Is(err, artifact.ErrTooLarge) {
				t.Errorf("artifact %s: %v; want ErrTooLarge", name, err)
			}
		}
		if _, err := files.PutArtifact(ctx, id, "out/app release.apk", strings.NewReader("x"), 1, accept); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("the same name again: %v", err)
		}
		if _, err := files.PutArtifact(ctx, id, "../x", strings.NewReader("x"), 1, accept); err == nil {
			t.Error("an artifact named ../x was sent")
		}
		if _, err := c.server().SendBody(ctx, http.MethodPut, buildPath(id, "/artifacts/a%01b"), strings.NewReader("x"), 1, http.Header{SizeHeader: {"1"}}); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("a name with a control character: %v", err)
		}
		if _, err := other.server().SendBody(ctx, http.MethodPut, buildPath(id, "/artifacts/x"), strings.NewReader("x"), 1, http.Header{SizeHeader: {"1"}}); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner's upload: %v", err)
		}
		// The other server (a replica) reads it.
		if list, err := keepers[1].Artifacts(ctx, id); err != nil || len(list) != 1 {
			t.Fatalf("artifacts kept: %+v, %v", list, err)
		}
		f, _, err := keepers[1].OpenArtifact(ctx, id, "out/app release.apk")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(f); err != nil || !bytes.Equal(got, apk) {
			t.Errorf("read back through the other server: %q, %v", got, err)
		}
		f.Close()

		if _, _, err := files.OpenCache(ctx, id, "", ""); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("no cache yet: %v", err)
		}
		if _, err := files.PutCache(ctx, "", "", id, strings.NewReader(strings.Repeat("c", 65)), accept); !errors.Is(err, artifact.ErrTooLarge) {
			t.Errorf("a cache over the bound: %v", err)
		}
		if _, err := files.PutCache(ctx, "", "", id, strings.NewReader("cache!"), func(int64) error { return cut }); !errors.Is(err, cut) {
			t.Errorf("a cache the runner found incomplete: %v", err)
		}
		if _, err := files.PutCache(ctx, "", "", noCache, strings.NewReader("x"), accept); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("a cache of a workflow without cache paths: %v", err)
		}
		saved, err := files.PutCache(ctx, "", "", id, strings.NewReader("cache archive"), accept)
		if err != nil || saved.Size != 13 || saved.App != "demo" || saved.Build != id {
			t.Fatalf("PutCache = %+v, %v", saved, err)
		}
		// The other replica reads it.
		c.mu.Lock()
		c.cur = 1
		c.mu.Unlock()
		rc, got, err := files.OpenCache(ctx, id, "", "")
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(data) != "cache archive" || got.Size != 13 || got.Build != id {
			t.Errorf("restored %q %+v, %v", data, got, err)
		}

		b, err := e.st.Build(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b.Status = build.Finished
		if _, err := c.UpdateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Resolve(ctx, id, "demo", []string{"play"}, nil); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("secrets of an ended build: %v", err)
		}
		if _, err := files.PutArtifact(ctx, id, "late.txt", strings.NewReader("x"), 1, accept); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("an artifact of an ended build: %v", err)
		}
	})
}

// barrierFiles holds each artifact upload, once past the runner API's
// checks, until n of them are: uploads at once.
type barrierFiles struct {
	*artifact.Keeper
	n       int
	mu      sync.Mutex
	entered int
	all     chan struct{}
}

func (f *barrierFiles) PutArtifact(ctx context.Context, id int64, name string, r io.Reader, limit int64, done func(n int64) error) (build.Artifact, error) {
	f.mu.Lock()
	if f.entered++; f.entered == f.n {
		close(f.all)
	}
	f.mu.Unlock()
	select {
	case <-f.all:
	case <-ctx.Done():
		return build.Artifact{}, ctx.Err()
	}
	return f.Keeper.PutArtifact(ctx, id, name, r, limit, done)
}

// TestArtifactsAtOnce: artifacts uploaded at once, each within the bound
// of one, do not take the build's artifacts past the build's bound.
func TestArtifactsAtOnce(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		k := &artifact.Keeper{Dir: t.TempDir(), Store: e.st, MaxFile: 100, MaxBuild: 150}
		if strings.HasSuffix(t.Name(), "/postgres") {
			k.InDatabase, k.ChunkSize = true, 16
		}
		files := &barrierFiles{Keeper: k, n: 3, all: make(chan struct{})}
		srv := httptest.NewServer(server.New(server.Config{Store: e.st, Logger: log, Runners: e.st, RunnerStaleAfter: time.Minute,
			RunnerAPI: New(Config{Store: e.st, Logger: log, StaleAfter: time.Minute, MaxWait: 2 * time.Second, Files: files})}))
		defer srv.Close()
		id := e.queue(t, build.Spec{}, false)
		c := NewClient([]string{srv.URL}, e.runner(t, "r1"), nil)
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v %v; want %d", b, err, id)
		}
		rf, err := c.Files(ctx)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, files.n)
		for i := range files.n {
			go func() {
				_, err := rf.PutArtifact(ctx, id, fmt.Sprintf("part%d", i), strings.NewReader(strings.Repeat("x", 60)), 60, func(int64) error { return nil })
				errs <- err
			}()
		}
		refused := 0
		for range files.n {
			if err := <-errs; errors.Is(err, artifact.ErrTooLarge) {
				refused++
			} else if err != nil {
				t.Errorf("upload: %v", err)
			}
		}
		list, err := k.Artifacts(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, a := range list {
			total += a.Size
		}
		if total > 150 || refused != 1 {
			t.Errorf("3 uploads of 60 bytes at once, the build's bound 150: %d kept (%d bytes), %d refused; want 2 kept, 1 refused", len(list), total, refused)
		}
		if n, err := e.st.DeleteOrphanBlobs(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
			t.Errorf("blobs left by the refused upload: %d, %v", n, err)
		}
	})
}
