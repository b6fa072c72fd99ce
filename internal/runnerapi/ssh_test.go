package runnerapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

var (
	_ runner.Credentials = (*Client)(nil)
	_ requestSource      = (*Client)(nil)
)

// requestSource is what app's serveRequests takes of the client.
type requestSource interface {
	PendingRequests(ctx context.Context) ([]store.BuildRequest, error)
	AnswerRequest(ctx context.Context, id int64, errText string) error
	Subscribe(id int64) (<-chan struct{}, func())
}

// queueSSH adds a queued SSH build of demo that may last max.
func (e *env) queueSSH(t *testing.T, max time.Duration) int64 {
	t.Helper()
	b := &build.Build{App: "demo", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{},
		SSH: build.SSH{Enabled: true}, MaxDuration: int64(max / time.Second)}
	if err := e.st.CreateBuild(context.Background(), b, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	return b.ID
}

// sshRunner starts runner name asking for SSH builds.
func (e *env) sshRunner(t *testing.T, name string) (*Client, *StartResponse) {
	t.Helper()
	c := NewClient(e.urls, e.runner(t, name), nil)
	start, err := c.Start(context.Background(), StartRequest{Host: "h-" + name, Labels: []string{"linux"}, Capacity: 2, SSH: true})
	if err != nil {
		t.Fatal(err)
	}
	return c, start
}

func authorizedKey(t *testing.T, k ssh.PublicKey) string {
	t.Helper()
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// TestSSHCredentials: with separate gateways, a runner that asks for SSH
// builds is told the tunnels' address and CA and claims them (another
// that does not ask, none); the server issues a build's credential for
// the runner that claimed it only, refusing bad input, keeps the private
// key sealed and gives the runner only the public parts; DELETE destroys
// it.
func TestSSHCredentials(t *testing.T) {
	eachBackendSSH(t, 1, true, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.queueSSH(t, 10*time.Minute)
		plainTok := e.runner(t, "plain")
		plain := NewClient(e.urls, plainTok, nil)
		if start, err := plain.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil || start.SSH != nil {
			t.Fatalf("a runner that does not ask for SSH builds: %+v, %v", start, err)
		}
		if _, _, err := plain.ClaimBuild(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a runner without SSH claimed the SSH build: %v", err)
		}
		c, start := e.sshRunner(t, "r1")
		if start.SSH == nil || start.SSH.TunnelAddr != "gateways.example:2222" || start.SSH.TunnelCA != authorizedKey(t, e.ssh.TunnelCA) {
			t.Fatalf("start: %+v; want the tunnels' address and CA", start.SSH)
		}
		list, err := e.admin.Runners(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "plain" || list[0].SSH || list[1].Name != "r1" || !list[1].SSH {
			t.Errorf("runners: %+v, %v; want plain without SSH, r1 with", list, err)
		}
		b, _, err := c.ClaimBuild(ctx)
		if err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v; want SSH build %d", b, err, id)
		}
		alias := build.Alias(id)
		hostSigner, _, err := sshca.NewKey(alias)
		if err != nil {
			t.Fatal(err)
		}
		hostKey := authorizedKey(t, hostSigner.PublicKey())
		deadline := b.StartedAt.Add(10 * time.Minute)
		for name, tc := range map[string]struct {
			req  IssueRequest
			want string // in the message
		}{
			"another build's alias": {IssueRequest{Alias: build.Alias(id + 1), Expires: deadline, HostKey: hostKey}, "alias"},
			"no alias":              {IssueRequest{Expires: deadline, HostKey: hostKey}, "alias"},
			"no host key":           {IssueRequest{Alias: alias, Expires: deadline}, "host_key"},
			"a bad host key":        {IssueRequest{Alias: alias, Expires: deadline, HostKey: "ssh-ed25519 AAAAnope"}, "host_key"},
			"expired":               {IssueRequest{Alias: alias, Expires: time.Now().Add(-time.Second), HostKey: hostKey}, "expires"},
			"after the deadline":    {IssueRequest{Alias: alias, Expires: deadline.Add(time.Hour), HostKey: hostKey}, "deadline"},
		} {
			err := c.call(ctx, http.MethodPost, buildPath(id, "/ssh"), tc.req, nil)
			if api.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("issue with %s: %v; want 400 naming %s", name, err, tc.want)
			}
		}
		if err := c.call(ctx, http.MethodPost, buildPath(id, "/ssh"), "{", nil); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("issue with a body that is not an object: %v", err)
		}
		c2, _ := e.sshRunner(t, "r2")
		if _, err := c2.Issue(ctx, id, alias, deadline, hostSigner.PublicKey()); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner issues: %v; want 403", err)
		}
		if _, err := c.Issue(ctx, id+100, build.Alias(id+100), deadline, hostSigner.PublicKey()); api.StatusOf(err) != http.StatusNotFound {
			t.Errorf("issue for no build: %v; want 404", err)
		}
		// A build started without SSH gets no credential.
		plainID := e.queue(t, build.Spec{}, false)
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != plainID {
			t.Fatalf("claim: %v, %v; want build %d", b, err, plainID)
		}
		if _, err := c.Issue(ctx, plainID, build.Alias(plainID), time.Now().Add(time.Minute), hostSigner.PublicKey()); api.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "without SSH") {
			t.Errorf("issue for a build without SSH: %v; want 409", err)
		}
		issued, err := c.Issue(ctx, id, alias, deadline, hostSigner.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if authorizedKey(t, issued.UserCA) != authorizedKey(t, e.ca.PublicKey()) {
			t.Errorf("user CA %s; want the server's", authorizedKey(t, issued.UserCA))
		}
		stored, err := e.st.GetBuildSSH(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(stored.PublicKey) != authorizedKey(t, issued.UserKey) || strings.TrimSpace(stored.HostKey) != hostKey {
			t.Errorf("stored keys %q %q; want the issued user key and the builder's host key", stored.PublicKey, stored.HostKey)
		}
		priv, err := e.seal.Open(stored.PrivateKey, alias)
		if err != nil {
			t.Fatalf("the stored private key does not open with the sealer: %v", err)
		}
		if signer, err := ssh.ParsePrivateKey(priv); err != nil || authorizedKey(t, signer.PublicKey()) != authorizedKey(t, issued.UserKey) {
			t.Errorf("the sealed private key is not the user key's: %v", err)
		}
		certKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(stored.Certificate))
		cert, ok := certKey.(*ssh.Certificate)
		if err != nil || !ok || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != alias ||
			authorizedKey(t, cert.SignatureKey) != authorizedKey(t, e.ca.PublicKey()) || cert.ValidBefore > uint64(deadline.Unix())+1 {
			t.Errorf("certificate %+v, %v; want one of the user CA for %s until %s", cert, err, alias, deadline)
		}
		// What the runner is told holds no secret.
		var raw json.RawMessage
		if err := c.call(ctx, http.MethodPost, buildPath(id, "/ssh"), IssueRequest{Alias: alias, Expires: deadline, HostKey: hostKey}, &raw); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), "PRIVATE") || strings.Contains(string(raw), "cert") {
			t.Errorf("the issue response holds more than public keys: %s", raw)
		}
		if err := c2.Destroy(ctx, id); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("another runner destroys: %v", err)
		}
		if err := c.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
		if stored, err := e.st.GetBuildSSH(ctx, id); err != nil || stored.PrivateKey != nil {
			t.Errorf("after destroy: %v, %v; want no private key", stored, err)
		}
	})
}

// TestSSHWithoutGateways: a server without separate gateways tells a
// runner that asks for SSH builds none, gives it none, and refuses its
// SSH calls saying why.
func TestSSHWithoutGateways(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.queueSSH(t, 10*time.Minute)
		plain := e.queue(t, build.Spec{}, false)
		c, start := e.sshRunner(t, "r1")
		if start.SSH != nil {
			t.Errorf("start: %+v; want no SSH", start.SSH)
		}
		if list, err := e.admin.Runners(ctx); err != nil || len(list) != 1 || list[0].SSH {
			t.Errorf("runners: %+v, %v; want r1 without SSH", list, err)
		}
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != plain {
			t.Fatalf("claim: %v, %v; want build %d, not SSH build %d", b, err, plain, id)
		}
		key, _, _ := sshca.NewKey("x")
		_, err := c.Issue(ctx, plain, build.Alias(plain), time.Now().Add(time.Minute), key.PublicKey())
		if api.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "--gateway-addr") {
			t.Errorf("issue: %v; want 409 naming --gateway-addr", err)
		}
		if _, err := c.GatewayEventsSince(ctx, time.Now()); api.StatusOf(err) != http.StatusConflict {
			t.Errorf("gateway events: %v; want 409", err)
		}
	})
}

// TestSSHRunnerWithoutSSH: with separate gateways, a runner that did not
// ask for SSH builds at start makes no SSH call.
func TestSSHRunnerWithoutSSH(t *testing.T) {
	eachBackendSSH(t, 1, true, func(t *testing.T, e *env) {
		ctx := context.Background()
		c := NewClient(e.urls, e.runner(t, "plain"), nil)
		if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
			t.Fatal(err)
		}
		id := e.queue(t, build.Spec{}, false)
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v", b, err)
		}
		key, _, _ := sshca.NewKey("x")
		if _, err := c.Issue(ctx, id, build.Alias(id), time.Now().Add(time.Minute), key.PublicKey()); api.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "did not start to run SSH builds") {
			t.Errorf("issue: %v; want 409", err)
		}
	})
}

// TestSSHGateway: a runner controls the gateways for its own builds only,
// with the key the server issued; it reads the gateways' events of its
// builds only, and is woken for them.
func TestSSHGateway(t *testing.T) {
	eachBackendSSH(t, 1, true, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		id := e.queueSSH(t, 10*time.Minute)
		other := e.queueSSH(t, 10*time.Minute)
		c, _ := e.sshRunner(t, "r1")
		c2, _ := e.sshRunner(t, "r2")
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v", b, err)
		}
		if b, _, err := c2.ClaimBuild(ctx); err != nil || b.ID != other {
			t.Fatalf("r2's claim: %v, %v", b, err)
		}
		alias := build.Alias(id)
		gw := func(c *Client, req GatewayRequest) error {
			return c.call(ctx, http.MethodPost, buildPath(id, "/gateway"), req, nil)
		}
		if err := gw(c, GatewayRequest{Op: "open", Alias: alias}); api.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "issue it first") {
			t.Errorf("open before the credential is issued: %v; want 409", err)
		}
		hostKey, _, _ := sshca.NewKey(alias)
		issued, err := c.Issue(ctx, id, alias, time.Now().Add(5*time.Minute), hostKey.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		wrongKey, _, _ := sshca.NewKey("wrong")
		for name, tc := range map[string]struct {
			c    *Client
			req  GatewayRequest
			code int
		}{
			"another runner":    {c2, GatewayRequest{Op: "open", Alias: alias}, http.StatusForbidden},
			"another alias":     {c, GatewayRequest{Op: "open", Alias: build.Alias(other)}, http.StatusBadRequest},
			"no alias":          {c, GatewayRequest{Op: "open"}, http.StatusBadRequest},
			"another key":       {c, GatewayRequest{Op: "open", Alias: alias, Key: authorizedKey(t, wrongKey.PublicKey())}, http.StatusBadRequest},
			"an unknown op":     {c, GatewayRequest{Op: "revoke-all", Alias: alias}, http.StatusBadRequest},
			"drain, no reason":  {c, GatewayRequest{Op: "drain", Alias: alias}, http.StatusBadRequest},
			"another's forget":  {c2, GatewayRequest{Op: "forget", Alias: alias}, http.StatusForbidden},
			"another's discon.": {c2, GatewayRequest{Op: "disconnect", Alias: alias}, http.StatusForbidden},
		} {
			if err := gw(tc.c, tc.req); api.StatusOf(err) != tc.code {
				t.Errorf("%s: %v; want %d", name, err, tc.code)
			}
		}
		if _, err := e.st.GatewayAccessOf(ctx, alias); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("refused calls recorded access: %v", err)
		}
		g := c.Gateway()
		g.Open(alias, issued.UserKey)
		acc, err := e.st.GatewayAccessOf(ctx, alias)
		if err != nil || !acc.Open || acc.Key != authorizedKey(t, issued.UserKey) {
			t.Fatalf("after open: %+v, %v; want open for the issued key", acc, err)
		}
		g.Drain(alias, "the build finished")
		g.Disconnect(alias)
		if acc, err := e.st.GatewayAccessOf(ctx, alias); err != nil || acc.Open || acc.Reason != "the build finished" || acc.Disconnects != 1 {
			t.Errorf("after drain and disconnect: %+v, %v", acc, err)
		}
		g.Forget(alias, issued.UserKey)
		if _, err := e.st.GatewayAccessOf(ctx, alias); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after forget: %v; want the access gone", err)
		}

		// The gateways' events: a runner reads those of its builds, and is
		// woken for them.
		if err := c.call(ctx, http.MethodGet, "/api/runner/v1/gateway-events?since=yesterday", nil, nil); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("events since yesterday: %v; want 400", err)
		}
		wake := watch(t, ctx, cancel, c, store.GatewayEventChanges)
		var mu sync.Mutex
		var seen []string // what WatchGateway passed on; guarded by mu
		disconnected := make(chan struct{})
		watched := make(chan struct{})
		defer func() {
			cancel()
			<-watched
		}()
		go func() {
			defer close(watched)
			c.WatchGateway(ctx, func(ev gateway.Event) {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, ev.Alias+" "+ev.Kind)
				if ev.Kind == "disconnect" {
					close(disconnected)
				}
			})
		}()
		since := time.Now().Add(-time.Second)
		for _, ev := range []store.GatewayEvent{{Alias: build.Alias(other), Kind: "connect"}, {Alias: "build-999999", Kind: "connect"}} {
			if err := e.st.AddGatewayEvent(ctx, &ev); err != nil {
				t.Fatal(err)
			}
		}
		// The long poll may not have started yet: connect to r1's build
		// until it wakes r1.
		for woke := false; !woke; {
			if err := e.st.AddGatewayEvent(ctx, &store.GatewayEvent{Alias: alias, Kind: "connect", Remote: "127.0.0.1:5"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wake:
				woke = true
			case <-time.After(3 * time.Second):
			}
		}
		if err := e.st.AddGatewayEvent(ctx, &store.GatewayEvent{Alias: alias, Kind: "disconnect", Remote: "127.0.0.1:5"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-disconnected:
		case <-time.After(gatewayPoll + 10*time.Second):
			t.Fatal("the disconnect from its build was not passed on")
		}
		mu.Lock()
		for _, ev := range seen {
			if !strings.HasPrefix(ev, alias+" ") {
				t.Errorf("another build's event passed on: %s (all: %v)", ev, seen)
			}
		}
		mu.Unlock()
		evs, err := c2.GatewayEventsSince(ctx, since)
		if err != nil || len(evs) == 0 || slices.ContainsFunc(evs, func(ev store.GatewayEvent) bool { return ev.Alias != build.Alias(other) }) {
			t.Errorf("r2's events: %+v, %v; want its build's only", evs, err)
		}
	})
}

// TestRequests: a runner takes the pending requests to its builds (only
// its own), is woken for them, and answers them; it cannot answer
// another runner's.
func TestRequests(t *testing.T) {
	eachBackend(t, 1, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		id := e.queue(t, build.Spec{}, false)
		other := e.queue(t, build.Spec{}, false)
		c := NewClient(e.urls, e.runner(t, "r1"), nil)
		c2 := NewClient(e.urls, e.runner(t, "r2"), nil)
		for _, c := range []*Client{c, c2} {
			if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if b, _, err := c.ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v", b, err)
		}
		if b, _, err := c2.ClaimBuild(ctx); err != nil || b.ID != other {
			t.Fatalf("claim: %v, %v", b, err)
		}
		wake := watch(t, ctx, cancel, c, store.BuildRequestChanges)
		q, err := e.st.AddBuildRequest(ctx, store.BuildRequest{BuildID: id, Kind: store.RequestExtend, By: 10 * time.Minute, Who: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.AddBuildRequest(ctx, store.BuildRequest{BuildID: other, Kind: store.RequestContinue, Who: "bob"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wake:
		case <-time.After(10 * time.Second):
			t.Fatal("not woken for the request")
		}
		qs, err := c.PendingRequests(ctx)
		if err != nil || len(qs) != 1 || qs[0].ID != q || qs[0].BuildID != id || qs[0].Kind != store.RequestExtend || qs[0].By != 10*time.Minute || qs[0].Who != "alice" {
			t.Fatalf("pending: %+v, %v; want r1's extend of build %d only", qs, err, id)
		}
		if err := c2.AnswerRequest(ctx, q, ""); api.StatusOf(err) != http.StatusForbidden {
			t.Errorf("r2 answers r1's request: %v; want 403", err)
		}
		if err := c.AnswerRequest(ctx, q+100, ""); api.StatusOf(err) != http.StatusNotFound {
			t.Errorf("answer no request: %v; want 404", err)
		}
		if err := c.call(ctx, http.MethodPost, "/api/runner/v1/requests/x", AnswerRequest{}, nil); api.StatusOf(err) != http.StatusBadRequest {
			t.Errorf("answer request x: %v; want 400", err)
		}
		if err := c.AnswerRequest(ctx, q, "the build's SSH access has ended"); err != nil {
			t.Fatal(err)
		}
		if r, err := e.st.BuildRequestOf(ctx, q); err != nil || !r.Done || r.Err != "the build's SSH access has ended" {
			t.Errorf("the answered request: %+v, %v", r, err)
		}
		if qs, err := c.PendingRequests(ctx); err != nil || len(qs) != 0 {
			t.Errorf("pending after the answer: %+v, %v", qs, err)
		}
	})
}
