// Package gateway is Hangar's public SSH gateway. Users reach a build's
// machine through it with ProxyJump: the gateway admits a connection only
// with a credential of a build whose SSH window is open now, allows only a
// direct-tcpip channel to that build's alias, and copies bytes to the
// builder's reverse tunnel. It never sees the user's session in clear: the
// SSH session inside is end to end between the user and the builder.
package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/sshalgo"
	"github.com/hangar-ci/hangar/internal/sshca"
)

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// Event is something that happened on the gateway for a build.
type Event struct {
	Alias  string
	Kind   string // "connect", "disconnect", "channel"
	Remote string // the client's address
	Client string // the client's SSH version (connect)
	Detail string
}

// Gateway is the SSH gateway. Set HostKey and CA before Serve.
type Gateway struct {
	HostKey ssh.Signer
	// HostCert, if set, presents a host certificate of HostKey signed by
	// the host CA (sshca.HostCA), offered beside the plain key: clients
	// that trust the CA take it, older scripts pinning the key take that.
	HostCert ssh.Signer
	CA       ssh.PublicKey
	// Cluster, if set, makes the gateway one of several (see Cluster):
	// builders may open their tunnels here, and a user's hop to a build
	// whose tunnel another gateway holds is forwarded to it.
	Cluster Cluster
	Logger  *slog.Logger
	// Events, if set, is told of connections and channels. It must not block.
	Events func(Event)
	// HandshakeTimeout bounds TCP accept to authenticated (default 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that moved no bytes for so long
	// (default 15 minutes; the generated ssh_config sends keepalives).
	IdleTimeout time.Duration
	// MaxConns bounds open connections, authenticated or not
	// (DefaultMaxConns if zero); further ones are closed at once.
	MaxConns int
	// MaxUnauthenticated bounds the connections that have not
	// authenticated yet (DefaultMaxUnauthenticated if zero, at most half of
	// MaxConns), and MaxUnauthenticatedPerSource those from one IP address
	// (DefaultMaxUnauthenticatedPerSource if zero). A new connection always
	// gets in: when a bound is reached, the oldest unauthenticated
	// connection (of the source, or of all) is closed to make room, so that
	// idle connections held from many addresses cannot shut a real user
	// out. Authenticated connections are never closed for this.
	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	// AuthDelay slows failed authentications by source address (the
	// answer to each failure in a row waits twice as long, up to its Max);
	// each failure is logged at info level. Set its fields before Serve.
	AuthDelay netx.AuthDelay

	// life holds the listeners and every open TCP connection, each until
	// the goroutines serving it have returned.
	life netx.Tracker
	// unauth counts and evicts unauthenticated connections.
	unauth netx.PreAuth

	mu      sync.Mutex
	builds  map[string]*entry       // guarded by mu; by alias
	pending map[string]*pendingData // guarded by mu; data connections asked for, by token
}

// entry is one build known to the gateway.
type entry struct {
	key    ssh.PublicKey // the build's plain public key
	open   bool
	reason string   // why access closed
	route  ssh.Conn // the builder's tunnel, nil until bound
	users  map[*ssh.ServerConn]struct{}
}

func (g *Gateway) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

func (g *Gateway) emit(ev Event) {
	if g.Events != nil {
		g.Events(ev)
	}
}

func (g *Gateway) entryLocked(alias string) *entry {
	if g.builds == nil {
		g.builds = make(map[string]*entry)
	}
	e := g.builds[alias]
	if e == nil {
		e = &entry{users: make(map[*ssh.ServerConn]struct{})}
		g.builds[alias] = e
	}
	return e
}

// Open admits, from now on, the credentials of alias: a certificate of the
// CA with principal alias, or exactly key.
func (g *Gateway) Open(alias string, key ssh.PublicKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entryLocked(alias)
	e.key, e.open, e.reason = key, true, ""
}

// Revoke closes alias's access: its credentials are refused from now on
// (with reason as the message), its user connections are closed and its
// route is dropped. It is Drain and Disconnect at once.
func (g *Gateway) Revoke(alias, reason string) {
	g.Drain(alias, reason)
	g.Disconnect(alias)
}

// Drain closes alias's access to newcomers: its credentials are refused
// from now on (with reason as the message) and its open connections may
// open no new channel, but they, their channels and the route stay, so
// that the builder can tell its sessions why they end before it closes
// them. Disconnect (or Revoke) ends them.
func (g *Gateway) Drain(alias, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entryLocked(alias)
	e.open, e.reason = false, reason
}

// Disconnect closes the user connections of alias and drops its route,
// if its access is closed (Drain, Revoke); it does nothing while access
// is open.
func (g *Gateway) Disconnect(alias string) {
	g.mu.Lock()
	e := g.builds[alias]
	if e == nil || e.open {
		g.mu.Unlock()
		return
	}
	users := e.users
	e.users = make(map[*ssh.ServerConn]struct{})
	route := e.route
	e.route = nil
	if route != nil && g.Cluster != nil {
		g.Cluster.Bound(alias, false)
	}
	g.mu.Unlock()
	for c := range users {
		c.Close()
	}
	if route != nil {
		route.Close()
	}
}

// Forget drops what the gateway knows of alias if its access is closed and
// was for key (so a late call never touches a newer build of that alias).
func (g *Gateway) Forget(alias string, key ssh.PublicKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.builds[alias]; e != nil && !e.open && e.key != nil && key != nil && string(e.key.Marshal()) == string(key.Marshal()) {
		delete(g.builds, alias)
	}
}

// Bind makes conn, a builder's link, the route to alias. The builder may
// bind only its own alias: the caller checks that conn authenticated as
// alias. The returned func unbinds it (a newer Bind replaces an older one,
// as when the builder reconnects).
func (g *Gateway) Bind(alias string, conn ssh.Conn) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.builds[alias]
	if e == nil || !e.open {
		return nil, fmt.Errorf("no open SSH access for %s", alias)
	}
	e.route = conn
	if g.Cluster != nil {
		g.Cluster.Bound(alias, true)
	}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if e.route == conn {
			e.route = nil
			if g.Cluster != nil {
				g.Cluster.Bound(alias, false)
			}
		}
	}, nil
}

// pendingData is a data connection the gateway asked a builder for.
type pendingData struct {
	alias string
	from  string // the builder's IP: the data connection must come from it
	ch    chan net.Conn
}

// Deliver implements link.Tunnels: it takes the data connection a builder
// opened for token.
func (g *Gateway) Deliver(token string, c net.Conn) bool {
	g.mu.Lock()
	p := g.pending[token]
	delete(g.pending, token)
	g.mu.Unlock()
	if p == nil || hostOf(c.RemoteAddr()) != p.from {
		return false
	}
	select {
	case p.ch <- c:
		return true
	default:
		return false
	}
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}

// dialBuilder asks the builder behind route for a data connection, and
// waits for it. nil means the builder does not offer them (or failed).
func (g *Gateway) dialBuilder(route ssh.Conn, alias string) net.Conn {
	var b [24]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	p := &pendingData{alias: alias, from: hostOf(route.RemoteAddr()), ch: make(chan net.Conn, 1)}
	g.mu.Lock()
	if g.pending == nil {
		g.pending = make(map[string]*pendingData)
	}
	g.pending[token] = p
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.pending, token)
		g.mu.Unlock()
	}()
	ok, _, err := route.SendRequest(link.DialRequest, true, []byte(token))
	if err != nil || !ok {
		return nil
	}
	select {
	case c := <-p.ch:
		return c
	case <-time.After(10 * time.Second):
		g.mu.Lock()
		delete(g.pending, token)
		g.mu.Unlock()
		select { // delivered at the last moment
		case c := <-p.ch:
			c.Close()
		default:
		}
		return nil
	}
}

// Routed reports whether alias has a route (its builder's tunnel is up).
func (g *Gateway) Routed(alias string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.builds[alias]
	return e != nil && e.route != nil
}

func (g *Gateway) config() (*ssh.ServerConfig, error) {
	cfg := &ssh.ServerConfig{
		MaxAuthTries: 6,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			alias := meta.User()
			g.mu.Lock()
			e := g.builds[alias]
			var open bool
			var plain ssh.PublicKey
			if e != nil {
				open, plain = e.open, e.key
			}
			g.mu.Unlock()
			if !open {
				return nil, errors.New("no open SSH access")
			}
			c := sshca.Checker{CA: g.CA, Principal: alias, Key: plain}
			if err := c.Check(key); err != nil {
				// Among several gateways, it may be the build's builder
				// opening its tunnel (asked only for open builds).
				if p := g.builderAuth(alias, key); p != nil {
					return p, nil
				}
				return nil, err
			}
			return &ssh.Permissions{Extensions: map[string]string{"alias": alias}}, nil
		},
		BannerCallback: func(meta ssh.ConnMetadata) string {
			g.mu.Lock()
			defer g.mu.Unlock()
			if e := g.builds[meta.User()]; e != nil && !e.open && e.reason != "" {
				return "Hangar: " + e.reason + "\n"
			}
			return ""
		},
		ServerVersion: "SSH-2.0-Hangar",
	}
	sshalgo.Server(cfg)
	if err := sshalgo.AddHostKey(cfg, g.HostKey); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if g.HostCert != nil {
		if err := sshalgo.AddHostKey(cfg, g.HostCert); err != nil {
			return nil, fmt.Errorf("gateway: host certificate: %w", err)
		}
	}
	return cfg, nil
}

// authLog returns pc's AuthLogCallback: it logs each failed
// authentication and slows its answer (see AuthDelay), cut short if pc is
// evicted meanwhile; a success starts the source over. The "none" method
// that clients try first is no failure.
func (g *Gateway) authLog(pc *netx.Pending) func(ssh.ConnMetadata, string, error) {
	return func(meta ssh.ConnMetadata, method string, err error) {
		if method == "none" {
			return
		}
		if err == nil {
			g.AuthDelay.Succeeded(meta.RemoteAddr())
			return
		}
		n, wait := g.AuthDelay.Failed(meta.RemoteAddr())
		// err is the callback's own reason or x/crypto's; neither carries
		// key material.
		g.log().Info("gateway: authentication failed", "remote", meta.RemoteAddr().String(), "user", meta.User(),
			"method", method, "reason", err.Error(), "failures_in_a_row", n, "delay", wait)
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-pc.Evicted():
		}
	}
}

// Defaults of the Gateway's zero limits.
const (
	DefaultMaxConns                    = 1024
	DefaultMaxUnauthenticated          = 256
	DefaultMaxUnauthenticatedPerSource = 32
)

// Serve accepts connections on l until Close or Shutdown; then it returns
// ErrServerClosed. It closes l when it returns. It refuses a HostKey that
// is not ed25519.
func (g *Gateway) Serve(l net.Listener) error {
	cfg, err := g.config()
	if err != nil {
		l.Close()
		return err
	}
	maxConns := cmp.Or(max(g.MaxConns, 0), DefaultMaxConns)
	maxUnauth := min(cmp.Or(max(g.MaxUnauthenticated, 0), DefaultMaxUnauthenticated), max(maxConns/2, 1))
	perSource := cmp.Or(max(g.MaxUnauthenticatedPerSource, 0), DefaultMaxUnauthenticatedPerSource)
	return g.life.Serve(l, ErrServerClosed, func(nc net.Conn) {
		_ = g.life.Go(nc, maxConns, func(nc net.Conn) {
			g.handle(nc, cfg, g.unauth.Admit(nc, perSource, maxUnauth))
		})
	})
}

// UnauthenticatedEvictions is the number of unauthenticated connections
// closed to make room for newer ones.
func (g *Gateway) UnauthenticatedEvictions() uint64 { return g.unauth.Evictions() }

// Close closes the listeners and every connection now.
func (g *Gateway) Close() error {
	return g.life.Close()
}

// Shutdown stops accepting connections, then waits until every connection
// has ended (the runner revokes builds' access as they end, which closes
// their users' connections) and the goroutines serving them have
// returned, or ctx ends: then it closes the rest and returns ctx's error.
func (g *Gateway) Shutdown(ctx context.Context) error {
	return g.life.Shutdown(ctx)
}

// handle serves one TCP connection; pc counts it as unauthenticated
// until its handshake ends.
func (g *Gateway) handle(nc net.Conn, base *ssh.ServerConfig, pc *netx.Pending) {
	hs := g.HandshakeTimeout
	if hs <= 0 {
		hs = 10 * time.Second
	}
	idle := g.IdleTimeout
	if idle <= 0 {
		idle = 15 * time.Minute
	}
	// Every byte of the SSH connection (keepalives included) is activity.
	ic := netx.NewIdleConn(nc, idle)
	defer ic.Close()
	_ = ic.SetDeadline(time.Now().Add(hs))
	cfg := *base
	cfg.AuthLogCallback = g.authLog(pc)
	sc, chans, reqs, err := ssh.NewServerConn(ic, &cfg)
	evicted := pc.Done()
	if err != nil {
		g.log().Debug("gateway handshake failed", "remote", nc.RemoteAddr().String(), "evicted", evicted, "err", err)
		return
	}
	if evicted { // it authenticated just as it was evicted: nc is closed
		sc.Close()
		return
	}
	_ = ic.SetDeadline(time.Time{})
	alias := sc.Permissions.Extensions["alias"]
	remote := nc.RemoteAddr().String()
	if sc.Permissions.Extensions["role"] == roleBuilder {
		g.serveBuilder(sc, chans, reqs, alias)
		return
	}

	g.mu.Lock()
	e := g.builds[alias]
	if e == nil || !e.open {
		g.mu.Unlock()
		sc.Close()
		return
	}
	e.users[sc] = struct{}{}
	g.mu.Unlock()
	g.emit(Event{Alias: alias, Kind: "connect", Remote: remote, Client: strings.TrimPrefix(string(sc.ClientVersion()), "SSH-2.0-")})
	start := time.Now()
	defer func() {
		g.mu.Lock()
		delete(e.users, sc)
		g.mu.Unlock()
		g.emit(Event{Alias: alias, Kind: "disconnect", Remote: remote, Detail: time.Since(start).Round(time.Second).String()})
	}()

	// The connection's goroutines end with it: handle waits for them.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nch := range chans {
		if nch.ChannelType() != "direct-tcpip" {
			_ = nch.Reject(ssh.Prohibited, fmt.Sprintf("Hangar's gateway only forwards to %s: connect with the build's script or `ssh -J`", alias))
			continue
		}
		var p forwardPayload
		if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
			continue
		}
		if p.Host != alias || p.Port != 22 {
			_ = nch.Reject(ssh.Prohibited, fmt.Sprintf("this credential reaches only %s port 22, not %s", alias, net.JoinHostPort(p.Host, fmt.Sprint(p.Port))))
			continue
		}
		g.mu.Lock()
		route, open, reason := e.route, e.open, e.reason
		g.mu.Unlock()
		if !open {
			_ = nch.Reject(ssh.Prohibited, "SSH access to "+alias+" is closed: "+reason)
			continue
		}
		if route == nil && g.Cluster == nil {
			_ = nch.Reject(ssh.ConnectionFailed, NotConnected(alias))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.forward(nch, route, alias, p)
		}()
		g.emit(Event{Alias: alias, Kind: "channel", Remote: remote, Detail: "direct-tcpip " + alias + ":22"})
	}
	// The client went: end its forwards too.
	sc.Close()
}

// forwardPayload is RFC 4254's direct-tcpip / forwarded-tcpip payload.
type forwardPayload struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// forward connects a user's direct-tcpip channel to the builder: over a
// data connection the builder dials for it (the session inside is already
// encrypted end to end), or else over a forwarded-tcpip channel of the
// builder's tunnel.
func (g *Gateway) forward(nch ssh.NewChannel, route ssh.Conn, alias string, p forwardPayload) {
	var down io.ReadWriteCloser
	var err error
	if route != nil {
		down, err = g.openBuilder(route, alias, p)
	} else {
		// Another gateway holds the tunnel (or none does).
		down, err = g.Cluster.Dial(alias, p.OriginHost, p.OriginPort)
	}
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	uch, ureqs, err := nch.Accept()
	if err != nil {
		down.Close()
		return
	}
	go ssh.DiscardRequests(ureqs)
	Splice(uch, down)
}

// NotConnected is what a user is told when no gateway holds alias's
// tunnel.
func NotConnected(alias string) string {
	return alias + "'s machine is not connected to the gateway (yet): try again in a few seconds"
}

// openBuilder opens a stream to the builder behind route: a data
// connection the builder dials for it (the session inside is already
// encrypted end to end), or else a forwarded-tcpip channel of the
// builder's tunnel. The error is for the user.
func (g *Gateway) openBuilder(route ssh.Conn, alias string, p forwardPayload) (io.ReadWriteCloser, error) {
	// A gateway among several holds the builder's tunnel itself, and a
	// data connection through the load balancer may reach another one.
	if g.Cluster == nil {
		if dc := g.dialBuilder(route, alias); dc != nil {
			return dc, nil
		}
		g.log().Debug("no data connection from the builder: forwarding over its tunnel", "build", alias)
	}
	payload := ssh.Marshal(&forwardPayload{Host: alias, Port: 22, OriginHost: p.OriginHost, OriginPort: p.OriginPort})
	bch, breqs, err := route.OpenChannel("forwarded-tcpip", payload)
	if err != nil {
		return nil, errors.New(alias + "'s machine did not answer: " + err.Error())
	}
	go ssh.DiscardRequests(breqs)
	return bch, nil
}

// Splice copies between the user's channel uch and down, the stream to
// the builder, both ways until both ends are done, then closes both.
func Splice(uch ssh.Channel, down io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	copyHalf := func(dst io.Writer, src io.Reader, closeWrite func() error) {
		buf := make([]byte, 256<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		_ = closeWrite()
		done <- struct{}{}
	}
	go copyHalf(down, uch, func() error { return closeWrite(down) })
	go copyHalf(uch, down, uch.CloseWrite)
	<-done
	<-done
	uch.Close()
	down.Close()
}

// closeWrite half-closes c if it can, else closes it.
func closeWrite(c io.Closer) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
