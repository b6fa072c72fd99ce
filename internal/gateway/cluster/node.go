package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/store"
)

// NodeStore is what a Node needs of the store.
type NodeStore interface {
	GatewayAccessAll(ctx context.Context) ([]store.GatewayAccess, error)
	GatewayAccessOf(ctx context.Context, alias string) (*store.GatewayAccess, error)
	GetBuildSSH(ctx context.Context, id int64) (*store.BuildSSH, error)
	PutGatewayRoute(ctx context.Context, r store.GatewayRoute) error
	RenewGatewayRoutes(ctx context.Context, id string, aliases []string, expires time.Time) error
	DeleteGatewayRoute(ctx context.Context, alias, id string) error
	GatewayRouteOf(ctx context.Context, alias string, now time.Time) (*store.GatewayRoute, error)
	AddGatewayEvent(ctx context.Context, ev *store.GatewayEvent) error
	Subscribe(id int64) (<-chan struct{}, func())
}

// RouteTTL is how long a gateway's entry in the registry of tunnels is
// valid; the gateway renews its entries every third of it. A gateway
// that dies leaves entries that others ignore after at most this long
// (sooner: its builders register again through another gateway).
const RouteTTL = 30 * time.Second

// Node is one gateway of a cluster: set it as its gateway's Cluster and
// Events, and run Run (the access state, the registry) and ServePeers
// (the peer link). Set the fields before use.
type Node struct {
	Store   NodeStore
	Gateway *gateway.Gateway
	// ID names the gateway in the registry (default: random at first use).
	ID string
	// PeerAddr is where the other gateways reach this one's peer link
	// (ServePeers), host:port.
	PeerAddr string
	// HostCA is the host CA; PeerSigner presents this gateway's host
	// certificate (sshca.HostCA.HostSigner). Peers authenticate each other
	// with these, both ways.
	HostCA     ssh.PublicKey
	PeerSigner ssh.Signer
	Logger     *slog.Logger

	initOnce sync.Once
	peers    peerPool
	peerSrv  peerServer

	mu      sync.Mutex
	applied map[string]store.GatewayAccess // guarded by mu: the access applied to the gateway, by alias
	jobs    []func(context.Context)        // guarded by mu: the store writes queued (in order)
	kick    chan struct{}                  // wakes the writer
}

func (n *Node) init() {
	n.initOnce.Do(func() {
		if n.ID == "" {
			var b [8]byte
			_, _ = rand.Read(b[:])
			n.ID = hex.EncodeToString(b[:])
		}
		n.kick = make(chan struct{}, 1)
		n.applied = map[string]store.GatewayAccess{}
	})
}

func (n *Node) log() *slog.Logger {
	if n.Logger != nil {
		return n.Logger
	}
	return slog.Default()
}

// Run keeps the gateway's access state as the store's, renews the
// gateway's entries in the registry and writes its events, until ctx
// ends. On return the entries of the tunnels it still holds are removed.
func (n *Node) Run(ctx context.Context) error {
	n.init()
	wake, unsub := n.Store.Subscribe(store.GatewayAccessChanges)
	defer unsub()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		n.writer(ctx)
	}()
	defer func() {
		<-writerDone
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		for _, alias := range n.Gateway.Routes() {
			_ = n.Store.DeleteGatewayRoute(ctx, alias, n.ID)
		}
	}()
	renew := time.NewTicker(RouteTTL / 3)
	defer renew.Stop()
	// A full read now and then, should a notification be lost.
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	for {
		if err := n.sync(ctx); err != nil && ctx.Err() == nil {
			n.log().Warn("gateway: read the builds' access from the database", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-resync.C:
		case <-renew.C:
			n.enqueue(func(ctx context.Context) {
				if err := n.Store.RenewGatewayRoutes(ctx, n.ID, n.Gateway.Routes(), time.Now().Add(RouteTTL)); err != nil {
					n.log().Warn("gateway: renew the registry's entries", "err", err)
				}
			})
		}
	}
}

// sync applies every build's access in the store to the gateway, and
// forgets the builds the store no longer has.
func (n *Node) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	all, err := n.Store.GatewayAccessAll(ctx)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(all))
	for _, a := range all {
		present[a.Alias] = true
		n.apply(a)
	}
	n.mu.Lock()
	var gone []store.GatewayAccess
	for alias, a := range n.applied {
		if !present[alias] {
			gone = append(gone, a)
			delete(n.applied, alias)
		}
	}
	n.mu.Unlock()
	for _, a := range gone {
		if k := parseKey(a.Key); k != nil {
			n.Gateway.Forget(a.Alias, k)
		}
	}
	return nil
}

func parseKey(s string) ssh.PublicKey {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil
	}
	return k
}

// apply brings the gateway's view of a.Alias to a. Only the sync loop
// calls it, in the order of its reads.
func (n *Node) apply(a store.GatewayAccess) {
	n.mu.Lock()
	prev, known := n.applied[a.Alias]
	n.applied[a.Alias] = a
	n.mu.Unlock()
	if known && prev == a {
		return
	}
	key := parseKey(a.Key)
	if key == nil {
		n.log().Warn("gateway: unreadable key in the database", "build", a.Alias)
		return
	}
	switch {
	case a.Open:
		n.Gateway.Open(a.Alias, key)
	case !known || prev.Open || prev.Reason != a.Reason:
		n.Gateway.Closed(a.Alias, key, a.Reason)
	}
	if !a.Open && (!known || a.Disconnects > prev.Disconnects) {
		n.Gateway.Disconnect(a.Alias)
	}
}

// BuilderKey implements gateway.Cluster: key must be the SSH host key of
// the build's machine (which only its builder holds), and the build's
// access open in the store now. (It reads, and does not apply, the
// access: a read that a later change overtook must not reopen it.)
func (n *Node) BuilderKey(alias string, key ssh.PublicKey) bool {
	n.init()
	id, err := build.ParseAlias(alias)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	a, err := n.Store.GatewayAccessOf(ctx, alias)
	if err != nil || !a.Open {
		return false
	}
	cred, err := n.Store.GetBuildSSH(ctx, id)
	if err != nil {
		return false
	}
	hk := parseKey(cred.HostKey)
	return hk != nil && hk.Type() == key.Type() && string(hk.Marshal()) == string(key.Marshal())
}

// Bound implements gateway.Cluster: it records (or removes) this
// gateway's entry for alias in the registry.
func (n *Node) Bound(alias string, held bool) {
	n.init()
	n.enqueue(func(ctx context.Context) {
		var err error
		if held {
			err = n.Store.PutGatewayRoute(ctx, store.GatewayRoute{Alias: alias, GatewayID: n.ID, PeerAddr: n.PeerAddr, ExpiresAt: time.Now().Add(RouteTTL)})
		} else {
			err = n.Store.DeleteGatewayRoute(ctx, alias, n.ID)
		}
		if err != nil {
			n.log().Warn("gateway: registry", "build", alias, "err", err)
		}
	})
}

// Event records a gateway event for the runner that owns the build: set
// it as the gateway's Events.
func (n *Node) Event(ev gateway.Event) {
	n.init()
	n.enqueue(func(ctx context.Context) {
		if err := n.Store.AddGatewayEvent(ctx, &store.GatewayEvent{GatewayID: n.ID, Alias: ev.Alias, Kind: ev.Kind,
			Remote: ev.Remote, Client: ev.Client, Detail: ev.Detail}); err != nil {
			n.log().Warn("gateway: record an event", "build", ev.Alias, "kind", ev.Kind, "err", err)
		}
	})
}

// enqueue queues a store write; the writer runs them in order, so that a
// tunnel's registration and removal, or a connection's events, never
// swap. It never blocks (the gateway calls Bound with its lock held).
func (n *Node) enqueue(f func(context.Context)) {
	n.mu.Lock()
	n.jobs = append(n.jobs, f)
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// writer runs the queued writes until ctx ends, then those left (each
// bounded by timeout).
func (n *Node) writer(ctx context.Context) {
	for {
		n.mu.Lock()
		jobs := n.jobs
		n.jobs = nil
		n.mu.Unlock()
		for _, f := range jobs {
			wctx, cancel := context.WithTimeout(context.Background(), timeout)
			f(wctx)
			cancel()
		}
		if len(jobs) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			n.mu.Lock()
			left := len(n.jobs)
			n.mu.Unlock()
			if left == 0 {
				return
			}
		case <-n.kick:
		}
	}
}

// Dial implements gateway.Cluster: it reaches alias's builder through
// the peer that holds its tunnel.
func (n *Node) Dial(alias, originHost string, originPort uint32) (io.ReadWriteCloser, error) {
	n.init()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := n.Store.GatewayRouteOf(ctx, alias, time.Now())
	if errors.Is(err, store.ErrNotFound) || err == nil && r.GatewayID == n.ID {
		return nil, errors.New(gateway.NotConnected(alias))
	}
	if err != nil {
		n.log().Warn("gateway: look up a tunnel", "build", alias, "err", err)
		return nil, errors.New("the gateway could not look up " + alias + "'s machine: try again")
	}
	ch, err := n.peers.open(ctx, n, r.PeerAddr, peerRequest{Alias: alias, OriginHost: originHost, OriginPort: originPort})
	if err != nil {
		n.log().Warn("gateway: forward to the peer holding the tunnel", "build", alias, "peer", r.PeerAddr, "err", err)
		return nil, errors.New(alias + "'s machine is connected to another gateway, which did not answer: try again in a few seconds")
	}
	return ch, nil
}

var _ gateway.Cluster = (*Node)(nil)
