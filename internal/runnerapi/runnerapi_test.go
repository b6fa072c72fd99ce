package runnerapi

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway/cluster"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The client is the runner's store.
var (
	_ runner.Store      = (*Client)(nil)
	_ runner.EndedStore = (*Client)(nil)
	_ runner.EndedStore = (*store.RunnerStore)(nil)
)

// env is a store with app "demo", an admin token "admin-secret", and
// servers (the API with the runner API) on it.
type env struct {
	st    *store.Store
	admin *api.Client
	urls  []string
	srvs  []*httptest.Server
	ssh   *SSHConfig // the servers' (eachBackendSSH)
	ca    *sshca.CA
	seal  *sshca.Sealer
}

// eachBackend runs f on SQLite and on PostgreSQL.
func eachBackend(t *testing.T, servers int, f func(t *testing.T, e *env)) {
	eachBackendSSH(t, servers, false, f)
}

// eachBackendSSH is eachBackend, with servers that have separate
// gateways (a real user CA and sealer, gateway control through the store)
// if ssh.
func eachBackendSSH(t *testing.T, servers int, ssh bool, f func(t *testing.T, e *env)) {
	open := map[string]func(t *testing.T) (*store.Store, error){
		"sqlite": func(t *testing.T) (*store.Store, error) {
			return store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
		},
		"postgres": func(t *testing.T) (*store.Store, error) {
			return store.OpenPostgres(context.Background(), pgtest.DB(t))
		},
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			st, err := open[name](t)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			ctx := context.Background()
			if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
				t.Fatal(err)
			}
			if err := st.AddToken(ctx, server.HashToken("admin-secret"), store.Token{Name: "admin", Admin: true}); err != nil {
				t.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			e := &env{st: st}
			if ssh {
				dir := t.TempDir()
				if e.ca, err = sshca.LoadOrCreateCA(filepath.Join(dir, "user_ca")); err != nil {
					t.Fatal(err)
				}
				hostCA, err := sshca.LoadOrCreateCA(filepath.Join(dir, "host_ca"))
				if err != nil {
					t.Fatal(err)
				}
				if e.seal, err = sshca.LoadOrCreateSealer(filepath.Join(dir, "seal.key")); err != nil {
					t.Fatal(err)
				}
				e.ssh = &SSHConfig{Credentials: &runner.LocalCredentials{CA: e.ca, Sealer: e.seal, Store: st},
					Gateway: &cluster.Control{Store: st, Logger: log}, TunnelAddr: "gateways.example:2222", TunnelCA: hostCA.PublicKey()}
			}
			for range servers {
				srv := httptest.NewServer(server.New(server.Config{Store: st, Logger: log, Runners: st, RunnerStaleAfter: time.Minute,
					RunnerAPI: New(Config{Store: st, Logger: log, StaleAfter: time.Minute, MaxWait: 2 * time.Second, SSH: e.ssh})}))
				t.Cleanup(srv.Close)
				e.srvs = append(e.srvs, srv)
				e.urls = append(e.urls, srv.URL)
			}
			e.admin = api.New(e.urls[0], "admin-secret", nil)
			f(t, e)
		})
	}
}

// queue adds a queued build of demo with spec.
func (e *env) queue(t *testing.T, spec build.Spec, ssh bool) int64 {
	t.Helper()
	data, _ := json.Marshal(spec)
	b := &build.Build{App: "demo", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}, SSH: build.SSH{Enabled: ssh}}
	if err := e.st.CreateBuild(context.Background(), b, data); err != nil {
		t.Fatal(err)
	}
	return b.ID
}

// runner makes runner name and returns its token.
func (e *env) runner(t *testing.T, name string) string {
	t.Helper()
	tok, err := e.admin.CreateRunner(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, server.RunnerTokenPrefix) {
		t.Fatalf("runner token %q", tok.Token[:4])
	}
	return tok.Token
}

// TestRunnerAPI: a runner authenticates with its own token (not a user's),
// claims the builds of its labels and no SSH build, writes only its own
// builds, and sees its cancel requests; a second process of the runner
// takes over and the first is refused; a revoked runner is refused.
func TestRunnerAPI(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		tok := e.runner(t, "r1")
		otherTok := e.runner(t, "r2")
		if _, err := e.admin.CreateRunner(ctx, "r1"); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("a second r1: %v", err)
		}
		if _, err := e.admin.CreateRunner(ctx, "server-12345678"); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("a runner named like a server's: %v", err)
		}
		for _, bad := range []string{"admin-secret", server.RunnerTokenPrefix + "nope"} {
			_, err := NewClient(e.urls, bad, nil).Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1})
			if api.StatusOf(err) != http.StatusUnauthorized {
				t.Errorf("start with token %.4s...: %v", bad, err)
			}
		}
		if _, err := api.New(e.urls[0], tok, nil).Apps(ctx); api.StatusOf(err) != http.StatusUnauthorized {
			t.Errorf("a runner token at the user API: %v", err)
		}

		plain := e.queue(t, build.Spec{}, false)
		x2 := e.queue(t, build.Spec{InstanceType: "linux_x2"}, false)
		withSSH := e.queue(t, build.Spec{InstanceType: "linux"}, true)
		c := NewClient(e.urls, tok, nil)
		if _, _, err := c.ClaimBuild(ctx); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("a claim before start: %v", err)
		}
		start, err := c.Start(ctx, StartRequest{Host: "host-a", Labels: []string{"linux"}, Capacity: 2, Driver: "host"})
		if err != nil || start.Name != "r1" {
			t.Fatalf("start: %+v, %v", start, err)
		}
		b, spec, err := c.ClaimBuild(ctx)
		if err != nil || b.ID != plain || string(spec) != `{"repo":"","vars":null,"scripts":null,"resources":{}}` {
			t.Fatalf("claim: %v %s %v; want build %d", b, spec, err, plain)
		}
		if _, _, err := c.ClaimBuild(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second claim (left: %d of linux_x2, %d with SSH): %v", x2, withSSH, err)
		}
		b.Status = build.Building
		if wrote, err := c.UpdateBuild(ctx, b); err != nil || !wrote {
			t.Fatalf("update: %v %v", wrote, err)
		}
		now := time.Now().UTC().Truncate(time.Millisecond)
		if err := c.AppendLog(ctx, b.ID, []build.LogChunk{{Seq: 1, Lines: 2, Time: now, Data: []byte("one\ntwo\n")}}); err != nil {
			t.Fatal(err)
		}
		if lines, err := e.st.Logs(ctx, b.ID, 0, 10); err != nil || len(lines) != 2 || lines[1].Text != "two" {
			t.Errorf("stored log: %+v, %v", lines, err)
		}
		// A compressed chunk is stored as it came, if the server can read
		// it back: one that claims to decode to 4 GiB, or of an unknown
		// encoding, is refused.
		z := s2.Encode(nil, []byte("three\n"))
		if err := c.AppendLog(ctx, b.ID, []build.LogChunk{{Seq: 3, Lines: 1, Time: now, Data: z, Encoding: build.LogS2}}); err != nil {
			t.Fatal(err)
		}
		huge := append(binary.AppendUvarint(nil, 0xffffffff), z[1:]...)
		for _, bad := range []build.LogChunk{{Seq: 4, Lines: 1, Time: now, Data: huge, Encoding: build.LogS2}, {Seq: 4, Lines: 1, Time: now, Data: z, Encoding: "zip"}} {
			if err := c.AppendLog(ctx, b.ID, []build.LogChunk{bad}); api.StatusOf(err) != http.StatusBadRequest {
				t.Errorf("a chunk of encoding %q, %d bytes claimed: %v; want 400", bad.Encoding, len(bad.Data), err)
			}
		}
		if lines, err := e.st.Logs(ctx, b.ID, 0, 10); err != nil || len(lines) != 3 || lines[2].Text != "three" {
			t.Errorf("stored log: %+v, %v", lines, err)
		}
		if err := c.AddEvent(ctx, b.ID, build.Event{Time: now, Kind: "note"}); err != nil {
			t.Fatal(err)
		}
		// Another runner may not write it.
		other := NewClient(e.urls, otherTok, nil)
		if _, err := other.Start(ctx, StartRequest{Host: "host-b", Labels: []string{"linux_x2"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.UpdateBuild(ctx, b); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner's update: %v", err)
		}
		if err := other.AppendLog(ctx, b.ID, []build.LogChunk{{Seq: 9, Lines: 1, Time: now, Data: []byte("x\n")}}); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner's log: %v", err)
		}
		if got, _, err := other.ClaimBuild(ctx); err != nil || got.ID != x2 {
			t.Errorf("r2 claimed %v, %v; want %d", got, err, x2)
		}
		if _, err := e.st.CancelBuild(ctx, b.ID, "canceled"); err != nil {
			t.Fatal(err)
		}
		if ids, err := c.CancelRequests(ctx); err != nil || len(ids) != 1 || ids[0] != b.ID {
			t.Errorf("cancel requests: %v, %v", ids, err)
		}
		if ids, err := other.CancelRequests(ctx); err != nil || len(ids) != 0 {
			t.Errorf("r2's cancel requests: %v, %v", ids, err)
		}
		if ended, err := c.EndedBuilds(ctx, []int64{b.ID, x2}); err != nil || len(ended) != 0 {
			t.Errorf("ended builds before the end: %v, %v", ended, err)
		}

		list, err := e.admin.Runners(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "r1" || list[0].Host != "host-a" || list[0].Running != 1 || !list[0].Answering {
			t.Errorf("runners: %+v, %v", list, err)
		}

		// r1 starts again on its host: the first process is replaced, its
		// build failed as interrupted.
		again := NewClient(e.urls, tok, nil)
		if start, err := again.Start(ctx, StartRequest{Host: "host-a", Labels: []string{"linux"}, Capacity: 2}); err != nil || start.Interrupted != 1 {
			t.Fatalf("start again: %+v, %v", start, err)
		}
		if got, _ := e.st.Build(ctx, b.ID); got.Status != build.Failed || got.Message != InterruptedMessage("r1") {
			t.Errorf("the interrupted build: %s %q", got.Status, got.Message)
		}
		if ended, err := again.EndedBuilds(ctx, []int64{b.ID, x2}); err != nil || len(ended) != 1 || ended[0] != b.ID {
			t.Errorf("ended builds (of r1): %v, %v; want [%d]", ended, err, b.ID)
		}
		if ended, err := other.EndedBuilds(ctx, []int64{b.ID}); err != nil || len(ended) != 0 {
			t.Errorf("r2 asks about r1's build: %v, %v", ended, err)
		}
		if err := c.Heartbeat(ctx); !errors.Is(err, store.ErrReplaced) {
			t.Errorf("the replaced process's heartbeat: %v", err)
		}
		if _, _, err := c.ClaimBuild(ctx); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("the replaced process's claim: %v", err)
		}
		// Nor does it write its build any more.
		if err := c.AppendLog(ctx, b.ID, []build.LogChunk{{Seq: 4, Lines: 1, Time: now, Data: []byte("stale\n")}}); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("the replaced process's log: %v", err)
		}
		if err := c.AddEvent(ctx, b.ID, build.Event{Time: now, Kind: "note"}); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("the replaced process's event: %v", err)
		}
		// On another host while r1 answers: refused.
		if _, err := NewClient(e.urls, tok, nil).Start(ctx, StartRequest{Host: "host-c", Labels: []string{"linux"}, Capacity: 1}); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("r1 on another host: %v", err)
		}
		if err := again.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.RevokeRunner(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		if err := again.Heartbeat(ctx); !errors.Is(err, store.ErrReplaced) {
			t.Errorf("a revoked runner's heartbeat: %v", err)
		}
		if err := e.admin.RevokeRunner(ctx, "nope"); api.StatusOf(err) != http.StatusNotFound {
			t.Errorf("revoke nope: %v", err)
		}
	})
}

// TestClientServers: the client wakes its subscribers when a build
// changes (a long poll), and moves to the next server when one does not
// answer.
func TestClientServers(t *testing.T) {
	eachBackend(t, 2, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := NewClient(e.urls, e.runner(t, "r1"), nil)
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		wake := watch(t, ctx, cancel, c, 0)
		// A build made while the runner waits wakes it. The long poll may
		// not have started yet: make builds until one wakes it.
		for woke := false; !woke; {
			id := e.queue(t, build.Spec{}, false)
			select {
			case <-wake:
				woke = true
			case <-time.After(3 * time.Second):
			}
			if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
				t.Fatalf("claim: %v, %v", b, err)
			}
		}
		e.srvs[0].Close()
		if err := c.Heartbeat(ctx); err != nil {
			t.Fatalf("heartbeat with the first server gone: %v", err)
		}
		id := e.queue(t, build.Spec{}, false)
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim through the second server: %v, %v", b, err)
		}
	})
}

// TestLogBatches: a pile of log chunks larger than the server takes in one
// request (a runner that could not reach it for a while) goes in several.
func TestLogBatches(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	tok := server.RunnerTokenPrefix + "t"
	if _, err := st.CreateRunner(ctx, "r", server.HashToken(tok)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(New(Config{Store: st, Logger: log, StaleAfter: time.Minute, MaxBody: 12 << 20}))
	defer srv.Close()
	c := NewClient([]string{srv.URL}, tok, log)
	if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBuild(ctx, &build.Build{App: "demo", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b, _, err := c.ClaimBuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 4 chunks of 3 MiB: 16 MiB in base64 in one request, over the 12.
	line := strings.Repeat("x", 3<<20-1) + "\n"
	var chunks []build.LogChunk
	for i := range 4 {
		chunks = append(chunks, build.LogChunk{Seq: int64(i + 1), Lines: 1, Time: time.Now(), Data: []byte(line)})
	}
	if err := c.AppendLog(ctx, b.ID, chunks); err != nil {
		t.Fatal(err)
	}
	lines, err := st.Logs(ctx, b.ID, 0, 10)
	if err != nil || len(lines) != 4 {
		t.Fatalf("stored %d lines, %v; want 4", len(lines), err)
	}
}

// BenchmarkClaim: a claim through the runner API (loopback HTTP) against a
// claim on the store directly, on both databases.
func BenchmarkClaim(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			var st *store.Store
			var err error
			if name == "sqlite" {
				st, err = store.OpenSQLite(filepath.Join(b.TempDir(), "hangar.db"))
			} else {
				st, err = store.OpenPostgres(context.Background(), pgtest.DB(b))
			}
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
				b.Fatal(err)
			}
			tok := server.RunnerTokenPrefix + "bench"
			rn, err := st.CreateRunner(ctx, "bench", server.HashToken(tok))
			if err != nil {
				b.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv := httptest.NewServer(New(Config{Store: st, Logger: log, StaleAfter: time.Minute}))
			defer srv.Close()
			c := NewClient([]string{srv.URL}, tok, log)
			if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
				b.Fatal(err)
			}
			queue := func(n int) {
				for range n {
					bld := &build.Build{App: "demo", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
					if err := st.CreateBuild(ctx, bld, []byte(`{"instance_type":"linux"}`)); err != nil {
						b.Fatal(err)
					}
				}
			}
			for _, via := range []string{"store", "api"} {
				b.Run(via, func(b *testing.B) {
					queue(b.N)
					direct := st.ForRunner(store.Claim{Runner: rn.ID, Labels: []string{"linux"}, NoSSH: true})
					b.ResetTimer()
					for range b.N {
						var err error
						if via == "api" {
							_, _, err = c.ClaimBuild(ctx)
						} else {
							_, _, err = direct.ClaimBuild(ctx)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// watch subscribes to key of c, runs c.Watch until the test ends (when
// it calls cancel, which ends ctx) and returns the subscription.
func watch(t *testing.T, ctx context.Context, cancel func(), c *Client, key int64) <-chan struct{} {
	wake, unsub := c.Subscribe(key)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Watch(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		unsub()
	})
	return wake
}
