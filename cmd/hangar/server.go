package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	hangarapp "github.com/hangar-ci/hangar/internal/app"
)

func serverCmd() *cobra.Command {
	var cfg hangarapp.Config
	var logLevel string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Hangar service (API, runner) in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
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
	f.StringVar(&cfg.SandboxDir, "sandbox-dir", "", "where sandbox machines' writable layers live (default: <data>/machines)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.SSH, "ssh", ":2222", "address of the public SSH gateway, or \"off\" (no SSH builds)")
	f.StringVar(&cfg.SSHPublicHost, "ssh-public-host", "", "host name users reach the gateway at (default: the host of the API request)")
	f.DurationVar(&cfg.SSHAfterSteps, "ssh-after-steps", 20*time.Minute, "how long an SSH build's machine stays after its steps complete (bounded by max_build_duration)")
	f.DurationVar(&cfg.SSHHandshake, "ssh-handshake-timeout", 10*time.Second, "time a client has from connecting to being authenticated at the gateway")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL users reach the API at, for one-line SSH commands (default: from the request)")
	return cmd
}

// runServer runs the service until SIGINT or SIGTERM. The first signal
// drains: running builds are stopped and their machines destroyed, then
// the servers shut down and the driver removes its bridge and firewall
// rules. A second signal hurries the servers' shutdown; no signal skips the
// cleanup (the signals stay caught until the process exits).
func runServer(cfg hangarapp.Config) error {
	log := cfg.Logger
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// A closed standard error (e.g. `make run | tee` interrupted with the
	// terminal's Ctrl-C) must not end the process before its cleanup: log
	// writes fail instead.
	signal.Ignore(syscall.SIGPIPE)

	a, err := hangarapp.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hurry := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		n := 0
		for {
			select {
			case sig := <-sigs:
				n++
				switch n {
				case 1:
					log.Info("signal: stopping builds, then the server (a second signal hurries the shutdown)", "signal", sig.String())
					cancel()
				case 2:
					log.Warn("second signal: hurrying the shutdown; builds' machines and the driver's resources are still cleaned up", "signal", sig.String())
					close(hurry)
				default:
					log.Warn("still cleaning up; use SIGKILL to abandon the cleanup", "signal", sig.String())
				}
			case <-done:
				return
			}
		}
	}()
	return a.Run(ctx, hurry)
}
