package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/machine/host"
	"github.com/hangar-ci/hangar/internal/machine/sandbox"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// serverConfig is `hangar server`'s configuration.
type serverConfig struct {
	HTTP          string
	Data          string
	Driver        string
	MaxBuilds     int
	SandboxEgress bool
	SandboxSubnet string
	SandboxBridge string
	SandboxDir    string
	LogLevel      string
	SSH           string
	SSHPublicHost string
	SSHAfterSteps time.Duration
	SSHHandshake  time.Duration
	PublicURL     string
}

func serverCmd() *cobra.Command {
	var cfg serverConfig
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Hangar service (API, runner) in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServer(cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.HTTP, "http", "127.0.0.1:8080", "address of the HTTP API")
	f.StringVar(&cfg.Data, "data", "./hangar-data", "data directory (database, tokens, keys, repository mirrors)")
	f.StringVar(&cfg.Driver, "driver", "auto", "machine driver: sandbox (isolated, needs root and runc), host (no isolation), or auto")
	f.IntVar(&cfg.MaxBuilds, "max-builds", 10, "builds that run at once")
	f.BoolVar(&cfg.SandboxEgress, "sandbox-egress", false, "let sandbox machines open connections to the outside (NAT)")
	f.StringVar(&cfg.SandboxSubnet, "sandbox-subnet", "10.213.42.0/24", "private IPv4 network of sandbox machines")
	f.StringVar(&cfg.SandboxBridge, "sandbox-bridge", "hangar0", "name of the host bridge of sandbox machines")
	f.StringVar(&cfg.SandboxDir, "sandbox-dir", "", "where sandbox machines' writable layers live (default: <data>/machines; must be outside /usr, /etc, /var, /opt)")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.SSH, "ssh", ":2222", "address of the public SSH gateway, or \"off\" (no SSH builds)")
	f.StringVar(&cfg.SSHPublicHost, "ssh-public-host", "", "host name users reach the gateway at (default: the host of the API request)")
	f.DurationVar(&cfg.SSHAfterSteps, "ssh-after-steps", 20*time.Minute, "how long an SSH build's machine stays after its steps complete (bounded by max_build_duration)")
	f.DurationVar(&cfg.SSHHandshake, "ssh-handshake-timeout", 10*time.Second, "time a client has from connecting to being authenticated at the gateway")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL users reach the API at, for one-line SSH commands (default: from the request)")
	return cmd
}

func runServer(cfg serverConfig) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", cfg.LogLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the hangar binary: %w", err)
	}

	st, err := store.OpenSQLite(filepath.Join(data, "hangar.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if n, err := st.FailInterrupted(ctx, "the server stopped during the build"); err != nil {
		return err
	} else if n > 0 {
		log.Warn("builds interrupted by an earlier stop marked failed", "count", n)
	}
	if err := ensureAdminToken(ctx, st, data); err != nil {
		return err
	}
	hostKey, err := sshca.LoadOrCreateKey(filepath.Join(data, "link_host_key"), "hangar link")
	if err != nil {
		return err
	}

	driver, err := newDriver(cfg, data, log)
	if err != nil {
		return err
	}
	defer driver.Close()
	linkLn, err := driver.Listen()
	if err != nil {
		return fmt.Errorf("builder link: %w", err)
	}
	linkSrv := &link.Server{HostKey: hostKey, Logger: log}
	mirrors := &gitrepo.Mirrors{Dir: filepath.Join(data, "repos")}
	rcfg := runner.Config{
		Store: st, Driver: driver, Mirrors: mirrors, Link: linkSrv, LinkAddr: linkLn.Addr().String(),
		Executable: exe, MaxBuilds: cfg.MaxBuilds, Logger: log,
	}
	scfg := server.Config{Store: st, Mirrors: mirrors, Logger: log, Metrics: promhttp.Handler(),
		Driver: driver.Name(), Isolated: driver.Isolated(), UI: server.UIHandler()}

	var gw *gateway.Gateway
	var sshLn net.Listener
	if cfg.SSH != "off" {
		keys := filepath.Join(data, "ssh")
		ca, err := sshca.LoadOrCreateCA(filepath.Join(keys, "user_ca"))
		if err != nil {
			return err
		}
		gwKey, err := sshca.LoadOrCreateKey(filepath.Join(keys, "gateway_host_key"), "hangar gateway")
		if err != nil {
			return err
		}
		sealer, err := sshca.LoadOrCreateSealer(filepath.Join(keys, "seal.key"))
		if err != nil {
			return err
		}
		urlKey, err := sshca.LoadOrCreateSecret(filepath.Join(keys, "url.key"))
		if err != nil {
			return err
		}
		if sshLn, err = net.Listen("tcp", cfg.SSH); err != nil {
			return fmt.Errorf("--ssh %s: %w", cfg.SSH, err)
		}
		gw = &gateway.Gateway{HostKey: gwKey, CA: ca.PublicKey(), Logger: log, HandshakeTimeout: cfg.SSHHandshake}
		linkSrv.Tunnels = gw
		rcfg.SSH = &runner.SSHConfig{CA: ca, Sealer: sealer, Gateway: gw, Store: st, AfterSteps: cfg.SSHAfterSteps}
		scfg.SSH = &server.SSHConfig{
			Store: st, Sealer: sealer, URLKey: urlKey, GatewayHost: cfg.SSHPublicHost,
			GatewayPort: sshLn.Addr().(*net.TCPAddr).Port, GatewayKey: gwKey.PublicKey(), PublicURL: cfg.PublicURL,
			GatewayDialAddr: dialable(sshLn.Addr()),
		}
	}
	run := runner.New(rcfg)
	scfg.Runner = run
	if gw != nil {
		gw.Events = run.GatewayEvent
	}
	api := server.New(scfg)
	httpLn, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("--http %s: %w", cfg.HTTP, err)
	}
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	log.Info("hangar server started", "http", "http://"+httpLn.Addr().String(), "driver", driver.Name(), "data", data, "link", linkLn.Addr().String())
	if sshLn != nil {
		log.Info("SSH gateway listening", "ssh", sshLn.Addr().String())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		if err := linkSrv.Serve(linkLn); !errors.Is(err, link.ErrServerClosed) {
			return err
		}
		return nil
	})
	if gw != nil {
		g.Go(func() error {
			if err := gw.Serve(sshLn); !errors.Is(err, gateway.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		// Builds end (and their machines go) before the link and the
		// gateway close.
		err := run.Run(gctx)
		linkSrv.Close()
		if gw != nil {
			_ = gw.Close()
		}
		return err
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: stopping builds")
		// A second signal ends the process at once.
		stop()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	})
	return g.Wait()
}

// newDriver picks and creates the machine driver.
func newDriver(cfg serverConfig, data string, log *slog.Logger) (_ machine.Driver, err error) {
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
		return sandbox.New(sandbox.Config{
			Subnet:   cfg.SandboxSubnet,
			Bridge:   cfg.SandboxBridge,
			Egress:   cfg.SandboxEgress,
			StateDir: state,
			Mask:     []string{data},
		})
	case "host":
		log.Warn("host driver: builds run as plain processes of the server's user, with NO isolation; use --driver sandbox (root, runc) for isolated machines")
		dir := filepath.Join(data, "machines")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return &host.Driver{StateDir: dir}, nil
	}
	return nil, fmt.Errorf("--driver %q: use sandbox, host or auto", cfg.Driver)
}

// ensureAdminToken creates the admin token on first start.
func ensureAdminToken(ctx context.Context, st *store.Store, data string) error {
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
	if err := st.DeleteTokens(ctx, "admin"); err != nil {
		return err
	}
	if err := st.AddToken(ctx, server.HashToken(secret), store.Token{Name: "admin", Admin: true}); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Created the admin API token in %s (mode 0600)\n", path)
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
