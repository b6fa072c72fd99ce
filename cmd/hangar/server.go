package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	hangarapp "github.com/hangar-ci/hangar/internal/app"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/store"
)

func serverCmd() *cobra.Command {
	var cfg hangarapp.Config
	var logLevel, instanceTypes string
	var egress *egressFlags
	var applyFileFlags func(*hangarapp.Config) error
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Hangar service (API, runner) in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Database != "" {
				if err := store.CheckURL(cfg.Database); err != nil {
					return fmt.Errorf("--%w", err)
				}
			}
			if err := egress.apply(&cfg); err != nil {
				return err
			}
			if instanceTypes != "" {
				data, err := os.ReadFile(instanceTypes)
				if err != nil {
					return fmt.Errorf("--instance-types: %w", err)
				}
				if cfg.InstanceTypes, err = build.ParseInstanceTypes(data); err != nil {
					return fmt.Errorf("--instance-types %s: %w", instanceTypes, err)
				}
				if cfg.InstanceImages, err = build.InstanceImages(data); err != nil {
					return fmt.Errorf("--instance-types %s: %w", instanceTypes, err)
				}
			}
			if err := checkGatewayLimits(cfg); err != nil {
				return err
			}
			if err := applyFileFlags(&cfg); err != nil {
				return err
			}
			if cfg.GatewayAddr != "" {
				if cfg.Database == "" {
					return errors.New("--gateway-addr: separate gateways share the server's state through PostgreSQL: set --database")
				}
				if _, port, err := net.SplitHostPort(cfg.GatewayAddr); err != nil || port == "" {
					return fmt.Errorf("--gateway-addr %q: want host:port, e.g. gateways.example.com:2222", cfg.GatewayAddr)
				}
			}
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
	f.StringVar(&cfg.Database, "database", "", "PostgreSQL URL, e.g. postgres://hangar@db.example.com/hangar?sslmode=verify-full, password in PGPASSWORD or ~/.pgpass (default: SQLite in the data directory, <data>/hangar.db)")
	f.StringVar(&cfg.SecretsKey, "secrets-key", "", "key that encrypts environment variable groups and keystores: a file (32 bytes, raw, base64 or hex, e.g. from `openssl rand -base64 32`) or env:NAME; every server of one --database needs the same (default: <data>/secrets.key, made on first use)")
	f.StringVar(&cfg.Driver, "driver", "auto", driverUsage)
	kubeFlags(f, &cfg.Kube)
	f.IntVar(&cfg.MaxBuilds, "max-builds", 10, "builds that run at once")
	f.BoolVar(&cfg.NoRunner, "no-runner", false, "run no builds here (API only): other servers' runners (on a shared PostgreSQL) and hangar runners run them")
	egress = addEgressFlags(f)
	f.StringVar(&cfg.SandboxSubnet, "sandbox-subnet", "10.213.42.0/24", "private IPv4 network of sandbox machines")
	f.StringVar(&cfg.SandboxBridge, "sandbox-bridge", "hangar0", "name of the host bridge of sandbox machines")
	f.StringVar(&cfg.SandboxDir, "sandbox-dir", "", "where sandbox machines' writable layers live (default: <data>/machines)")
	f.StringVar(&instanceTypes, "instance-types", "", "YAML file of the instance types workflows may pick, with their CPU, memory, process and /tmp limits (default: linux and linux_x2, see docs/cli.md)")
	f.StringVar(&cfg.Images, "images", "", "image store of sandbox machines (default: <data>/images; see hangar image)")
	f.StringVar(&cfg.DefaultImage, "default-image", image.DefaultName, "image of the instance types that name none (built by hangar image build, or any registry image)")
	f.StringVar(&cfg.RegistryAuth, "registry-auth", "", "Docker config.json with the credentials of the registries images are pulled from (default: anonymous)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.SSH, "ssh", ":2222", "address of the public SSH gateway, or \"off\" (no SSH builds)")
	f.StringVar(&cfg.GatewayAddr, "gateway-addr", "", "host:port of separate SSH gateways (hangar gateway, several behind one address, on --database's PostgreSQL): builders open their tunnels there and users connect there; the server then runs no gateway (--ssh is ignored)")
	f.StringVar(&cfg.SSHPublicHost, "ssh-public-host", "", "host name users reach the gateway at (default: the host of the API request)")
	f.DurationVar(&cfg.SSHAfterSteps, "ssh-after-steps", 20*time.Minute, "how long an SSH build's machine stays after its steps complete (bounded by max_build_duration)")
	f.DurationVar(&cfg.SSHHandshake, "ssh-handshake-timeout", 10*time.Second, "time a client has from connecting to being authenticated at the gateway")
	f.IntVar(&cfg.SSHMaxConns, "ssh-max-conns", gateway.DefaultMaxConns, "connections the SSH gateway holds at once, authenticated or not")
	f.IntVar(&cfg.SSHMaxUnauthenticated, "ssh-max-unauthenticated", gateway.DefaultMaxUnauthenticated, "connections not yet authenticated that the gateway holds (at most half of --ssh-max-conns); when full, the oldest is closed for a new one")
	f.IntVar(&cfg.SSHMaxUnauthenticatedPerSource, "ssh-max-unauthenticated-per-source", gateway.DefaultMaxUnauthenticatedPerSource, "the same, from one IP address")
	f.DurationVar(&cfg.SSHAuthDelayMax, "ssh-auth-delay-max", netx.DefaultAuthDelayMax, "longest delay of the gateway's answer to a failed login; the delay doubles with each failure in a row from an address, from 100ms")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL users reach the API at, for one-line SSH commands (default: from the request)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the API over HTTPS with this certificate (PEM file, with its chain); needs --tls-key")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the private key (PEM file) of --tls-cert")
	f.StringSliceVar(&cfg.TLSAutocert, "tls-autocert", nil, "serve HTTPS with certificates from Let's Encrypt for these public host names (comma-separated; the API must be their port 443; cached in <data>/autocert)")
	applyFileFlags = fileFlags(f)
	f.StringVar(&cfg.TLSAutocertEmail, "tls-autocert-email", "", "contact address of the Let's Encrypt account of --tls-autocert (optional)")
	return cmd
}

// checkGatewayLimits validates the SSH gateway's bounds.
func checkGatewayLimits(cfg hangarapp.Config) error {
	for _, l := range []struct {
		flag string
		n    int
	}{
		{"--ssh-max-conns", cfg.SSHMaxConns},
		{"--ssh-max-unauthenticated", cfg.SSHMaxUnauthenticated},
		{"--ssh-max-unauthenticated-per-source", cfg.SSHMaxUnauthenticatedPerSource},
	} {
		if l.n < 1 {
			return fmt.Errorf("%s %d: must be at least 1", l.flag, l.n)
		}
	}
	if 2*cfg.SSHMaxUnauthenticated > cfg.SSHMaxConns {
		return fmt.Errorf("--ssh-max-unauthenticated %d must be at most half of --ssh-max-conns %d, so that authenticated users keep room: lower it or raise --ssh-max-conns",
			cfg.SSHMaxUnauthenticated, cfg.SSHMaxConns)
	}
	if cfg.SSHAuthDelayMax <= 0 {
		return fmt.Errorf("--ssh-auth-delay-max %v: must be positive (e.g. 4s)", cfg.SSHAuthDelayMax)
	}
	return nil
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

// onOff is a boolean flag spelled on/off (true/false also work); alone,
// the flag means on.
type onOff bool

func (v *onOff) String() string {
	if *v {
		return "on"
	}
	return "off"
}

func (v *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "1", "yes":
		*v = true
	case "off", "false", "0", "no":
		*v = false
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

func (v *onOff) Type() string { return "on|off" }

// parseNetworks parses IPv4 networks in CIDR notation (a bare address is a
// /32) for flag.
func parseNetworks(flag string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s %q: want an IPv4 network such as 10.1.2.3/32 or 203.0.113.0/24", flag, s)
		case !p.Addr().Is4():
			return nil, fmt.Errorf("%s %s: not IPv4 (sandbox machines have no IPv6)", flag, s)
		case p != p.Masked():
			return nil, fmt.Errorf("%s %s: the address has bits set beyond the /%d: did you mean %s or %s/32?",
				flag, s, p.Bits(), p.Masked(), p.Addr())
		}
		out = append(out, p)
	}
	return out, nil
}

// parseAddrs parses IPv4 addresses for flag.
func parseAddrs(flag string, list []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%s %q: want an IPv4 address such as 9.9.9.9", flag, s)
		}
		out = append(out, a)
	}
	return out, nil
}
