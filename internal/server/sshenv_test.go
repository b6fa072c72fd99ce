package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// testClock is the clock of URL expiry in tests.
type testClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sshEnv is a real API server with SSH over a real SQLite store, with the
// real CA, sealer and URL key of a data dir: what `hangar server` wires,
// without a runner (the tests play its part on the store: claim the build,
// store its credential, mark access ready, end it).
type sshEnv struct {
	t      *testing.T
	st     *store.Store
	srv    *httptest.Server
	api    *Server
	ca     *sshca.CA
	sealer *sshca.Sealer
	clock  *testClock
	admin  string // the admin token's secret
}

type sshEnvOptions struct {
	keys     string      // the data dir's ssh keys; default: a new one
	isolated bool        // machines are isolated (sandbox driver)
	tls      *tls.Config // serve HTTPS with it
}

func newSSHEnv(t *testing.T, o sshEnvOptions) *sshEnv {
	t.Helper()
	if o.keys == "" {
		o.keys = t.TempDir()
	}
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &sshEnv{t: t, st: st, clock: &testClock{now: time.Now()}, admin: "hgr_admin_" + fmt.Sprint(time.Now().UnixNano())}
	if e.ca, err = sshca.LoadOrCreateCA(filepath.Join(o.keys, "user_ca")); err != nil {
		t.Fatal(err)
	}
	if e.sealer, err = sshca.LoadOrCreateSealer(filepath.Join(o.keys, "seal.key")); err != nil {
		t.Fatal(err)
	}
	urlKey, err := sshca.LoadOrCreateSecret(filepath.Join(o.keys, "url.key"))
	if err != nil {
		t.Fatal(err)
	}
	gwKey, err := sshca.LoadOrCreateKey(filepath.Join(o.keys, "gateway_host_key"), "hangar gateway")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/nonexistent/demo.git"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateApp(ctx, &store.App{Name: "other", Repo: "/nonexistent/other.git"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, HashToken(e.admin), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	e.api = New(Config{
		Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Driver: map[bool]string{true: "sandbox", false: "host"}[o.isolated], Isolated: o.isolated,
		TLS: o.tls != nil, Loopback: true,
		Mirrors: &gitrepo.Mirrors{Dir: t.TempDir()}, UI: UIHandler(), Metrics: promhttp.Handler(),
		SSH: &SSHConfig{
			Store: st, Sealer: e.sealer, URLKey: urlKey, GatewayPort: 2222, GatewayKey: gwKey.PublicKey(),
			Now: e.clock.Now,
		},
	})
	e.srv = httptest.NewUnstartedServer(e.api)
	if o.tls != nil {
		e.srv.TLS = o.tls
		e.srv.StartTLS()
	} else {
		e.srv.Start()
	}
	t.Cleanup(e.srv.Close)
	return e
}

// token makes a token and returns its secret.
func (e *sshEnv) token(name string, admin bool, apps ...string) string {
	return e.addToken(store.Token{Name: name, Admin: admin, Apps: apps})
}

// addToken stores t and returns its secret.
func (e *sshEnv) addToken(t store.Token) string {
	e.t.Helper()
	secret := "hgr_" + t.Name + "_secret"
	if err := e.st.AddToken(context.Background(), HashToken(secret), t); err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// sshBuild makes a running build of app with SSH access open, and its
// credential as the runner stores it; it returns the build and the
// credential's private key (PEM) and certificate (authorized_keys line).
func (e *sshEnv) sshBuild(app string) (b *build.Build, key, cert string) {
	e.t.Helper()
	ctx := context.Background()
	b = &build.Build{App: app, Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c",
		Status: build.Queued, Trigger: build.Manual, MaxDuration: 600, Steps: build.NewSteps(nil),
		SSH: build.SSH{Enabled: true, State: build.SSHPending}}
	if err := e.st.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
		e.t.Fatal(err)
	}
	claimed, _, err := e.st.ClaimBuild(ctx)
	if err != nil || claimed.ID != b.ID {
		e.t.Fatalf("claim build %d: %v", b.ID, err)
	}
	alias := build.Alias(b.ID)
	cred, err := e.ca.Issue(alias, time.Now().Add(time.Hour))
	if err != nil {
		e.t.Fatal(err)
	}
	hostKey, _, err := sshca.NewKey(alias)
	if err != nil {
		e.t.Fatal(err)
	}
	cert = string(ssh.MarshalAuthorizedKey(cred.Certificate))
	if err := e.st.PutBuildSSH(ctx, b.ID, &store.BuildSSH{
		PrivateKey: e.sealer.Seal(cred.PrivateKey, alias), Certificate: cert,
		PublicKey: string(ssh.MarshalAuthorizedKey(cred.PublicKey)), HostKey: string(ssh.MarshalAuthorizedKey(hostKey.PublicKey())),
	}); err != nil {
		e.t.Fatal(err)
	}
	b = claimed
	b.Status = build.Building
	b.SSH.State = build.SSHReady
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	b.SSH.ExpiresAt, b.SSH.ExpiresBecause = &exp, "max_build_duration"
	if ok, err := e.st.UpdateBuild(ctx, b); err != nil || !ok {
		e.t.Fatalf("update build %d: %v", b.ID, err)
	}
	return b, string(cred.PrivateKey), strings.TrimSpace(cert)
}

// end ends build id as the runner does: access closed, key destroyed,
// build finished.
func (e *sshEnv) end(id int64) {
	e.t.Helper()
	if err := e.endBuild(context.Background(), id, build.Finished); err != nil {
		e.t.Fatal(err)
	}
}

func (e *sshEnv) endBuild(ctx context.Context, id int64, status build.Status) error {
	b, err := e.st.Build(ctx, id)
	if err != nil {
		return err
	}
	if err := e.st.DestroySSHKey(ctx, id); err != nil {
		return err
	}
	now := time.Now().UTC()
	b.Status, b.FinishedAt = status, &now
	b.SSH.State, b.SSH.ClosedReason = build.SSHClosed, fmt.Sprintf("build %d has ended (%s)", id, status)
	if ok, err := e.st.UpdateBuild(ctx, b); err != nil || !ok {
		return fmt.Errorf("end build %d: %v", id, err)
	}
	return nil
}

// cancelOnRequest plays the runner's part in cancels until the test ends:
// a build whose cancel was requested ends canceled.
func (e *sshEnv) cancelOnRequest() {
	ctx, stop := context.WithCancel(context.Background())
	wake, unsub := e.st.Subscribe(0)
	done := make(chan struct{})
	e.t.Cleanup(func() {
		stop()
		<-done
		unsub()
	})
	go func() {
		defer close(done)
		for {
			ids, err := e.st.CancelRequests(ctx)
			if err != nil {
				if ctx.Err() == nil {
					e.t.Errorf("cancel requests: %v", err)
				}
				return
			}
			for _, id := range ids {
				if err := e.endBuild(ctx, id, build.Canceled); err != nil && ctx.Err() == nil {
					e.t.Errorf("cancel build %d: %v", id, err)
				}
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// do makes a request with token (none if "") and returns the status and
// the body.
func (e *sshEnv) do(method, path, token string, body io.Reader) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, string(data)
}
