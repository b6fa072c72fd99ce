package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/connect"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/sshd"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

func runOK(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
}

func loadSigner(t *testing.T, path string) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitUntil polls cond until it holds, or fails the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// build is one SSH build behind the gateway: a builder's SSH server (the
// real one, package sshd) reached over the builder's tunnel, and the files
// of the generated script (package connect) for OpenSSH's client.
type build struct {
	alias  string
	cred   *sshca.Credential
	signer ssh.Signer // the certificate
	dir    string     // key, key-cert.pub, known_hosts, config
	home   string     // HOME of the ssh client
}

func startBuild(t *testing.T, gw *gateway.Gateway, ls *link.Server, ca *sshca.CA, gwAddr, linkAddr, linkHost, alias string) *build {
	t.Helper()
	pub, priv := builderKey(t)
	exp, err := ls.Expect(alias, pub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exp.Close() })
	cred, err := ca.Issue(alias, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	gw.Open(alias, cred.PublicKey)

	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := ssh.NewSignerFromKey(hostPriv)
	checker := &sshca.Checker{CA: ca.PublicKey(), Principal: alias, Key: cred.PublicKey}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if meta.User() != "builder" {
			return nil, errors.New("log in as builder")
		}
		if err := checker.Check(key); err != nil {
			return nil, err
		}
		return &ssh.Permissions{}, nil
	}}
	cfg.AddHostKey(hostKey)
	home := t.TempDir()
	srv := &sshd.Server{Config: cfg, Home: home, Env: func() []string { return []string{"PATH=" + os.Getenv("PATH")} }}
	ctx, cancel := context.WithCancel(context.Background())
	tunnelDone := make(chan struct{})
	tun := &link.Tunnel{Hello: &link.Hello{Name: alias, Addr: linkAddr, HostKey: linkHost, Key: priv}, Alias: alias, Serve: srv.ServeConn}
	go func() {
		defer close(tunnelDone)
		tun.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-tunnelDone
		srv.Close()
	})
	waitUntil(t, 10*time.Second, alias+"'s route", func() bool { return gw.Routed(alias) })

	key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
	signer, _ := ssh.NewCertSigner(cred.Certificate, key)
	host, port, _ := net.SplitHostPort(gwAddr)
	var portN int
	fmt.Sscan(port, &portN)
	a := &connect.Access{
		Build: 1, App: "flood", Alias: alias, GatewayHost: host, GatewayPort: portN,
		GatewayKey: string(ssh.MarshalAuthorizedKey(gw.HostKey.PublicKey())), BuilderKey: string(ssh.MarshalAuthorizedKey(hostKey.PublicKey())),
		PrivateKey: string(cred.PrivateKey), Certificate: string(ssh.MarshalAuthorizedKey(cred.Certificate)), ExpiresAt: time.Now().Add(time.Hour),
	}
	b := &build{alias: alias, cred: cred, signer: signer, dir: t.TempDir(), home: t.TempDir()}
	files := a.Files()
	for name, content := range map[string]string{"key": files.Key, "key-cert.pub": files.Cert, "known_hosts": files.KnownHosts, "config": a.Config(b.dir)} {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// ssh runs OpenSSH's client with the build's generated config: ssh -F
// config ALIAS remote.
func (b *build) ssh(t *testing.T, remote string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", filepath.Join(b.dir, "config"), "-o", "BatchMode=yes", b.alias, remote)
	cmd.Env = []string{"HOME=" + b.home, "PATH=" + os.Getenv("PATH")}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return out.String(), nil
}

// dialFrom opens an SSH connection to the gateway from source address ip.
func dialFrom(ip, gwAddr, user string, s ssh.Signer) (*ssh.Client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", gwAddr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(nc, gwAddr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(s)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// TestFloodRealLoginGetsThrough: 20 source addresses hold 64 idle
// connections each (1280, more than every bound of the gateway's
// defaults), and a real user still logs in with OpenSSH's client and the
// generated config; an authenticated connection opened before the flood
// survives it; a user on a flooding address gets in too.
func TestFloodRealLoginGetsThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1280 connections")
	}
	gw, ls, ca, gwAddr, linkAddr, linkHost := setup(t, func(g *gateway.Gateway) {
		g.HandshakeTimeout = 5 * time.Minute // the flood stays for the whole test
	})
	b := startBuild(t, gw, ls, ca, gwAddr, linkAddr, linkHost, "build-21")

	// Authenticated before the flood.
	before, err := dialFrom("127.0.0.1", gwAddr, b.alias, b.signer)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	const sources, perSource = 20, 64
	var mu sync.Mutex
	var flood []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range flood {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	for i := range sources {
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			for range perSource {
				c, err := d.Dial("tcp", gwAddr)
				if err != nil {
					t.Errorf("flood from %s: %v", ip, err)
					return
				}
				mu.Lock()
				flood = append(flood, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Every flood connection was admitted: all but the bound were evicted.
	want := uint64(sources*perSource - gateway.DefaultMaxUnauthenticated)
	waitUntil(t, 60*time.Second, fmt.Sprintf("%d evictions", want), func() bool { return gw.UnauthenticatedEvictions() >= want })

	// A real login, through the gateway to the builder's SSH server.
	out, err := b.ssh(t, "echo through the flood")
	if err != nil {
		t.Fatalf("real ssh during the flood: %v", err)
	}
	if strings.TrimSpace(out) != "through the flood" {
		t.Errorf("ssh printed %q", out)
	}

	// The connection authenticated before the flood still forwards.
	nc, err := before.Dial("tcp", b.alias+":22")
	if err != nil {
		t.Fatalf("the connection authenticated before the flood: %v", err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 8)
	if _, err := io.ReadFull(nc, line); err != nil || string(line) != "SSH-2.0-" {
		t.Errorf("the connection authenticated before the flood read %q, %v from the builder", line, err)
	}
	nc.Close()

	// A user on a flooding address gets in: its source's oldest goes.
	c, err := dialFrom("127.0.0.2", gwAddr, b.alias, b.signer)
	if err != nil {
		t.Fatalf("login from a flooding address: %v", err)
	}
	c.Close()

	// The first flood connection was evicted: the gateway closed it.
	mu.Lock()
	first := flood[0]
	mu.Unlock()
	_ = first.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(first); err != nil {
		t.Errorf("an early flood connection is still open: %v", err)
	}
}

// TestFailedLoginsSlowedAndLogged: each failed authentication from a
// source is logged at info level (address, user, no key) and answered after
// a delay that doubles up to a bound; a success starts the source over.
func TestFailedLoginsSlowedAndLogged(t *testing.T) {
	var logs syncbuf.Buffer
	base, top := 20*time.Millisecond, 80*time.Millisecond
	gw, _, ca, gwAddr, _, _ := setup(t, func(g *gateway.Gateway) {
		g.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		g.AuthDelay.Base, g.AuthDelay.Max = base, top
	})
	cred, _ := ca.Issue("build-7", time.Now().Add(time.Hour))
	gw.Open("build-7", cred.PublicKey)
	_, wrongPriv, _ := ed25519.GenerateKey(rand.Reader)
	wrong, _ := ssh.NewSignerFromKey(wrongPriv)

	const tries = 6
	start := time.Now()
	for range tries {
		if c, err := dialFrom("127.0.0.3", gwAddr, "build-7", wrong); err == nil {
			c.Close()
			t.Fatal("a wrong key got in")
		}
	}
	elapsed := time.Since(start)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var failures []string
	for _, l := range lines {
		if strings.Contains(l, "authentication failed") {
			failures = append(failures, l)
		}
	}
	if len(failures) != tries {
		t.Fatalf("%d failures logged, want %d:\n%s", len(failures), tries, logs.String())
	}
	var sum time.Duration
	for i, l := range failures {
		wait := min(base<<i, top)
		sum += wait
		for _, want := range []string{"level=INFO", "remote=127.0.0.3:", "user=build-7", "method=publickey",
			fmt.Sprintf("failures_in_a_row=%d", i+1), "delay=" + wait.String()} {
			if !strings.Contains(l, want) {
				t.Errorf("failure %d logged without %q: %s", i+1, want, l)
			}
		}
	}
	// The answers waited at least their delays (a lower bound only).
	if elapsed < sum {
		t.Errorf("%d failures took %v, less than their delays (%v)", tries, elapsed, sum)
	}
	keyText := strings.Fields(string(ssh.MarshalAuthorizedKey(wrong.PublicKey())))[1]
	if strings.Contains(logs.String(), keyText) || strings.Contains(logs.String(), ssh.FingerprintSHA256(wrong.PublicKey())) {
		t.Error("the log holds the offered key")
	}

	// Another source is not slowed by this one's failures.
	if c, err := dialFrom("127.0.0.4", gwAddr, "build-7", wrong); err == nil {
		c.Close()
	}
	if !strings.Contains(logs.String(), "remote=127.0.0.4") || !strings.Contains(lastLine(logs.String()), "failures_in_a_row=1 ") {
		t.Errorf("another source's first failure: %s", lastLine(logs.String()))
	}
	// A success starts the source over.
	key, _ := ssh.ParsePrivateKey(cred.PrivateKey)
	c, err := dialFrom("127.0.0.3", gwAddr, "build-7", key)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err := dialFrom("127.0.0.3", gwAddr, "build-7", wrong); err == nil {
		c.Close()
	}
	if l := lastLine(logs.String()); !strings.Contains(l, "remote=127.0.0.3") || !strings.Contains(l, "failures_in_a_row=1 ") {
		t.Errorf("the first failure after a success: %s", l)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
