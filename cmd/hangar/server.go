package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
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
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/machine/host"
	"github.com/hangar-ci/hangar/internal/machine/sandbox"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/server"
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
	LogLevel      string
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
	f.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
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
	hostKey, err := loadOrCreateKey(filepath.Join(data, "link_host_key"))
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
	run := runner.New(runner.Config{
		Store: st, Driver: driver, Mirrors: mirrors, Link: linkSrv, LinkAddr: linkLn.Addr().String(),
		Executable: exe, MaxBuilds: cfg.MaxBuilds, Logger: log,
	})
	api := server.New(server.Config{Store: st, Runner: run, Mirrors: mirrors, Logger: log, DataDir: data})
	httpLn, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("--http %s: %w", cfg.HTTP, err)
	}
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	log.Info("hangar server started", "http", "http://"+httpLn.Addr().String(), "driver", driver.Name(), "data", data, "link", linkLn.Addr().String())

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
	g.Go(func() error {
		// Builds end (and their machines go) before the link closes.
		err := run.Run(gctx)
		linkSrv.Close()
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
func newDriver(cfg serverConfig, data string, log *slog.Logger) (machine.Driver, error) {
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
		return sandbox.New(sandbox.Config{
			Subnet:   cfg.SandboxSubnet,
			Bridge:   cfg.SandboxBridge,
			Egress:   cfg.SandboxEgress,
			StateDir: filepath.Join(data, "machines"),
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

// loadOrCreateKey reads an ed25519 private key, creating it on first use.
func loadOrCreateKey(path string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s is not a valid private key: move it away to make a new one", path)
		}
		return s, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "hangar")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}
