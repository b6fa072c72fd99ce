package gateway

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/ssh"
)

// Cluster is what a gateway among several needs of the others; package
// gateway/cluster implements it over the database and peer links. Its
// methods may block briefly (a database query, a peer's dial) and must be
// safe for concurrent use.
//
// With a Cluster, builders open their tunnels to the gateway itself (the
// one public address, behind which any gateway may answer): a builder
// authenticates as its alias with its own key (BuilderKey says whether
// the key is that alias's builder's) and asks for a reverse forward of
// its alias, as it does on the builder link of a single server. Bound
// tells the Cluster which tunnels this gateway holds, and Dial reaches a
// build whose tunnel another gateway holds.
type Cluster interface {
	// BuilderKey reports whether key is the key of alias's builder, whose
	// SSH access is open. The gateway asks only for builds it knows open.
	BuilderKey(alias string, key ssh.PublicKey) bool
	// Bound is told when this gateway starts (held) or stops holding
	// alias's tunnel. It is called with the gateway's lock held: it must
	// not call the gateway back.
	Bound(alias string, held bool)
	// Dial opens a stream to alias's builder through the gateway that
	// holds its tunnel. Its error is shown to the user.
	Dial(alias, originHost string, originPort uint32) (io.ReadWriteCloser, error)
}

// roleBuilder marks, in a connection's permissions, a builder opening its
// tunnel (rather than a user).
const roleBuilder = "builder"

// builderAuth returns the permissions of alias's builder if key is its
// key (a Cluster says), else nil. Certificates are users'.
func (g *Gateway) builderAuth(alias string, key ssh.PublicKey) *ssh.Permissions {
	if g.Cluster == nil {
		return nil
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil
	}
	if !g.Cluster.BuilderKey(alias, key) {
		return nil
	}
	return &ssh.Permissions{Extensions: map[string]string{"alias": alias, "role": roleBuilder}}
}

// serveBuilder serves a builder's tunnel connection: a reverse forward
// of its own alias (tcpip-forward) and nothing else; it opens no channel.
// It returns when the connection ends; the route goes with it.
func (g *Gateway) serveBuilder(sc *ssh.ServerConn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, alias string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for nch := range chans {
			_ = nch.Reject(ssh.Prohibited, "a builder's connection opens no channel")
		}
	}()
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	for r := range reqs {
		ok := false
		switch r.Type {
		case "tcpip-forward":
			var fr struct {
				Addr string
				Port uint32
			}
			if ssh.Unmarshal(r.Payload, &fr) != nil || fr.Addr != alias || release != nil {
				g.log().Warn("builder forward refused", "build", alias, "alias", fr.Addr)
				break
			}
			rel, err := g.Bind(alias, sc)
			if err != nil {
				g.log().Info("builder forward refused", "build", alias, "err", err)
				break
			}
			release, ok = rel, true
			g.log().Info("builder tunnel up", "build", alias, "remote", sc.RemoteAddr().String())
		case "cancel-tcpip-forward":
			if release != nil {
				release()
				release, ok = nil, true
			}
		case "keepalive@openssh.com":
			ok = true
		}
		if r.WantReply {
			_ = r.Reply(ok, nil)
		}
	}
	sc.Close()
}

// ErrNoRoute is returned by OpenRoute when this gateway holds no tunnel
// of the build.
var ErrNoRoute = errors.New("no tunnel of the build here")

// OpenRoute opens a stream to alias's builder over the tunnel this
// gateway holds, for a peer gateway that admitted the user (see Cluster).
// It refuses a build whose access is closed here.
func (g *Gateway) OpenRoute(alias, originHost string, originPort uint32) (io.ReadWriteCloser, error) {
	g.mu.Lock()
	e := g.builds[alias]
	var route ssh.Conn
	open := false
	if e != nil {
		route, open = e.route, e.open
	}
	g.mu.Unlock()
	if !open {
		return nil, fmt.Errorf("SSH access to %s is closed", alias)
	}
	if route == nil {
		return nil, ErrNoRoute
	}
	return g.openBuilder(route, alias, forwardPayload{Host: alias, Port: 22, OriginHost: originHost, OriginPort: originPort})
}

// Routes returns the aliases whose tunnels this gateway holds.
func (g *Gateway) Routes() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for alias, e := range g.builds {
		if e.route != nil {
			out = append(out, alias)
		}
	}
	return out
}

// Access is what the gateway knows of a build's access.
type Access struct {
	Key    ssh.PublicKey
	Open   bool
	Reason string
}

// Known returns what the gateway knows of alias (ok false: nothing).
func (g *Gateway) Known(alias string) (a Access, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.builds[alias]
	if e == nil {
		return Access{}, false
	}
	return Access{Key: e.key, Open: e.open, Reason: e.reason}, true
}

// Closed records that alias's access, for key, is closed (reason is the
// message newcomers are given), as Drain does, for a build the gateway
// may not have known open (a gateway that starts after the build's
// access closed).
func (g *Gateway) Closed(alias string, key ssh.PublicKey, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entryLocked(alias)
	e.key, e.open, e.reason = key, false, reason
}
