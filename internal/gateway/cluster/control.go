// Package cluster runs several SSH gateways (`hangar gateway`) behind one
// address, sharing their state through the store (PostgreSQL):
//
//   - Control is the runner's side: it implements the gateway-control
//     methods the runner calls on an in-process gateway (Open, Drain,
//     Disconnect, Revoke, Forget) by writing each build's access state to
//     the store, and brings the gateways' events back to the runner. A
//     server's runner calls it directly; a runner on another host through
//     the runner API, whose server calls it (package runnerapi).
//   - Node is a gateway's side (gateway.Cluster): it applies the access
//     state to its gateway as it changes, records which tunnels it holds
//     (the registry, with an expiry it renews), records its events, and
//     forwards a user's hop to the gateway holding the build's tunnel
//     over a peer link (SSH, both ends authenticated by host certificates
//     of the one host CA).
//
// See docs/gateways.md.
package cluster

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/store"
)

// ControlStore is what Control needs of the store.
type ControlStore interface {
	SetGatewayAccess(ctx context.Context, alias, key string, open bool, reason string) error
	DisconnectGateway(ctx context.Context, alias string) error
	ForgetGatewayAccess(ctx context.Context, alias, key string) error
	GatewayEventsSince(ctx context.Context, since time.Time) ([]store.GatewayEvent, error)
	PruneGatewayEvents(ctx context.Context, before time.Time) error
	PruneGatewayRoutes(ctx context.Context, now time.Time) error
	CloseEndedGatewayAccess(ctx context.Context, reason string) (int64, error)
	PruneGatewayAccess(ctx context.Context, before time.Time) error
	GatewayRouteOf(ctx context.Context, alias string, now time.Time) (*store.GatewayRoute, error)
	Subscribe(id int64) (<-chan struct{}, func())
}

// EventWindow is how far back Control reads the gateways' events at each
// wake-up (it skips those it has seen). It covers the commit delays of
// PostgreSQL sequences and clock differences between hosts.
const EventWindow = 2 * time.Minute

// AccessRetention is how long a build's closed access stays in the store
// (gateways tell newcomers why it closed meanwhile).
const AccessRetention = time.Hour

// EventRetention is how long the gateways' events stay in the store.
const EventRetention = 10 * time.Minute

// Control controls the gateways of a cluster from a runner through the
// store. It has the method set of *gateway.Gateway that a runner uses.
// Its methods log the store's errors (they have no error result, like a
// gateway's).
type Control struct {
	Store ControlStore
	// Events is told of the gateways' events (for every build: a runner
	// ignores those of builds it does not own). It must not block long.
	Events func(gateway.Event)
	Logger *slog.Logger
}

func (c *Control) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// timeout bounds one store write.
const timeout = 10 * time.Second

func (c *Control) do(what, alias string, f func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		c.log().Error("gateway control: "+what, "build", alias, "err", err)
	}
}

func authorized(k ssh.PublicKey) string {
	if k == nil {
		return ""
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Open admits alias's credentials (see gateway.Gateway.Open) on every
// gateway.
func (c *Control) Open(alias string, key ssh.PublicKey) {
	c.do("open", alias, func(ctx context.Context) error {
		return c.Store.SetGatewayAccess(ctx, alias, authorized(key), true, "")
	})
}

// Drain closes alias's access to newcomers on every gateway (see
// gateway.Gateway.Drain).
func (c *Control) Drain(alias, reason string) {
	c.do("drain", alias, func(ctx context.Context) error {
		return c.Store.SetGatewayAccess(ctx, alias, "", false, reason)
	})
}

// Disconnect closes alias's connections and drops its route on every
// gateway, if its access is closed (see gateway.Gateway.Disconnect).
func (c *Control) Disconnect(alias string) {
	c.do("disconnect", alias, func(ctx context.Context) error {
		return c.Store.DisconnectGateway(ctx, alias)
	})
}

// Revoke is Drain and Disconnect at once.
func (c *Control) Revoke(alias, reason string) {
	c.Drain(alias, reason)
	c.Disconnect(alias)
}

// Forget drops alias's access if it is closed and was for key.
func (c *Control) Forget(alias string, key ssh.PublicKey) {
	c.do("forget", alias, func(ctx context.Context) error {
		return c.Store.ForgetGatewayAccess(ctx, alias, authorized(key))
	})
}

// Routed reports whether a gateway holds alias's tunnel (the registry
// has a live entry for it).
func (c *Control) Routed(alias string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.Store.GatewayRouteOf(ctx, alias, time.Now())
	return err == nil
}

// Run passes the gateways' events to Events until ctx ends, and now and
// then closes the access of ended builds that is still open (a runner
// that crashed), and prunes old events, expired routes and old closed
// access from the store. Events
// recorded before Run started (less a few seconds) are not passed.
func (c *Control) Run(ctx context.Context) error {
	wake, unsub := c.Store.Subscribe(store.GatewayEventChanges)
	defer unsub()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	feed := NewEventFeed()
	var lastPrune time.Time
	for {
		since := feed.Since()
		evs, err := c.Store.GatewayEventsSince(ctx, since)
		if err != nil && ctx.Err() == nil {
			c.log().Warn("gateway control: read the gateways' events", "err", err)
		}
		for _, ev := range feed.Fresh(since, evs) {
			if c.Events != nil {
				c.Events(ev)
			}
		}
		if now := time.Now(); now.Sub(lastPrune) > time.Minute {
			lastPrune = now
			if err := c.Store.PruneGatewayEvents(ctx, now.Add(-EventRetention)); err != nil && ctx.Err() == nil {
				c.log().Warn("gateway control: prune the gateways' events", "err", err)
			}
			if err := c.Store.PruneGatewayRoutes(ctx, now); err != nil && ctx.Err() == nil {
				c.log().Warn("gateway control: prune expired routes", "err", err)
			}
			// What a runner that crashed left open; closed access is
			// forgotten after an hour (the runner's Forget, should it
			// not come).
			if n, err := c.Store.CloseEndedGatewayAccess(ctx, "the build has ended"); err != nil && ctx.Err() == nil {
				c.log().Warn("gateway control: close the access of ended builds", "err", err)
			} else if n > 0 {
				c.log().Warn("gateway control: closed the access of ended builds left open", "count", n)
			}
			if err := c.Store.PruneGatewayAccess(ctx, now.Add(-AccessRetention)); err != nil && ctx.Err() == nil {
				c.log().Warn("gateway control: prune closed access", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// EventFeed passes on the gateways' events once each, read again and
// again over a window of EventWindow (the store gives no order in which
// events become visible). Make it with NewEventFeed.
type EventFeed struct {
	start time.Time
	seen  map[int64]time.Time // event id: its time
}

// NewEventFeed returns a feed of the events recorded from now on (less a
// few seconds: a gateway's clock may be a little behind).
func NewEventFeed() *EventFeed {
	return &EventFeed{start: time.Now().Add(-5 * time.Second), seen: map[int64]time.Time{}}
}

// Since is the time to read events from now.
func (f *EventFeed) Since() time.Time {
	since := time.Now().Add(-EventWindow)
	if since.Before(f.start) {
		since = f.start
	}
	return since
}

// Fresh returns those of evs, read from since, that it has not returned
// before.
func (f *EventFeed) Fresh(since time.Time, evs []store.GatewayEvent) []gateway.Event {
	var out []gateway.Event
	for _, ev := range evs {
		if _, ok := f.seen[ev.ID]; ok {
			continue
		}
		f.seen[ev.ID] = ev.Time
		out = append(out, gateway.Event{Alias: ev.Alias, Kind: ev.Kind, Remote: ev.Remote, Client: ev.Client, Detail: ev.Detail})
	}
	for id, t := range f.seen {
		if t.Before(since.Add(-time.Minute)) {
			delete(f.seen, id)
		}
	}
	return out
}
