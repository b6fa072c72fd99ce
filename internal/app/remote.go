package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/runnerapi"
	"github.com/hangar-ci/hangar/internal/sshca"
)

// RunnerConfig is `hangar runner`'s configuration: a runner on its own
// host that claims builds of its labels from the servers through the
// runner API. Machines holds the driver's settings (Data, Driver,
// MaxBuilds as the capacity, the sandbox's and the images' fields).
type RunnerConfig struct {
	Machines Config
	// Servers are the servers' URLs (replicas: the runner moves to the
	// next when one does not answer).
	Servers []string
	// Token is the runner's token (`hangar runner token create`).
	Token string
	// Labels are the instance types the runner runs.
	Labels []string
	Logger *slog.Logger
}

// RemoteRunner is a configured `hangar runner`. Create it with NewRunner,
// then call Run exactly once; Run releases everything NewRunner acquired.
type RemoteRunner struct {
	log     *slog.Logger
	lock    *os.File
	client  *runnerapi.Client
	driver  machine.Driver
	linkLn  net.Listener
	linkSrv *link.Server
	run     *runner.Runner
	name    string
	ssh     bool // it runs SSH builds
}

// fetchingMirrors are a runner's own repository mirrors: the runner
// fetches a build's repository before its machine starts.
type fetchingMirrors struct{ *gitrepo.Mirrors }

// FetchForBuild implements runner.RepoFetcher.
func (m fetchingMirrors) FetchForBuild(ctx context.Context, app, url string) (string, error) {
	return m.Fetch(ctx, app, url)
}

// NewRunner takes the data dir, makes the driver (which removes the
// machines an earlier run left), tells the servers that the runner starts
// (they fail the builds its earlier run left running) and listens for
// builders.
func NewRunner(ctx context.Context, cfg RunnerConfig) (r *RemoteRunner, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r = &RemoteRunner{log: log}
	acquired := r
	defer func() {
		if err != nil {
			acquired.release()
		}
	}()
	if len(cfg.Servers) == 0 || cfg.Token == "" {
		return nil, errors.New("a runner needs --server (the servers' URLs) and --token (a runner token of `hangar runner token create NAME`)")
	}
	if len(cfg.Labels) == 0 {
		return nil, errors.New("--labels: name at least one instance type the runner runs, e.g. linux,linux_x2")
	}
	if cfg.Machines.MaxBuilds < 1 {
		return nil, fmt.Errorf("--capacity %d: must be at least 1", cfg.Machines.MaxBuilds)
	}
	data, err := filepath.Abs(cfg.Machines.Data)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if r.lock, err = lockDataDir(data); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hangar binary: %w", err)
	}
	hostKey, err := sshca.LoadOrCreateKey(filepath.Join(data, "link_host_key"), "hangar link")
	if err != nil {
		return nil, err
	}
	r.client = runnerapi.NewClient(cfg.Servers, cfg.Token, log)
	// A kube runner without --kube-server-id is named in the cluster
	// after its runner name, which is unique (the host name is not: two
	// runners on one host would reap each other's Pods): its driver is
	// made once the servers have told the name.
	kubeByName := cfg.Machines.Driver == "kube" && cfg.Machines.Kube.ServerID == ""
	driverName := "kube"
	if !kubeByName {
		if r.driver, err = newDriver(cfg.Machines, data, log); err != nil {
			return nil, err
		}
		driverName = r.driver.Name()
	}
	start, err := r.client.Start(ctx, runnerapi.StartRequest{Host: hostName(), Labels: cfg.Labels,
		Capacity: cfg.Machines.MaxBuilds, Driver: driverName, SSH: true})
	if err != nil {
		return nil, fmt.Errorf("start the runner with the server: %w", err)
	}
	r.name = start.Name
	if kubeByName {
		mc := cfg.Machines
		mc.Kube.ServerID = KubeRunnerID(r.name)
		if r.driver, err = newDriver(mc, data, log); err != nil {
			return nil, err
		}
	}
	if start.Interrupted > 0 {
		log.Warn("builds this runner left running (crash or kill) were marked failed", "count", start.Interrupted)
	}
	if r.linkLn, err = r.driver.Listen(); err != nil {
		return nil, fmt.Errorf("builder link: %w", err)
	}
	r.linkSrv = &link.Server{HostKey: hostKey, Logger: log}
	rcfg := runner.Config{
		Store: r.client, Driver: r.driver, Mirrors: fetchingMirrors{&gitrepo.Mirrors{Dir: filepath.Join(data, "repos")}},
		Link: r.linkSrv, LinkAddr: builderLinkAddr(r.driver, r.linkLn), Executable: exe, MaxBuilds: cfg.Machines.MaxBuilds, Logger: log,
	}
	// The servers open the groups and keystores of its builds, and keep
	// their artifacts and caches.
	rcfg.Secrets = r.client
	rcfg.Notify = r.client.Notify // publishing.email, through their SMTP server
	files, err := r.client.Files(ctx)
	if err != nil {
		return nil, err
	}
	rcfg.Files = files
	if u := files.PublicURL(); u != "" {
		rcfg.PublicURL = files.PublicURL
	}
	if rcfg.Images, err = driverImages(ctx, cfg.Machines, data, r.driver, cfg.Labels, log); err != nil {
		return nil, err
	}
	if start.SSH != nil {
		// The servers have separate gateways: they issue the builds'
		// credentials and control the gateways; the builders open their
		// tunnels at the gateways.
		tunnelCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(start.SSH.TunnelCA))
		if err != nil {
			return nil, fmt.Errorf("start the runner with the server: the gateways' host CA: %w", err)
		}
		rcfg.SSH = &runner.SSHConfig{Credentials: r.client, Gateway: r.client.Gateway(), Store: r.client,
			TunnelAddr: start.SSH.TunnelAddr, TunnelCA: tunnelCA, AfterSteps: cfg.Machines.SSHAfterSteps}
	} else {
		// Its claims take no SSH build; should one come, it fails saying why.
		rcfg.NoSSHReason = fmt.Sprintf("runner %s runs no SSH builds: the servers have no separate SSH gateways (hangar server --gateway-addr) that both its builders and users reach (see docs/deploy.md#gateways)", r.name)
	}
	r.run = runner.New(rcfg)
	r.ssh = rcfg.SSH != nil
	log.Info("hangar runner started", "runner", r.name, "servers", strings.Join(cfg.Servers, ","), "labels", strings.Join(cfg.Labels, ","),
		"capacity", cfg.Machines.MaxBuilds, "driver", r.driver.Name(), "data", data, "link", rcfg.LinkAddr)
	if r.ssh {
		log.Info("SSH builds through the servers' separate gateways", "gateway_addr", start.SSH.TunnelAddr)
	} else {
		log.Info("SSH builds are left to the servers' own runners: the servers have no separate SSH gateways (hangar server --gateway-addr; see docs/deploy.md)")
	}
	return r, nil
}

// Run claims and runs builds until ctx ends (or the servers say another
// process took over the runner, or it was revoked), then stops the running
// builds, destroys their machines and releases everything.
func (r *RemoteRunner) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	beatCtx, stopBeat := context.WithCancel(context.Background())
	defer stopBeat()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g.Go(func() error {
		r.client.Watch(watchCtx)
		return nil
	})
	// The requests to its builds (Continue, Extend) and the gateways'
	// events are served until the builds have stopped.
	g.Go(func() error {
		serveRequests(watchCtx, r.client, r.run, r.log, nil)
		return nil
	})
	if r.ssh {
		g.Go(func() error {
			r.client.WatchGateway(watchCtx, r.run.GatewayEvent)
			return nil
		})
	}
	// Heartbeats go on until the builds have stopped.
	g.Go(func() error { return beat(beatCtx, r.client.Heartbeat, r.log) })
	g.Go(func() error {
		if err := r.linkSrv.Serve(r.linkLn); !errors.Is(err, link.ErrServerClosed) {
			return fmt.Errorf("builder link: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		err := r.run.Run(gctx)
		stopBeat()
		stopWatch()
		sctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
		defer cancel()
		if err := r.linkSrv.Shutdown(sctx); err != nil {
			r.log.Warn("builder link shutdown", "err", err)
		}
		return err
	})
	err := g.Wait()
	if rerr := r.release(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	r.log.Info("hangar runner stopped", "runner", r.name)
	return err
}

// release closes the link's listener and the driver and unlocks the data
// dir, whichever exist.
func (r *RemoteRunner) release() error {
	var errs []error
	if r.linkLn != nil {
		if err := r.linkLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if r.driver != nil {
		if err := r.driver.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the %s driver: %w", r.driver.Name(), err))
		}
	}
	if r.lock != nil {
		r.lock.Close()
	}
	return errors.Join(errs...)
}

// KubeRunnerID is the kube driver's id (--kube-server-id) of runner name
// when none is given: "runner-" and the name, lowercased, with '.' and
// '_' as '-'; a name that does not fit as it is (too long, or changed)
// is shortened and ends with a hash of it, so that two runners never
// share an id.
func KubeRunnerID(name string) string {
	id := "runner-" + strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			return c
		case c >= 'A' && c <= 'Z':
			return c + 'a' - 'A'
		}
		return '-'
	}, name)
	if id == "runner-"+name && len(id) <= 40 && !strings.HasSuffix(id, "-") {
		return id
	}
	sum := sha256.Sum256([]byte(name))
	if len(id) > 31 {
		id = id[:31]
	}
	return strings.TrimRight(id, "-") + "-" + hex.EncodeToString(sum[:4])
}
