// Package app is `hangar server`: it builds the service's object graph
// (store, machine driver, builder link, SSH gateway, runner, HTTP API) from
// its Config and runs it until its context ends, then stops it in order:
// builds first (their machines destroyed), then the link, the gateway and
// the HTTP API, and the driver's shared resources (bridge, firewall) last.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gateway/cluster"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/machine/host"
	"github.com/hangar-ci/hangar/internal/machine/sandbox"
	"github.com/hangar-ci/hangar/internal/notify"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/runnerapi"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/sshalgo"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/sshkeys"
	"github.com/hangar-ci/hangar/internal/store"
)

// Config is `hangar server`'s configuration (its flags).
type Config struct {
	HTTP string
	Data string
	// Database is a PostgreSQL URL; empty: SQLite in Data (hangar.db).
	Database  string
	Driver    string
	MaxBuilds int
	// SandboxEgress lets sandbox machines reach public addresses; the
	// allow and deny lists and name servers refine it (sandbox.Config).
	SandboxEgress      bool
	SandboxEgressAllow []netip.Prefix
	SandboxEgressDeny  []netip.Prefix
	SandboxDNS         []netip.Addr
	SandboxSubnet      string
	SandboxBridge      string
	SandboxDir         string
	SSH                string
	SSHPublicHost      string
	SSHAfterSteps      time.Duration
	SSHHandshake       time.Duration
	// The gateway's bounds (gateway.Gateway's fields of the same names;
	// zero: its defaults).
	SSHMaxConns                    int
	SSHMaxUnauthenticated          int
	SSHMaxUnauthenticatedPerSource int
	SSHAuthDelayMax                time.Duration
	// GatewayAddr, if set, is the address of separate gateways (`hangar
	// gateway`, several behind one address, on the same PostgreSQL):
	// builders open their tunnels there, the server runs no gateway of
	// its own (SSH is ignored) and users are sent to GatewayAddr's port.
	GatewayAddr string
	PublicURL   string
	// TLSCert and TLSKey are PEM files: the API is served over HTTPS with
	// them. TLSAutocert are host names to get certificates for from
	// Let's Encrypt (the API must then be their port 443), with
	// TLSAutocertEmail as the account's contact. None: plain HTTP.
	TLSCert, TLSKey  string
	TLSAutocert      []string
	TLSAutocertEmail string
	// InstanceTypes are the instance types workflows may pick; nil:
	// build.DefaultInstanceTypes. New lowers their pids limits to fit
	// MaxBuilds machines in the host's pid_max.
	InstanceTypes build.InstanceTypes
	// Images is the image store's directory (default <Data>/images),
	// DefaultImage the image of instance types that name none in
	// InstanceImages (default image.DefaultName), RegistryAuth a Docker
	// config.json with registry credentials ("": anonymous).
	Images         string
	DefaultImage   string
	InstanceImages map[string]string
	RegistryAuth   string
	// Kube configures the kube driver (Driver "kube").
	Kube   KubeConfig
	Logger *slog.Logger
	// NoRunner: the server runs no builds (API only); runners of other
	// servers, or `hangar runner`s, run them.
	NoRunner bool

	// SecretsKey names the key that seals environment variable groups and
	// keystores: a file, or env:NAME; empty: Data's secrets.key, made on
	// first use (secrets.LoadSealer). Servers of one database share it.
	SecretsKey string
	// Artifacts and caches (artifact.Keeper's fields; zero: its
	// defaults).
	ArtifactMaxFile, ArtifactMaxBuild int64
	ArtifactRetention                 time.Duration
	CacheMaxSize                      int64
	CacheRetention                    time.Duration
	// SMTP sends publishing.email (nil: no email is sent, the build log
	// says so).
	SMTP *notify.SMTP
}

// InterruptedMessage starts the message of builds that a server left
// running when it stopped without ending them (a crash, SIGKILL); the next
// start ends them.
const InterruptedMessage = "the server stopped during the build (crash or kill)"

// Shutdown timeouts: how long the link, the gateway and the HTTP API wait
// for their connections once builds have ended, normally and when hurried.
const (
	DrainTimeout = 10 * time.Second
	HurryTimeout = time.Second
)

// App is a configured `hangar server`. Create it with New, then call Run
// exactly once; Run releases everything New acquired.
type App struct {
	log     *slog.Logger
	lock    *os.File // the data dir's lock, held until release
	store   *store.Store
	driver  machine.Driver
	linkLn  net.Listener
	linkSrv *link.Server
	sshLn   net.Listener     // nil without SSH
	gw      *gateway.Gateway // nil without SSH or with separate gateways
	control *cluster.Control // with separate gateways (GatewayAddr)
	// runnerSSH lets runners on other hosts run SSH builds (GatewayAddr).
	runnerSSH *runnerapi.SSHConfig
	run       *runner.Runner
	httpLn    net.Listener
	tls       *tls.Config // the API's; nil: plain HTTP
	api       http.Handler
	// runnerID and session are the server's own runner's identity and
	// this process's session (0 and "" without a runner).
	runnerID int64
	session  string
	// vault opens environment variable groups and keystores; files keeps
	// artifacts and caches; publicURL is the API's URL as users reach it
	// (set before any build runs).
	vault     *secrets.Vault
	files     *artifact.Keeper
	publicURL string
}

// New opens the data dir, the store and the driver and listens on every
// address; on error it releases what it had acquired.
func New(cfg Config) (a *App, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a = &App{log: log}
	// Error returns set a to nil: release what this one acquired.
	acquired := a
	defer func() {
		if err != nil {
			if rerr := acquired.release(); rerr != nil {
				log.Error("release after a failed start", "err", rerr)
			}
		}
	}()
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// Before anything reads or changes the data dir or the host: one
	// server per data dir.
	if a.lock, err = lockDataDir(data); err != nil {
		return nil, err
	}
	// The TLS flags are checked before the driver touches the host.
	if a.tls, err = httpsConfig(cfg, data); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hangar binary: %w", err)
	}

	ctx := context.Background()
	if cfg.Database != "" {
		a.store, err = store.Open(ctx, cfg.Database)
	} else {
		a.store, err = store.OpenSQLite(filepath.Join(data, "hangar.db"))
	}
	if err != nil {
		return nil, err
	}
	name, err := serverName(data)
	if err != nil {
		return nil, err
	}
	if err := ensureAdminToken(ctx, a.store, data, adminTokenName(cfg, name)); err != nil {
		return nil, err
	}
	sealer, fingerprint, err := secrets.LoadSealer(cfg.SecretsKey, data)
	if err != nil {
		return nil, err
	}
	if cfg.Database != "" && cfg.SecretsKey == "" {
		log.Warn("secrets key: this server seals environment variable groups and keystores with its data directory's own key; every server of this database must use the same key: copy it and give --secrets-key", "file", filepath.Join(data, secrets.KeyFile), "fingerprint", fingerprint)
	} else {
		log.Info("secrets key", "fingerprint", fingerprint)
	}
	a.vault = &secrets.Vault{Store: a.store, Sealer: sealer}
	a.files = &artifact.Keeper{Dir: data, Store: a.store, InDatabase: cfg.Database != "", MaxFile: cfg.ArtifactMaxFile, MaxBuild: cfg.ArtifactMaxBuild,
		Retention: cfg.ArtifactRetention, MaxCache: cfg.CacheMaxSize, CacheRetention: cfg.CacheRetention, Logger: log}
	// The API's URL, for artifact links and emails: --public-url, or the
	// address it listens on (set below, before any build runs).
	a.publicURL = strings.TrimRight(cfg.PublicURL, "/")
	// Webhook bodies wait for their signature here, on disk; what an
	// earlier server left (a kill mid-read) goes.
	spool := filepath.Join(data, "webhook-spool")
	if err := os.RemoveAll(spool); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	mirrors := &gitrepo.Mirrors{Dir: filepath.Join(data, "repos")}
	scfg := server.Config{Store: a.store, Mirrors: mirrors, Logger: log, Metrics: promhttp.Handler(), SpoolDir: spool,
		UI: server.UIHandler(), InstanceTypes: fitPids(cfg.InstanceTypes, cfg.MaxBuilds, log),
		Runners: a.store, RunnerStaleAfter: StaleAfter,
		Secrets: a.vault, Files: a.files}
	// Continue and Extend reach the build's runner through this server,
	// or through the store when another server's runner runs it.
	scfg.Continue, scfg.Extend = a.continueBuild, a.extendBuild
	if !cfg.NoRunner {
		if _, err := a.newRunner(ctx, cfg, data, exe, name, mirrors, &scfg); err != nil {
			return nil, err
		}
	} else if cfg.GatewayAddr != "" {
		// An API-only replica serves the SSH scripts, ssh_configs and
		// one-line commands of builds that other servers' runners run:
		// the keys are the database's, the gateways shared.
		keys, err := a.sshKeys(ctx, cfg, data)
		if err != nil {
			return nil, err
		}
		if scfg.SSH, err = gatewaysSSH(cfg, a.store, keys); err != nil {
			return nil, err
		}
		a.control = &cluster.Control{Store: a.store, Logger: log}
		a.runnerSSH = runnerAPISSH(cfg, a.store, keys, a.control)
	}
	// Runners on other hosts run SSH builds through the separate gateways.
	scfg.RunnerAPI = runnerapi.New(runnerapi.Config{Store: a.store, Logger: log, StaleAfter: StaleAfter, SSH: a.runnerSSH,
		Secrets: a.vault, Files: a.files, PublicURL: func() string { return a.publicURL }, Notify: a.notifier(cfg)})
	if a.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("--http %s: %w", cfg.HTTP, err)
	}
	if a.publicURL == "" {
		scheme := "http://"
		if a.tls != nil {
			scheme = "https://"
		}
		a.publicURL = scheme + dialable(a.httpLn.Addr())
	}
	scfg.TLS = a.tls != nil
	scfg.Loopback = a.httpLn.Addr().(*net.TCPAddr).IP.IsLoopback()
	a.api = server.New(scfg)
	scheme := "http://"
	if a.tls != nil {
		scheme = "https://"
	}
	if a.run == nil {
		log.Info("hangar server started without a runner (--no-runner): other servers' runners and hangar runners run the builds", "http", scheme+a.httpLn.Addr().String(), "data", data, "name", name)
	} else {
		log.Info("hangar server started", "http", scheme+a.httpLn.Addr().String(), "driver", a.driver.Name(), "data", data, "link", a.linkLn.Addr().String(), "name", name)
	}
	if w := server.TransportWarning(scfg.TLS, scfg.Loopback, cfg.PublicURL); w != "" {
		log.Warn(w, "http", a.httpLn.Addr().String())
	}
	if len(cfg.TLSAutocert) > 0 && a.httpLn.Addr().(*net.TCPAddr).Port != 443 {
		log.Warn("--tls-autocert: Let's Encrypt checks the host names on port 443 (tls-alpn-01): forward it to the API's port", "http", a.httpLn.Addr().String(), "hosts", strings.Join(cfg.TLSAutocert, ","))
	}
	if a.sshLn != nil {
		log.Info("SSH gateway listening", "ssh", a.sshLn.Addr().String())
	}
	return a, nil
}

// newRunner makes the server's own runner called name: its driver, builder
// link, SSH gateway (unless SSH is off) and runner (a.run, which it
// returns), and wires them into the API's scfg. At start it fails the
// builds that an earlier run of it left running.
func (a *App) newRunner(ctx context.Context, cfg Config, data, exe, name string, mirrors *gitrepo.Mirrors, scfg *server.Config) (*runner.Runner, error) {
	log := a.log
	hostKey, err := sshca.LoadOrCreateKey(filepath.Join(data, "link_host_key"), "hangar link")
	if err != nil {
		return nil, err
	}

	// The driver destroys the machines an earlier server of this data dir
	// left running (a crash, SIGKILL); then their builds end.
	if a.driver, err = newDriver(cfg, data, log); err != nil {
		return nil, err
	}
	msg := InterruptedMessage
	if a.driver.Name() == "sandbox" || a.driver.Name() == "kube" {
		msg += "; its machine was destroyed at restart"
	}
	// The runner's identity: other servers' runners keep their builds.
	if a.runnerID, err = a.store.ServerRunner(ctx, name); err != nil {
		return nil, err
	}
	a.session = newSession()
	info := store.RunnerInfo{Host: hostName(), Capacity: cfg.MaxBuilds, Driver: a.driver.Name(), SSH: cfg.SSH != "off"}
	if err := a.store.StartRunner(ctx, a.runnerID, info, a.session, StaleAfter); err != nil {
		return nil, err
	}
	if n, err := a.store.FailRunnerBuilds(ctx, a.runnerID, msg); err != nil {
		return nil, err
	} else if n > 0 {
		log.Warn("builds interrupted by an earlier stop (crash or kill) marked failed", "count", n)
	}
	if a.linkLn, err = a.driver.Listen(); err != nil {
		return nil, fmt.Errorf("builder link: %w", err)
	}
	a.linkSrv = &link.Server{HostKey: hostKey, Logger: log}
	rcfg := runner.Config{
		Store: a.store.ForRunner(store.Claim{Runner: a.runnerID, NoSSH: cfg.SSH == "off"}), Driver: a.driver, Mirrors: mirrors, Link: a.linkSrv,
		LinkAddr: builderLinkAddr(a.driver, a.linkLn), Executable: exe, MaxBuilds: cfg.MaxBuilds, Logger: log,
		Secrets: runner.VaultSecrets{Vault: a.vault}, Files: runner.KeeperFiles{Keeper: a.files}, PublicURL: func() string { return a.publicURL },
	}
	if cfg.Database != "" {
		// A replica's runner runs builds that another server made (and
		// fetched into its own data dir): it fetches each build's
		// repository itself, as a runner on another host does.
		rcfg.Mirrors = fetchingMirrors{mirrors}
	}
	rcfg.Notify = a.notifier(cfg)
	scfg.Driver, scfg.Isolated = a.driver.Name(), a.driver.Isolated()
	if rcfg.Images, err = driverImages(ctx, cfg, data, a.driver, scfg.InstanceTypes.Names(), log); err != nil {
		return nil, err
	}
	for _, name := range scfg.InstanceTypes.Names() {
		limits := scfg.InstanceTypes[name].String()
		if !a.driver.Isolated() {
			limits += " (not enforced by the " + a.driver.Name() + " driver)"
		}
		log.Info("instance type", "name", name, "limits", limits)
	}

	if cfg.SSH != "off" || cfg.GatewayAddr != "" {
		keys := filepath.Join(data, "ssh")
		shared, err := a.sshKeys(ctx, cfg, data)
		if err != nil {
			return nil, err
		}
		ca, hostCA, sealer, urlKey := shared.UserCA, shared.HostCA, shared.Sealer, shared.URLKey
		creds := &runner.LocalCredentials{CA: ca, Sealer: sealer, Store: a.store}
		gwKeyPath := filepath.Join(keys, "gateway_host_key")
		gwKey, err := sshca.LoadOrCreateKey(gwKeyPath, "hangar gateway")
		if err != nil {
			return nil, err
		}
		if err := sshalgo.CheckHostKey(gwKey); err != nil {
			return nil, fmt.Errorf("%s: %w; move it away to make a new one", gwKeyPath, err)
		}
		// Every gateway presents a host certificate of the host CA, which
		// the generated known_hosts trusts (docs/gateways.md).
		gwCert, _, err := hostCA.HostSigner(gwKey)
		if err != nil {
			return nil, err
		}
		if cfg.GatewayAddr != "" {
			if scfg.SSH, err = gatewaysSSH(cfg, a.store, shared); err != nil {
				return nil, err
			}
			a.control = &cluster.Control{Store: a.store, Logger: log}
			a.runnerSSH = runnerAPISSH(cfg, a.store, shared, a.control)
			rcfg.SSH = &runner.SSHConfig{Credentials: creds, Gateway: a.control, Store: a.store, AfterSteps: cfg.SSHAfterSteps,
				TunnelAddr: cfg.GatewayAddr, TunnelCA: hostCA.PublicKey()}
			log.Info("SSH through separate gateways", "gateway_addr", cfg.GatewayAddr)
		} else {
			if a.sshLn, err = net.Listen("tcp", cfg.SSH); err != nil {
				return nil, fmt.Errorf("--ssh %s: %w", cfg.SSH, err)
			}
			a.gw = &gateway.Gateway{HostKey: gwKey, HostCert: gwCert, CA: ca.PublicKey(), Logger: log, HandshakeTimeout: cfg.SSHHandshake,
				MaxConns: cfg.SSHMaxConns, MaxUnauthenticated: cfg.SSHMaxUnauthenticated,
				MaxUnauthenticatedPerSource: cfg.SSHMaxUnauthenticatedPerSource}
			a.gw.AuthDelay.Max = cfg.SSHAuthDelayMax
			a.linkSrv.Tunnels = a.gw
			rcfg.SSH = &runner.SSHConfig{Credentials: creds, Gateway: a.gw, Store: a.store, AfterSteps: cfg.SSHAfterSteps}
			scfg.SSH = &server.SSHConfig{
				Store: a.store, Sealer: sealer, URLKey: urlKey, GatewayHost: cfg.SSHPublicHost,
				GatewayPort: a.sshLn.Addr().(*net.TCPAddr).Port, GatewayKey: gwKey.PublicKey(), GatewayCA: hostCA.PublicKey(), PublicURL: cfg.PublicURL,
				GatewayDialAddr: dialable(a.sshLn.Addr()),
			}
		}
	}
	a.run = runner.New(rcfg)
	if a.gw != nil {
		a.gw.Events = a.run.GatewayEvent
	}
	if a.control != nil {
		a.control.Events = a.run.GatewayEvent
	}
	return a.run, nil
}

// sshKeys returns the installation's SSH keys (package sshkeys): with
// PostgreSQL and --secrets-key those every server and gateway of the
// database shares, sealed with the secrets key (made by the first server,
// from its files in <data>/ssh if it has them); with SQLite, or without
// --secrets-key (warned), the data dir's files. The
// files a separate gateway is given (host_ca, user_ca.pub) are written to
// <data>/ssh either way.
func (a *App) sshKeys(ctx context.Context, cfg Config, data string) (*sshkeys.Keys, error) {
	dir := filepath.Join(data, "ssh")
	var keys *sshkeys.Keys
	var err error
	switch {
	case cfg.Database == "":
		keys, err = sshkeys.FromFiles(dir)
	case cfg.SecretsKey == "":
		// Sharing needs a secrets key that every server is given; with
		// its data dir's own, a server keeps its own keys (as before).
		a.log.Warn("SSH keys: this server uses its own SSH keys (in its data dir), not the database's shared ones, since it has no --secrets-key: SSH scripts it serves work only for the builds of its own runner, and separate gateways only for them; give every server and gateway of the database the same --secrets-key", "dir", dir)
		keys, err = sshkeys.FromFiles(dir)
	default:
		keys, err = sshkeys.Shared(ctx, a.store, a.vault.Sealer, true, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("SSH keys: %w", err)
	}
	if err := keys.WriteGatewayFiles(dir); err != nil {
		return nil, fmt.Errorf("SSH keys: %w", err)
	}
	return keys, nil
}

// gatewaysSSH is the API's SSH configuration with separate gateways
// (--gateway-addr): users are sent to the gateways' address, which the
// scripts pin by the host CA.
func gatewaysSSH(cfg Config, st *store.Store, keys *sshkeys.Keys) (*server.SSHConfig, error) {
	if cfg.Database == "" {
		return nil, errors.New("--gateway-addr: separate gateways share the server's state through PostgreSQL: set --database")
	}
	_, port, err := net.SplitHostPort(cfg.GatewayAddr)
	pn, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		return nil, fmt.Errorf("--gateway-addr %q: want host:port, e.g. gateways.example.com:2222", cfg.GatewayAddr)
	}
	return &server.SSHConfig{
		Store: st, Sealer: keys.Sealer, URLKey: keys.URLKey, GatewayHost: cfg.SSHPublicHost,
		GatewayPort: pn, GatewayCA: keys.HostCA.PublicKey(), PublicURL: cfg.PublicURL,
		GatewayDialAddr: cfg.GatewayAddr,
	}, nil
}

// runnerAPISSH is the runner API's SSH configuration with separate
// gateways: the server issues the credentials of the builds that runners
// on other hosts run, and controls the gateways for them with control.
func runnerAPISSH(cfg Config, st *store.Store, keys *sshkeys.Keys, control *cluster.Control) *runnerapi.SSHConfig {
	return &runnerapi.SSHConfig{
		Credentials: &runner.LocalCredentials{CA: keys.UserCA, Sealer: keys.Sealer, Store: st},
		Gateway:     control, TunnelAddr: cfg.GatewayAddr, TunnelCA: keys.HostCA.PublicKey(),
	}
}

// release closes the listeners, the driver (its shared resources, after
// the machines it still has) and the store, whichever exist, and unlocks
// the data dir.
func (a *App) release() error {
	var errs []error
	for _, l := range []net.Listener{a.httpLn, a.sshLn, a.linkLn} {
		if l != nil {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("close listener: %w", err))
			}
		}
	}
	if a.driver != nil {
		if err := a.driver.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the %s driver: %w", a.driver.Name(), err))
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the store: %w", err))
		}
	}
	if a.lock != nil {
		a.lock.Close() // releases the lock
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends (or a server fails), then shuts down in order:
//
//  1. the runner stops claiming builds, cancels the running ones (they
//     end failed: "the server shut down during the build") and waits for
//     their machines to be destroyed;
//  2. the builder link, the gateway and the HTTP API stop accepting and
//     wait for their connections, DrainTimeout at most, HurryTimeout once
//     hurry is closed;
//  3. the driver removes its shared resources (bridge, firewall rules) and
//     the store closes.
//
// hurry (may be nil) shortens step 2 only: the cleanup always runs.
func (a *App) Run(ctx context.Context, hurry <-chan struct{}) error {
	// HTTP handlers that stream (build logs) end when the API shuts down.
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	hs := &http.Server{Handler: a.api, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return httpCtx }}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if a.tls != nil {
			hs.TLSConfig = a.tls
			err = hs.ServeTLS(a.httpLn, "", "")
		} else {
			err = hs.Serve(a.httpLn)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http api: %w", err)
		}
		return nil
	})
	// Every server sweeps: the builds of runners that stopped answering
	// fail (each once, whichever server gets there first).
	g.Go(func() error {
		sweep(gctx, a.store, a.log)
		return nil
	})
	sweepCtx, stopSweep := context.WithCancel(gctx)
	defer stopSweep()
	g.Go(func() error {
		a.files.Run(sweepCtx, 0)
		return nil
	})
	if a.run == nil {
		if a.control != nil {
			// Closes what crashed runners left open, prunes.
			g.Go(func() error { return a.control.Run(gctx) })
		}
		g.Go(func() error {
			<-gctx.Done()
			a.shutdownServers(hs, stopHTTP, hurry)
			return nil
		})
		return a.wait(g)
	}
	// The runner beats until its builds have stopped.
	beatCtx, stopBeat := context.WithCancel(context.Background())
	defer stopBeat()
	g.Go(func() error {
		return beat(beatCtx, func(ctx context.Context) error {
			return a.store.RunnerHeartbeat(ctx, a.runnerID, a.session)
		}, a.log)
	})
	g.Go(func() error {
		if err := a.linkSrv.Serve(a.linkLn); !errors.Is(err, link.ErrServerClosed) {
			return fmt.Errorf("builder link: %w", err)
		}
		return nil
	})
	if a.control != nil {
		g.Go(func() error { return a.control.Run(gctx) })
	}
	g.Go(func() error {
		a.serveRequests(gctx)
		return nil
	})
	if a.gw != nil {
		g.Go(func() error {
			if err := a.gw.Serve(a.sshLn); !errors.Is(err, gateway.ErrServerClosed) {
				return fmt.Errorf("ssh gateway: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		err := a.run.Run(gctx)
		stopBeat()
		stopSweep()
		a.log.Info("builds stopped: closing the builder link, the SSH gateway and the HTTP API")
		a.shutdownServers(hs, stopHTTP, hurry)
		return err
	})
	return a.wait(g)
}

// wait waits for Run's goroutines, then releases everything.
func (a *App) wait(g *errgroup.Group) error {
	err := g.Wait()
	if rerr := a.release(); rerr != nil {
		a.log.Error("cleanup", "err", rerr)
		err = errors.Join(err, rerr)
	}
	a.log.Info("hangar server stopped")
	return err
}

// shutdownServers shuts down the link, the gateway and the HTTP API at
// once, each within DrainTimeout (HurryTimeout once hurry is closed).
func (a *App) shutdownServers(hs *http.Server, stopHTTP func(), hurry <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-hurry:
		case <-done:
			return
		}
		t := time.NewTimer(HurryTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-done:
		}
	}()
	var g errgroup.Group
	if a.linkSrv != nil { // none without a runner (--no-runner)
		g.Go(func() error {
			if err := a.linkSrv.Shutdown(ctx); err != nil {
				a.log.Warn("builder link shutdown", "err", err)
			}
			return nil
		})
	}
	if a.gw != nil {
		g.Go(func() error {
			if err := a.gw.Shutdown(ctx); err != nil {
				a.log.Warn("ssh gateway shutdown", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		stopHTTP()
		if err := hs.Shutdown(ctx); err != nil {
			a.log.Warn("http api shutdown", "err", err)
			_ = hs.Close()
		}
		return nil
	})
	_ = g.Wait()
}

// notifier sends publishing.email through the --smtp server, for this
// server's runner and, through the runner API, for runners on other
// hosts; without one, it says in the build's log that none was sent.
func (a *App) notifier(cfg Config) func(ctx context.Context, b build.Build, spec *build.Spec, artifacts []build.Artifact) []string {
	if cfg.SMTP == nil {
		return notify.Unconfigured
	}
	smtp := *cfg.SMTP
	smtp.PublicURL = func() string { return a.publicURL }
	return smtp.Notify
}

// newDriver picks and creates the machine driver.
func newDriver(cfg Config, data string, log *slog.Logger) (_ machine.Driver, err error) {
	name := cfg.Driver
	if name == "auto" {
		name = "host"
		if _, err := exec.LookPath("runc"); err == nil && os.Geteuid() == 0 {
			name = "sandbox"
		}
	}
	switch name {
	case "sandbox":
		if os.Geteuid() != 0 {
			return nil, errors.New("the sandbox driver needs root: run as root, or use --driver host (no isolation)")
		}
		state := filepath.Join(data, "machines")
		if cfg.SandboxDir != "" {
			if state, err = filepath.Abs(cfg.SandboxDir); err != nil {
				return nil, err
			}
		}
		d, err := sandbox.New(sandbox.Config{
			Subnet:      cfg.SandboxSubnet,
			Bridge:      cfg.SandboxBridge,
			Egress:      cfg.SandboxEgress,
			EgressAllow: cfg.SandboxEgressAllow,
			EgressDeny:  cfg.SandboxEgressDeny,
			DNS:         cfg.SandboxDNS,
			StateDir:    state,
			Mask:        []string{data},
		})
		if err != nil {
			return nil, err // not a nil *sandbox.Driver in a non-nil interface
		}
		logEgress(log, cfg, d.NameServers())
		return d, nil
	case "host":
		log.Warn("host driver: builds run as plain processes of the server's user, with NO isolation; use --driver sandbox (root, runc) for isolated machines")
		dir := filepath.Join(data, "machines")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		// Machines an earlier run left (a crash, SIGKILL) go first.
		d := &host.Driver{StateDir: dir}
		if err := d.Recover(); err != nil {
			return nil, err
		}
		return d, nil
	case "kube":
		d, err := newKubeDriver(cfg, data, log)
		if err != nil {
			return nil, err // not a nil *kube.Driver in a non-nil interface
		}
		return d, nil
	}
	return nil, fmt.Errorf("--driver %q: use sandbox, host, kube or auto", cfg.Driver)
}

// pidBudget is the share of the host's pid_max that MaxBuilds machines
// may use together; the rest is the host's.
const pidBudget = 0.75

// fitPids returns types (nil: the defaults) with their pids limits lowered
// so that maxBuilds machines of any type stay within pidBudget of the
// host's /proc/sys/kernel/pid_max, and logs what it lowered.
func fitPids(types build.InstanceTypes, maxBuilds int, log *slog.Logger) build.InstanceTypes {
	if types == nil {
		types = build.DefaultInstanceTypes()
	}
	data, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil || maxBuilds < 1 {
		return types
	}
	pidMax, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return types
	}
	return clampPids(types, int64(float64(pidMax)*pidBudget)/int64(maxBuilds), pidMax, maxBuilds, log)
}

// clampPids lowers every pids limit of types above perMachine (0:
// unlimited counts as above) to perMachine.
func clampPids(types build.InstanceTypes, perMachine, pidMax int64, maxBuilds int, log *slog.Logger) build.InstanceTypes {
	out := build.InstanceTypes{}
	for name, r := range types {
		if r.Pids == 0 || r.Pids > perMachine {
			log.Warn("instance type's pids limit lowered so that --max-builds machines fit in the host's pid_max",
				"instance_type", name, "pids", r.Pids, "lowered_to", perMachine, "pid_max", pidMax, "max_builds", maxBuilds)
			r.Pids = perMachine
		}
		out[name] = r
	}
	return out
}

// logEgress says what sandbox machines can reach, and how to change it.
func logEgress(log *slog.Logger, cfg Config, dns []netip.Addr) {
	if !cfg.SandboxEgress {
		log.Info("sandbox egress off: builds reach nothing outside (no package downloads); --sandbox-egress=on opens public addresses")
		return
	}
	log.Info("sandbox egress on: builds reach public IPv4 addresses, never this host, other builds or private, CGNAT and link-local networks; --sandbox-egress=off closes it",
		"allow", prefixes(cfg.SandboxEgressAllow), "deny", prefixes(cfg.SandboxEgressDeny), "dns", prefixes(dns))
	if len(dns) == 0 {
		log.Warn("sandbox machines have no name server: the host's resolv.conf names only loopback ones; set --sandbox-dns")
	}
}

// prefixes joins networks or addresses with commas ("none" if empty).
func prefixes[T fmt.Stringer](list []T) string {
	if len(list) == 0 {
		return "none"
	}
	s := make([]string, len(list))
	for i, p := range list {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// adminTokenName is the name of the admin token a server makes for its
// data dir: "admin" on SQLite (the database is the data dir's own), and
// "admin-<server name>" on PostgreSQL, whose servers each have their own
// data dir and admin token file.
func adminTokenName(cfg Config, server string) string {
	if cfg.Database == "" {
		return "admin"
	}
	return "admin-" + server
}

// ensureAdminToken makes the admin token called name on first start, and
// again when the data dir's token file is missing or no longer valid: the
// tokens called name are replaced (tokens of other servers' data dirs
// stay valid).
func ensureAdminToken(ctx context.Context, st *store.Store, data, name string) error {
	path := filepath.Join(data, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		if _, err := st.TokenByHash(ctx, server.HashToken(strings.TrimSpace(string(b)))); err == nil {
			fmt.Fprintf(os.Stderr, "Admin API token: %s\n", path)
			return nil
		}
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	secret := "hgr_" + hex.EncodeToString(b[:])
	if err := st.DeleteTokens(ctx, name); err != nil {
		return err
	}
	if err := st.AddToken(ctx, server.HashToken(secret), store.Token{Name: name, Admin: true}); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Created the admin API token %s in %s (mode 0600)\n", name, path)
	return nil
}

// dialable is an address the server itself can dial to reach a listener
// (an unspecified listen address becomes loopback).
func dialable(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := ta.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))
}
