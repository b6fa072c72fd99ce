package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	hangarapp "github.com/hangar-ci/hangar/internal/app"
	"github.com/hangar-ci/hangar/internal/image"
)

// runnerConfig is `hangar runner`'s flags.
type runnerConfig struct {
	app      hangarapp.RunnerConfig
	labels   []string
	logLevel string
	egress   *egressFlags
}

func runnerCmd(cf *clientFlags) *cobra.Command {
	var rc runnerConfig
	m := &rc.app.Machines
	cmd := &cobra.Command{
		Use:   "runner",
		Short: "Run builds on this host for Hangar servers elsewhere (--server, --token); manage runners (admin)",
		Long: `hangar runner claims the builds of its labels (instance types) from the servers at --server and runs
them on this host's machines, with --capacity at once. It authenticates with a runner token (--token
or HANGAR_RUNNER_TOKEN) made by an admin with ` + "`hangar runner token create NAME`" + `. A runner that stops
answering has its builds failed by the servers within ` + (hangarapp.StaleAfter + hangarapp.SweepInterval).String() + `; when it starts again it removes the
machines it left. It runs SSH builds when the servers have separate SSH gateways (hangar server
--gateway-addr, see docs/gateways.md): the servers issue each build's credential, the builders open
their tunnels at the gateways, which this host's machines must reach; without them it runs none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRunner(cf, &rc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&m.Data, "data", "./hangar-runner", "the runner's data directory (machines, repository mirrors, images, its link key)")
	f.StringVar(&m.Driver, "driver", "auto", driverUsage)
	kubeFlags(f, &m.Kube)
	f.IntVar(&m.MaxBuilds, "capacity", 2, "builds that run at once")
	f.StringSliceVar(&rc.labels, "labels", []string{"linux"}, "instance types the runner runs (comma-separated), e.g. linux,linux_x2")
	rc.egress = addEgressFlags(f)
	f.StringVar(&m.SandboxSubnet, "sandbox-subnet", "10.213.43.0/24", "private IPv4 network of sandbox machines (another than a server's on the same host)")
	f.StringVar(&m.SandboxBridge, "sandbox-bridge", "hangar1", "name of the host bridge of sandbox machines (another than a server's on the same host)")
	f.StringVar(&m.SandboxDir, "sandbox-dir", "", "where sandbox machines' writable layers live (default: <data>/machines)")
	f.StringVar(&m.Images, "images", "", "image store of sandbox machines (default: <data>/images; see hangar image)")
	f.StringVar(&m.DefaultImage, "default-image", image.DefaultName, "image of the instance types (built by hangar image build, or any registry image)")
	f.StringVar(&m.RegistryAuth, "registry-auth", "", "Docker config.json with the credentials of the registries images are pulled from (default: anonymous)")
	f.DurationVar(&m.SSHAfterSteps, "ssh-after-steps", 20*time.Minute, "how long an SSH build's machine stays after its steps complete (bounded by max_build_duration)")
	f.StringVar(&rc.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(runnerTokenCmd(cf), runnerListCmd(cf), runnerRevokeCmd(cf))
	return cmd
}

// runRunner validates the flags and runs the runner until SIGINT or
// SIGTERM, which stop its builds (they fail) and destroy their machines.
func runRunner(cf *clientFlags, rc *runnerConfig) error {
	cfg := rc.app
	servers := cf.server
	if servers == "" {
		servers = os.Getenv("HANGAR_SERVER")
	}
	for _, s := range strings.Split(servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !strings.Contains(s, "://") {
				s = "http://" + s
			}
			cfg.Servers = append(cfg.Servers, s)
		}
	}
	if len(cfg.Servers) == 0 {
		return errors.New("--server: give the URL of the Hangar server (several, comma-separated, for replicas), or set HANGAR_SERVER")
	}
	cfg.Token = cf.token
	if cfg.Token == "" {
		cfg.Token = os.Getenv("HANGAR_RUNNER_TOKEN")
	}
	if !strings.HasPrefix(cfg.Token, "hrt_") {
		return errors.New("--token: give the runner's token (hrt_..., from `hangar runner token create NAME`), or set HANGAR_RUNNER_TOKEN; an API token is not a runner token")
	}
	if err := rc.egress.apply(&cfg.Machines); err != nil {
		return err
	}
	for _, l := range rc.labels {
		if l = strings.TrimSpace(l); l != "" {
			cfg.Labels = append(cfg.Labels, l)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(rc.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", rc.logLevel)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Machines.Logger = cfg.Logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	r, err := hangarapp.NewRunner(ctx, cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

func runnerTokenCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage runner tokens (admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a runner called NAME and print its token once (for hangar runner --token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.CreateRunner(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Println(out.Token)
			return nil
		},
	})
	return cmd
}

func runnerListCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the runners: name, host, labels, capacity, running builds, last seen (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Runners(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHOST\tLABELS\tCAPACITY\tRUNNING\tSSH\tLAST SEEN\tSTATE")
			for _, r := range list {
				labels := strings.Join(r.Labels, ",")
				if labels == "" {
					labels = "(all)"
				}
				seen := "never"
				if r.LastSeen != nil {
					seen = r.LastSeen.Local().Format(time.DateTime)
				}
				state := "silent"
				switch {
				case r.RevokedAt != nil:
					state = "revoked"
				case r.Answering:
					state = "answering"
				case r.LastSeen == nil:
					state = "not started"
				}
				if r.Server {
					state += " (server)"
				}
				ssh := "no"
				if r.SSH {
					ssh = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Name, r.Host, labels, strconv.Itoa(r.Capacity), r.Running, ssh, seen, state)
			}
			return tw.Flush()
		},
	}
}

func runnerRevokeCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke runner NAME's token: it stops, and its running builds fail (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.RevokeRunner(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Printf("Runner %s revoked\n", args[0])
			return nil
		},
	}
}
