package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshca"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// setup starts a gateway and a link server that hands it builders' tunnels;
// configure may change the gateway before it serves.
func setup(t *testing.T, configure ...func(*gateway.Gateway)) (*gateway.Gateway, *link.Server, *sshca.CA, string, string, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := sshca.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	gwKey, _ := sshca.LoadOrCreateKey(filepath.Join(dir, "gw"), "gw")
	linkKey, _ := sshca.LoadOrCreateKey(filepath.Join(dir, "link"), "link")
	gw := &gateway.Gateway{HostKey: gwKey, CA: ca.PublicKey(), HandshakeTimeout: 2 * time.Second}
	for _, f := range configure {
		f(gw)
	}
	ls := &link.Server{HostKey: linkKey, Tunnels: gw, HandshakeTimeout: time.Second}
	gl, ll := listen(t), listen(t)
	go func() { _ = gw.Serve(gl) }()
	go func() { _ = ls.Serve(ll) }()
	t.Cleanup(func() {
		_ = gw.Close()
		ls.Close()
	})
	return gw, ls, ca, gl.Addr().String(), ll.Addr().String(), string(ssh.MarshalAuthorizedKey(linkKey.PublicKey()))
}

func builderKey(t *testing.T) (ssh.PublicKey, string) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	signer, _ := ssh.NewSignerFromKey(priv)
	return signer.PublicKey(), string(pem.EncodeToMemory(block))
}

func TestBuilderBindsOnlyItsOwnAlias(t *testing.T) {
	gw, ls, _, _, linkAddr, linkHost := setup(t)
	pub, priv := builderKey(t)
	exp, err := ls.Expect("build-1", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	gw.Open("build-1", pub)
	gw.Open("build-2", pub)
	hello := &link.Hello{Name: "build-1", Addr: linkAddr, HostKey: linkHost, Key: priv}

	states := make(chan bool, 4)
	for _, alias := range []string{"build-2", "build-1"} {
		tun := &link.Tunnel{Hello: hello, Alias: alias, Serve: func(c net.Conn) { c.Close() },
			State: func(up bool, err error) { states <- up }}
		ctx, cancel := contextWithTimeout(5 * time.Second)
		go tun.Run(ctx)
		want := alias == "build-1"
		select {
		case up := <-states:
			if up != want {
				t.Errorf("binding %s as build-1: up=%v, want %v", alias, up, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no tunnel state for %s", alias)
		}
		if want {
			// The tunnel outlives the handshake deadline.
			time.Sleep(1500 * time.Millisecond)
			select {
			case up := <-states:
				t.Errorf("the tunnel changed state (up=%v) after the handshake deadline", up)
			default:
			}
			if !gw.Routed("build-1") {
				t.Error("build-1 lost its route")
			}
		}
		cancel()
		if routed := gw.Routed("build-2"); routed {
			t.Errorf("build-1's builder got a route to build-2")
		}
	}
}

func TestUserAuth(t *testing.T) {
	gw, _, ca, gwAddr, _, _ := setup(t)
	cred, err := ca.Issue("build-7", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
	certSigner, _ := ssh.NewCertSigner(cred.Certificate, key)
	dial := func(user string, s ssh.Signer) error {
		c, err := ssh.Dial("tcp", gwAddr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(s)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	if dial("build-7", certSigner) == nil {
		t.Error("admitted before the build's access opened")
	}
	gw.Open("build-7", cred.PublicKey)
	if err := dial("build-7", certSigner); err != nil {
		t.Errorf("certificate refused: %v", err)
	}
	if err := dial("build-7", key); err != nil {
		t.Errorf("plain key refused: %v", err)
	}
	if dial("build-8", certSigner) == nil || dial("build-8", key) == nil {
		t.Error("build-7's credential admitted as build-8")
	}
	// A certificate of the same CA and principal but for another key (say
	// of an earlier build that had the same number) is refused.
	other, _ := ca.Issue("build-7", time.Now().Add(time.Hour))
	otherKey, _ := ssh.ParsePrivateKey(other.PrivateKey)
	otherCert, _ := ssh.NewCertSigner(other.Certificate, otherKey)
	if dial("build-7", otherCert) == nil {
		t.Error("a certificate for another key was admitted")
	}
	gw.Revoke("build-7", "build 7 has ended")
	if dial("build-7", certSigner) == nil || dial("build-7", key) == nil {
		t.Error("admitted after revocation")
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// cutter is a TCP proxy whose connections a test can cut, to drop a link.
type cutter struct {
	l     net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, to string) *cutter {
	c := &cutter{l: listen(t), to: to}
	go func() {
		for {
			in, err := c.l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { c.l.Close(); c.cut() })
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.conns {
		nc.Close()
	}
	c.conns = nil
}

func TestTunnelReconnects(t *testing.T) {
	gw, ls, _, _, linkAddr, linkHost := setup(t)
	pub, priv := builderKey(t)
	exp, err := ls.Expect("build-3", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	gw.Open("build-3", pub)
	proxy := newCutter(t, linkAddr)
	states := make(chan bool, 8)
	tun := &link.Tunnel{
		Hello: &link.Hello{Name: "build-3", Addr: proxy.l.Addr().String(), HostKey: linkHost, Key: priv},
		Alias: "build-3", Serve: func(c net.Conn) { c.Close() },
		State: func(up bool, err error) { states <- up },
	}
	ctx, cancel := contextWithTimeout(20 * time.Second)
	defer cancel()
	go tun.Run(ctx)
	expect := func(want bool) {
		t.Helper()
		select {
		case up := <-states:
			if up != want {
				t.Fatalf("tunnel up=%v, want %v", up, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tunnel never went up=%v", want)
		}
	}
	expect(true)
	proxy.cut()
	expect(false)
	expect(true) // redialled
	deadline := time.Now().Add(5 * time.Second)
	for !gw.Routed("build-3") {
		if time.Now().After(deadline) {
			t.Fatal("no route after the tunnel came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForwardUsesDataConnection: a user's session reaches the builder over
// a plain data connection the builder dials (its content is the end-to-end
// encrypted session), not inside a second SSH layer.
func TestForwardUsesDataConnection(t *testing.T) {
	gw, ls, ca, gwAddr, linkAddr, linkHost := setup(t)
	pub, priv := builderKey(t)
	exp, err := ls.Expect("build-5", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	cred, _ := ca.Issue("build-5", time.Now().Add(time.Hour))
	gw.Open("build-5", cred.PublicKey)
	served := make(chan net.Conn, 1)
	tun := &link.Tunnel{
		Hello: &link.Hello{Name: "build-5", Addr: linkAddr, HostKey: linkHost, Key: priv},
		Alias: "build-5",
		Serve: func(c net.Conn) {
			served <- c
			_, _ = c.Write([]byte("hello from the builder"))
			c.Close()
		},
	}
	ctx, cancel := contextWithTimeout(20 * time.Second)
	defer cancel()
	go tun.Run(ctx)
	for deadline := time.Now().Add(5 * time.Second); !gw.Routed("build-5"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no route")
		}
	}
	key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
	signer, _ := ssh.NewCertSigner(cred.Certificate, key)
	c, err := ssh.Dial("tcp", gwAddr, &ssh.ClientConfig{User: "build-5", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc, err := c.Dial("tcp", "build-5:22")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(nc)
	if string(got) != "hello from the builder" {
		t.Errorf("read %q through the gateway", got)
	}
	if _, ok := (<-served).(*net.TCPConn); !ok {
		t.Error("the builder served the session over its tunnel, not over a data connection")
	}
	// Other targets are refused.
	if _, err := c.Dial("tcp", "build-6:22"); err == nil {
		t.Error("build-5's credential reached build-6")
	}
}

// TestDrainKeepsOpenConnections: Drain refuses newcomers and new channels
// at once, but what is open stays until Disconnect.
func TestDrainKeepsOpenConnections(t *testing.T) {
	gw, ls, ca, gwAddr, linkAddr, linkHost := setup(t)
	pub, priv := builderKey(t)
	exp, err := ls.Expect("build-9", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	cred, _ := ca.Issue("build-9", time.Now().Add(time.Hour))
	gw.Open("build-9", cred.PublicKey)
	tun := &link.Tunnel{
		Hello: &link.Hello{Name: "build-9", Addr: linkAddr, HostKey: linkHost, Key: priv},
		Alias: "build-9",
		Serve: func(c net.Conn) { // an echo server
			defer c.Close()
			_, _ = io.Copy(c, c)
		},
	}
	ctx, cancel := contextWithTimeout(20 * time.Second)
	defer cancel()
	go tun.Run(ctx)
	for deadline := time.Now().Add(5 * time.Second); !gw.Routed("build-9"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no route")
		}
	}
	key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
	signer, _ := ssh.NewCertSigner(cred.Certificate, key)
	dial := func() (*ssh.Client, error) {
		return ssh.Dial("tcp", gwAddr, &ssh.ClientConfig{User: "build-9", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	}
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc, err := c.Dial("tcp", "build-9:22")
	if err != nil {
		t.Fatal(err)
	}
	echo := func() error {
		if _, err := nc.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(nc, buf)
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}

	gw.Drain("build-9", "build 9 was canceled")
	if c2, err := dial(); err == nil {
		c2.Close()
		t.Error("a new connection was admitted after Drain")
	}
	if _, err := c.Dial("tcp", "build-9:22"); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("a new channel after Drain: %v, want refused with the reason", err)
	}
	if err := echo(); err != nil {
		t.Errorf("the open channel broke at Drain: %v", err)
	}

	gw.Disconnect("build-9")
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	select {
	case <-waited:
	case <-ctx.Done():
		t.Fatal("the connection is still open after Disconnect")
	}
	if gw.Routed("build-9") {
		t.Error("the route is still there after Disconnect")
	}
}
