package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/sshalgo"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/sshkeys"
	"github.com/hangar-ci/hangar/internal/store"
)

// Config is `hangar gateway`'s configuration (its flags).
type Config struct {
	// Database is the PostgreSQL URL the servers use.
	Database string
	// Listen is the SSH address users and builders reach (behind the
	// one public address), PeerListen the peer link's, and Advertise
	// where the other gateways reach PeerListen (host:port).
	Listen, PeerListen, Advertise string
	// Data holds the gateway's own host key (gateway_host_key), made at
	// first start.
	Data string
	// HostCA is the host CA's private key file (a copy of the server's
	// <data>/ssh/host_ca); UserCA the user CA's public key file (the
	// server's <data>/ssh/user_ca.pub).
	HostCA, UserCA string
	// SecretsKey, if set, is the servers' --secrets-key: the CAs are then
	// read from the database (the servers' shared keys), not from the
	// HostCA and UserCA files.
	SecretsKey string
	// ID names the gateway in the registry (default: random).
	ID string
	// The gateway's bounds (gateway.Gateway's fields; zero: its defaults).
	HandshakeTimeout time.Duration
	MaxConns         int
	Logger           *slog.Logger
}

// fileCAs returns the host CA and the user CA's public key from the
// files of --host-ca and --user-ca (without a secrets key; with one they
// are the database's shared keys, sshkeys.GatewayCAs).
func fileCAs(cfg Config) (*sshca.HostCA, ssh.PublicKey, error) {
	hostCA, err := sshca.LoadHostCA(cfg.HostCA)
	if err != nil {
		return nil, nil, fmt.Errorf("--host-ca: %w", err)
	}
	userCABytes, err := os.ReadFile(cfg.UserCA)
	if err != nil {
		return nil, nil, fmt.Errorf("--user-ca: %w (copy the server's <data>/ssh/user_ca.pub)", err)
	}
	userCA, _, _, _, err := ssh.ParseAuthorizedKey(userCABytes)
	if err != nil {
		return nil, nil, fmt.Errorf("--user-ca %s: not a public key in authorized_keys format", cfg.UserCA)
	}
	return hostCA, userCA, nil
}

// DrainTimeout is how long a stopping gateway waits for its connections.
const DrainTimeout = 10 * time.Second

// Run runs one gateway of a cluster until ctx ends, then shuts it down:
// it stops accepting, and waits DrainTimeout at most for its users'
// connections and peer links (builders reconnect through another
// gateway as soon as theirs closes).
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := store.CheckURL(cfg.Database); err != nil {
		return errors.New("--database: want the servers' PostgreSQL URL, such as postgres://hangar@db.example.com/hangar (gateways share their state through it)")
	}
	if cfg.Advertise == "" {
		return errors.New("--advertise: set the host:port where the other gateways reach this one's --peer-listen")
	}
	// What can be checked without the database is, first.
	var hostCA *sshca.HostCA
	var userCA ssh.PublicKey
	var sealer *sshca.Sealer
	var err error
	if cfg.SecretsKey != "" {
		sealer, _, err = secrets.LoadSealer(cfg.SecretsKey, "")
	} else {
		hostCA, userCA, err = fileCAs(cfg)
	}
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer st.Close()
	if sealer != nil {
		if hostCA, userCA, err = sshkeys.GatewayCAs(ctx, st, sealer); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	keyPath := filepath.Join(cfg.Data, "gateway_host_key")
	hostKey, err := sshca.LoadOrCreateKey(keyPath, "hangar gateway")
	if err != nil {
		return err
	}
	if err := sshalgo.CheckHostKey(hostKey); err != nil {
		return fmt.Errorf("%s: %w; move it away to make a new one", keyPath, err)
	}
	cert, _, err := hostCA.HostSigner(hostKey)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	peerLn, err := net.Listen("tcp", cfg.PeerListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("--peer-listen %s: %w", cfg.PeerListen, err)
	}
	g := &gateway.Gateway{HostKey: hostKey, HostCert: cert, CA: userCA, Logger: log,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxConns: cfg.MaxConns}
	n := &Node{Store: st, Gateway: g, ID: cfg.ID, PeerAddr: cfg.Advertise, HostCA: hostCA.PublicKey(), PeerSigner: cert, Logger: log}
	n.init()
	g.Cluster, g.Events = n, n.Event
	log.Info("hangar gateway started", "id", n.ID, "ssh", ln.Addr().String(), "peer", peerLn.Addr().String(), "advertise", cfg.Advertise)

	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return n.Run(nodeCtx) })
	eg.Go(func() error {
		if err := g.Serve(ln); !errors.Is(err, gateway.ErrServerClosed) {
			return fmt.Errorf("ssh gateway: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		if err := n.ServePeers(peerLn); !errors.Is(err, netx.ErrServerClosed) {
			return fmt.Errorf("peer link: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		<-ectx.Done()
		log.Info("gateway stopping: waiting for its connections", "timeout", DrainTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
		defer cancel()
		if err := g.Shutdown(sctx); err != nil {
			log.Warn("ssh gateway shutdown", "err", err)
		}
		if err := n.ShutdownPeers(sctx); err != nil {
			log.Warn("peer link shutdown", "err", err)
		}
		stopNode()
		return nil
	})
	err = eg.Wait()
	log.Info("hangar gateway stopped")
	return err
}
