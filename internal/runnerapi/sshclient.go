package runnerapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gateway/cluster"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/store"
)

// Issue implements runner.Credentials: the servers issue build id's
// credential and keep it; the runner gets its public parts.
func (c *Client) Issue(ctx context.Context, id int64, alias string, expires time.Time, hostKey ssh.PublicKey) (*runner.Issued, error) {
	var out IssueResponse
	if err := c.call(ctx, http.MethodPost, buildPath(id, "/ssh"), IssueRequest{Alias: alias, Expires: expires, HostKey: authorized(hostKey)}, &out); err != nil {
		return nil, fmt.Errorf("issue the SSH credential of build %d: %w", id, err)
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.UserCA))
	if err != nil {
		return nil, fmt.Errorf("issue the SSH credential of build %d: the server's user CA: %w", id, err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.UserKey))
	if err != nil {
		return nil, fmt.Errorf("issue the SSH credential of build %d: the server's user key: %w", id, err)
	}
	return &runner.Issued{UserCA: ca, UserKey: key}, nil
}

// Destroy implements runner.Credentials.
func (c *Client) Destroy(ctx context.Context, id int64) error {
	if err := c.call(ctx, http.MethodDelete, buildPath(id, "/ssh"), nil, nil); err != nil {
		return fmt.Errorf("destroy the SSH key of build %d: %w", id, err)
	}
	return nil
}

// Gateway returns the control of the gateways for the runner's builds,
// through the servers.
func (c *Client) Gateway() runner.Gateway { return clientGateway{c} }

// clientGateway implements runner.Gateway through the servers. Like a
// gateway's, its methods have no error result: they log.
type clientGateway struct{ c *Client }

// gatewayTimeout bounds one gateway control call.
const gatewayTimeout = 10 * time.Second

func (g clientGateway) do(req GatewayRequest) {
	id, err := build.ParseAlias(req.Alias)
	if err != nil {
		g.c.log.Error("gateway control: "+req.Op, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayTimeout)
	defer cancel()
	if err := g.c.call(ctx, http.MethodPost, buildPath(id, "/gateway"), req, nil); err != nil {
		g.c.log.Error("gateway control: "+req.Op, "build", req.Alias, "err", err)
	}
}

func (g clientGateway) Open(alias string, key ssh.PublicKey) {
	g.do(GatewayRequest{Op: "open", Alias: alias, Key: authorized(key)})
}

func (g clientGateway) Drain(alias, reason string) {
	g.do(GatewayRequest{Op: "drain", Alias: alias, Reason: truncate(reason, maxText)})
}

func (g clientGateway) Disconnect(alias string) {
	g.do(GatewayRequest{Op: "disconnect", Alias: alias})
}

func (g clientGateway) Forget(alias string, key ssh.PublicKey) {
	g.do(GatewayRequest{Op: "forget", Alias: alias, Key: authorized(key)})
}

// GatewayEventsSince returns the gateways' events of the runner's builds
// recorded at since or later.
func (c *Client) GatewayEventsSince(ctx context.Context, since time.Time) ([]store.GatewayEvent, error) {
	var evs []GatewayEvent
	q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}}
	if err := c.call(ctx, http.MethodGet, "/api/runner/v1/gateway-events?"+q.Encode(), nil, &evs); err != nil {
		return nil, fmt.Errorf("gateway events: %w", err)
	}
	out := make([]store.GatewayEvent, len(evs))
	for i, ev := range evs {
		out[i] = store.GatewayEvent{ID: ev.ID, Time: ev.Time, Alias: ev.Alias, Kind: ev.Kind, Remote: ev.Remote, Client: ev.Client, Detail: ev.Detail}
	}
	return out, nil
}

// gatewayPoll is how often WatchGateway reads the events unwoken: an event
// recorded between two long polls wakes no one.
const gatewayPoll = 10 * time.Second

// WatchGateway passes the gateways' events of the runner's builds to
// events, once each, until ctx ends. Watch wakes it.
func (c *Client) WatchGateway(ctx context.Context, events func(gateway.Event)) {
	wake, unsub := c.Subscribe(store.GatewayEventChanges)
	defer unsub()
	tick := time.NewTicker(gatewayPoll)
	defer tick.Stop()
	feed := cluster.NewEventFeed()
	for {
		since := feed.Since()
		evs, err := c.GatewayEventsSince(ctx, since)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("read the gateways' events", "err", err)
		}
		for _, ev := range feed.Fresh(since, evs) {
			events(ev)
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// PendingRequests returns the unanswered requests to the runner's builds.
func (c *Client) PendingRequests(ctx context.Context) ([]store.BuildRequest, error) {
	var qs []BuildRequest
	if err := c.call(ctx, http.MethodGet, "/api/runner/v1/requests", nil, &qs); err != nil {
		return nil, fmt.Errorf("requests to the runner's builds: %w", err)
	}
	out := make([]store.BuildRequest, len(qs))
	for i, q := range qs {
		out[i] = store.BuildRequest{ID: q.ID, BuildID: q.Build, Kind: q.Kind, By: q.By, Who: q.Who}
	}
	return out, nil
}

// AnswerRequest records the outcome of request id (errText "" if done).
func (c *Client) AnswerRequest(ctx context.Context, id int64, errText string) error {
	if err := c.call(ctx, http.MethodPost, "/api/runner/v1/requests/"+strconv.FormatInt(id, 10), AnswerRequest{Error: truncate(errText, maxText)}, nil); err != nil {
		return fmt.Errorf("answer request %d: %w", id, err)
	}
	return nil
}
