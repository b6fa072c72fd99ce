package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gateway/gatewaytest"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// cluster is a test's database, CAs and gateways.
type cluster struct {
	t      testing.TB
	url    string
	hostCA *sshca.HostCA
	userCA *sshca.CA
	st     *store.Store // the runner's
}

func newCluster(t testing.TB) *cluster {
	url := pgtest.DB(t)
	dir := t.TempDir()
	hostCA, err := sshca.LoadOrCreateHostCA(filepath.Join(dir, "host_ca"))
	if err != nil {
		t.Fatal(err)
	}
	userCA, err := sshca.LoadOrCreateCA(filepath.Join(dir, "user_ca"))
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, url: url, hostCA: hostCA, userCA: userCA, st: openStore(t, url)}
}

func openStore(t testing.TB, url string) *store.Store {
	st, err := store.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// node is one gateway of the cluster, in this process with its own store
// (as its own process would have).
type node struct {
	n    *Node
	g    *gateway.Gateway
	addr string // users' and builders' SSH address
	stop func()
}

func (c *cluster) startNode(id string) *node {
	t := c.t
	signer, _, err := sshca.NewKey("gw")
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := c.hostCA.HostSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway.Gateway{HostKey: signer, HostCert: cert, CA: c.userCA.PublicKey()}
	n := &Node{Store: openStore(t, c.url), Gateway: g, ID: id, PeerAddr: peerLn.Addr().String(),
		HostCA: c.hostCA.PublicKey(), PeerSigner: cert}
	g.Cluster, g.Events = n, n.Event
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := n.Run(ctx); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := g.Serve(ln); !errors.Is(err, gateway.ErrServerClosed) {
			t.Errorf("gateway %s: %v", id, err)
		}
	}()
	go func() {
		defer wg.Done()
		_ = n.ServePeers(peerLn)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			g.Close()
			n.ClosePeers()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return &node{n: n, g: g, addr: ln.Addr().String(), stop: stop}
}

// newBuild makes an SSH build in the store: its alias, the PEM of the
// machine's SSH host key (with which its builder opens its tunnel) and
// the user's credential.
func (c *cluster) newBuild() (string, string, *sshca.Credential) {
	t := c.t
	ctx := context.Background()
	if err := c.st.CreateApp(ctx, &store.App{Name: "a", Repo: "/r"}); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	b := &build.Build{App: "a", Status: build.Building, Trigger: build.Manual, Steps: []build.Step{}}
	if err := c.st.CreateBuild(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	alias := build.Alias(b.ID)
	hostKey, hostPEM, err := sshca.NewKey(alias)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := c.userCA.Issue(alias, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.st.PutBuildSSH(ctx, b.ID, &store.BuildSSH{HostKey: string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))}); err != nil {
		t.Fatal(err)
	}
	return alias, string(hostPEM), cred
}

// tunnel runs the builder's tunnel (link.Tunnel, as `hangar builder`
// does) to the gateways' address, an echo server behind it, until the
// test ends; it reports the tunnel's ups and downs.
func (c *cluster) tunnel(alias, hostPEM, addr string) <-chan bool {
	return c.tunnelTo(alias, hostPEM, addr, 0, echoServer)
}

func echoServer(nc net.Conn) {
	defer nc.Close()
	_, _ = io.Copy(nc, nc)
}

// tunnelTo is tunnel with serve behind it.
func (c *cluster) tunnelTo(alias, hostPEM, addr string, keepalive time.Duration, serve func(net.Conn)) <-chan bool {
	states := make(chan bool, 16)
	tun := &link.Tunnel{
		Hello: &link.Hello{Name: alias, SSHHostKey: hostPEM, Gateway: addr,
			GatewayCA: string(ssh.MarshalAuthorizedKey(c.hostCA.PublicKey()))},
		Alias:     alias,
		Serve:     serve,
		State:     func(up bool, _ error) { states <- up },
		Keepalive: keepalive,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tun.Run(ctx)
	}()
	c.t.Cleanup(func() {
		cancel()
		<-done
	})
	return states
}

// user connects to the gateway at addr with cred and opens a stream to
// alias's machine (the echo server).
func (c *cluster) user(addr, alias string, cred *sshca.Credential) (*ssh.Client, net.Conn, error) {
	key, err := ssh.ParsePrivateKey(cred.PrivateKey)
	if err != nil {
		c.t.Fatal(err)
	}
	signer, err := ssh.NewCertSigner(cred.Certificate, key)
	if err != nil {
		c.t.Fatal(err)
	}
	client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: alias, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: sshca.HostKeyCallback(c.hostCA.PublicKey()), Timeout: 10 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	nc, err := client.Dial("tcp", alias+":22")
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, nc, nil
}

// echo checks that a line goes to the machine and back over nc.
func echo(t *testing.T, nc net.Conn, line string) {
	t.Helper()
	if _, err := io.WriteString(nc, line); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(line))
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != line {
		t.Fatalf("echo: %q, %v; want %q", buf, err, line)
	}
}

// waitFor checks cond every few milliseconds until it holds, at most 30
// s (for what only the store shows, which notifies no one).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30 s: %s", what)
		}
		<-tick.C
	}
}

func waitState(t testing.TB, states <-chan bool, want bool, what string) {
	t.Helper()
	select {
	case up := <-states:
		if up != want {
			t.Fatalf("%s: tunnel up=%v, want %v", what, up, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no tunnel change within 30 s", what)
	}
}

func (c *cluster) routeOf(alias string) string {
	r, err := c.st.GatewayRouteOf(context.Background(), alias, time.Now())
	if err != nil {
		return ""
	}
	return r.GatewayID
}

// TestPeerForwardAndFailover: a build's tunnel is held by gateway a; a
// user reaches the machine through gateway b (forwarded over the peer
// link), and the runner (Control) hears b's events. When a goes, the
// builder's tunnel comes up on b through the one address, and users get
// through again. Revoking the build through the store closes the user's
// connection and the tunnel everywhere.
func TestPeerForwardAndFailover(t *testing.T) {
	c := newCluster(t)
	evs := make(chan gateway.Event, 64)
	control := &Control{Store: c.st, Events: func(ev gateway.Event) { evs <- ev }}
	ctx, cancel := context.WithCancel(context.Background())
	controlDone := make(chan struct{})
	go func() {
		defer close(controlDone)
		_ = control.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-controlDone
	})
	a, b := c.startNode("a"), c.startNode("b")
	lb := gatewaytest.NewLB(t, a.addr)

	alias, hostPEM, cred := c.newBuild()
	control.Open(alias, cred.PublicKey)
	// (A tunnel that came before the gateway heard would be refused and
	// tried again: the test waits, to see the tunnel come up at once.)
	waitFor(t, "a admits the build", func() bool { k, ok := a.g.Known(alias); return ok && k.Open })
	states := c.tunnel(alias, hostPEM, lb.Addr)
	waitState(t, states, true, "the tunnel through the one address")
	waitFor(t, "a's entry in the registry", func() bool { return c.routeOf(alias) == "a" })
	waitFor(t, "b admits the build", func() bool { k, ok := b.g.Known(alias); return ok && k.Open })
	if !control.Routed(alias) {
		t.Error("Control says no gateway holds the tunnel")
	}

	client, nc, err := c.user(b.addr, alias, cred)
	if err != nil {
		t.Fatalf("through b, which does not hold the tunnel: %v", err)
	}
	echo(t, nc, "through the peer link\n")
	waitEvent(t, evs, alias, "connect")
	waitEvent(t, evs, alias, "channel")
	nc.Close()
	client.Close()
	waitEvent(t, evs, alias, "disconnect")

	// Another build's key cannot take this build's alias.
	_, otherPEM, _ := c.newBuild()
	other := c.tunnel(alias, otherPEM, b.addr)
	waitState(t, other, false, "a tunnel with another build's key")

	// a goes: the builder comes back through the one address, on b.
	lb.SetBackends(b.addr)
	a.stop()
	waitState(t, states, false, "a stopped")
	waitState(t, states, true, "the tunnel again, through b")
	waitFor(t, "b's entry in the registry", func() bool { return c.routeOf(alias) == "b" })
	client, nc, err = c.user(lb.Addr, alias, cred)
	if err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	echo(t, nc, "after the failover\n")

	// The runner revokes: b closes the user's connection and the tunnel.
	control.Revoke(alias, "the build finished")
	waitState(t, states, false, "revoked")
	closed := make(chan struct{})
	go func() {
		_ = client.Wait()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the user's connection stayed open after the build was revoked")
	}
	waitFor(t, "b refuses the build", func() bool { k, ok := b.g.Known(alias); return ok && !k.Open && k.Reason == "the build finished" })
	if _, _, err := c.user(lb.Addr, alias, cred); err == nil {
		t.Fatal("a revoked build's credential got in")
	}
	// Forgotten by the runner: forgotten by the gateways.
	control.Forget(alias, cred.PublicKey)
	waitFor(t, "b forgets the build", func() bool { _, ok := b.g.Known(alias); return !ok })
}

// TestTunnelLeavesAHungGateway: a gateway that neither answers nor
// closes (its host hangs) is given up by the builder's keepalive, and the
// tunnel comes up again through the one address, on another gateway.
func TestTunnelLeavesAHungGateway(t *testing.T) {
	c := newCluster(t)
	control := &Control{Store: c.st}
	a, b := c.startNode("a"), c.startNode("b")
	lb := gatewaytest.NewLB(t, a.addr)
	alias, hostPEM, cred := c.newBuild()
	control.Open(alias, cred.PublicKey)
	waitFor(t, "a admits the build", func() bool { k, ok := a.g.Known(alias); return ok && k.Open })
	waitFor(t, "b admits the build", func() bool { k, ok := b.g.Known(alias); return ok && k.Open })
	states := c.tunnelTo(alias, hostPEM, lb.Addr, 200*time.Millisecond, echoServer)
	waitState(t, states, true, "the tunnel, on a")
	waitFor(t, "a's entry in the registry", func() bool { return c.routeOf(alias) == "a" })

	lb.SetBackends(b.addr)
	lb.Freeze() // a hangs
	waitState(t, states, false, "a hung")
	waitState(t, states, true, "the tunnel again, on b")
	waitFor(t, "b's entry in the registry", func() bool { return c.routeOf(alias) == "b" })
	client, nc, err := c.user(lb.Addr, alias, cred)
	if err != nil {
		t.Fatalf("after a hung: %v", err)
	}
	defer client.Close()
	echo(t, nc, "after a hung\n")
}

func waitEvent(t *testing.T, evs <-chan gateway.Event, alias, kind string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-evs:
			if ev.Alias == alias && ev.Kind == kind {
				return
			}
		case <-timeout:
			t.Fatalf("no %s event of %s within 30 s", kind, alias)
		}
	}
}

// TestPeerLinkAuth: the peer link admits only a gateway with a host
// certificate of the host CA, and a gateway accepts only a peer with one.
func TestPeerLinkAuth(t *testing.T) {
	c := newCluster(t)
	b := c.startNode("b")
	peerAddr := b.n.PeerAddr
	plain, _, err := sshca.NewKey("intruder")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := sshca.LoadOrCreateHostCA(filepath.Join(t.TempDir(), "other_ca"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := otherCA.HostSigner(plain)
	if err != nil {
		t.Fatal(err)
	}
	for name, signer := range map[string]ssh.Signer{"plain key": plain, "certificate of another CA": foreign} {
		_, err := ssh.Dial("tcp", peerAddr, &ssh.ClientConfig{User: peerUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: sshca.HostKeyCallback(c.hostCA.PublicKey()), Timeout: 10 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	// A gateway does not forward to a "peer" without the CA's certificate.
	fake, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Store: c.st, Gateway: &gateway.Gateway{}, ID: "x", HostCA: c.hostCA.PublicKey()}
	n.PeerSigner = foreign
	fakeDone := make(chan struct{})
	go func() {
		defer close(fakeDone)
		_ = n.ServePeers(fake)
	}()
	a := c.startNode("a")
	_, err = a.n.peers.open(context.Background(), a.n, fake.Addr().String(), peerRequest{Alias: "build-1"})
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("a peer with another CA's certificate: %v, want refused", err)
	}
	n.ClosePeers()
	<-fakeDone
}

// BenchmarkForward: bytes from the builder to a user through the gateway
// holding the tunnel (direct) and through the other one (peer link).
func BenchmarkForward(b *testing.B) {
	c := newCluster(b)
	control := &Control{Store: c.st}
	ga, gb := c.startNode("a"), c.startNode("b")
	alias, hostPEM, cred := c.newBuild()
	control.Open(alias, cred.PublicKey)
	waitFor(b, "a admits the build", func() bool { k, ok := ga.g.Known(alias); return ok && k.Open })
	const size = 64 << 20
	chunk := make([]byte, 256<<10)
	states := c.tunnelTo(alias, hostPEM, ga.addr, 0, func(nc net.Conn) {
		defer nc.Close()
		for n := 0; n < size; n += len(chunk) {
			if _, err := nc.Write(chunk); err != nil {
				return
			}
		}
	})
	waitState(b, states, true, "tunnel")
	waitFor(b, "a's entry in the registry", func() bool { return c.routeOf(alias) == "a" })
	waitFor(b, "b admits the build", func() bool { k, ok := gb.g.Known(alias); return ok && k.Open })
	for _, via := range []struct {
		name string
		addr string
	}{{"direct", ga.addr}, {"peer", gb.addr}} {
		b.Run(via.name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				client, nc, err := c.user(via.addr, alias, cred)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, nc)
				if err != nil || n != size {
					b.Fatalf("read %d bytes, %v", n, err)
				}
				client.Close()
			}
		})
	}
}
