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

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gateway/cluster"
)

func gatewayCmd() *cobra.Command {
	var cfg cluster.Config
	var logLevel string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run one SSH gateway of several behind one address (the servers run with --gateway-addr; see docs/gateways.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			if cfg.MaxConns < 1 {
				return fmt.Errorf("--max-conns %d: must be at least 1", cfg.MaxConns)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return cluster.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Database, "database", "", "PostgreSQL URL of the servers' database (required), password in PGPASSWORD or ~/.pgpass")
	f.StringVar(&cfg.Listen, "listen", ":2222", "SSH address users and builders reach (behind the one public address)")
	f.StringVar(&cfg.PeerListen, "peer-listen", ":2224", "address of the peer link, where the other gateways forward hops to the tunnels this one holds")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port where the other gateways reach this one's --peer-listen (required)")
	f.StringVar(&cfg.Data, "data", "./hangar-gateway", "directory of the gateway's host key (made at first start)")
	f.StringVar(&cfg.HostCA, "host-ca", "./hangar-data/ssh/host_ca", "the host CA's private key: a copy of the server's <data>/ssh/host_ca (the same for every gateway)")
	f.StringVar(&cfg.UserCA, "user-ca", "./hangar-data/ssh/user_ca.pub", "the user CA's public key: a copy of the server's <data>/ssh/user_ca.pub")
	f.StringVar(&cfg.SecretsKey, "secrets-key", "", "the servers' --secrets-key (env:NAME or a file): read the CAs from the database, not --host-ca and --user-ca")
	f.StringVar(&cfg.ID, "id", "", "name of the gateway in the registry of tunnels (default: random at each start)")
	f.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time a client has from connecting to being authenticated")
	f.IntVar(&cfg.MaxConns, "max-conns", gateway.DefaultMaxConns, "connections the gateway holds at once, authenticated or not")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
