// Package runner claims queued builds, provisions a machine for each through
// a machine.Driver, links up with the builder inside (package link) and
// records what it reports.
//
// Each build is owned by one goroutine, which takes it through its phases
// in order (job.go): prepare (spec, keys, SSH credential), provision (the
// machine), link (wait for the builder), steps (follow its events), the SSH
// window (access after the steps, by the rules of package build/access),
// and teardown (revoke access, destroy the machine), then writes the end.
// Everything that happens to a build from outside (cancel, shutdown, its
// deadline, gateway events, the rules' timers) reaches that goroutine as a
// context cause or on a channel; only it writes the build.
package runner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/secrets"
)

// Store is what the runner needs of the store.
type Store interface {
	Subscribe(id int64) (<-chan struct{}, func())
	ClaimBuild(ctx context.Context) (*build.Build, []byte, error)
	// CancelRequests lists the builds that have a cancel request and have
	// not ended (the server asks; the runner ends them).
	CancelRequests(ctx context.Context) ([]int64, error)
	UpdateBuild(ctx context.Context, b *build.Build) (bool, error)
	LogStore
}

// EndedStore is implemented by stores that tell a runner which of its
// running builds have ended without it: failed by a server that found the
// runner silent (a network partition, a stall), or by its revocation. The
// runner then stops them (their machines go) rather than run on unseen.
type EndedStore interface {
	EndedBuilds(ctx context.Context, ids []int64) ([]int64, error)
}

// Mirrors gives the path of an app's repository mirror on the host.
type Mirrors interface {
	Path(app string) string
}

// RepoFetcher is implemented by Mirrors of a runner on another host than
// the server (which fetched the repository when it made the build): the
// runner fetches it before each build.
type RepoFetcher interface {
	// FetchForBuild brings app's mirror up to date from url and returns
	// its path; its error is for the build's user (no credentials).
	FetchForBuild(ctx context.Context, app, url string) (string, error)
}

// Clock is the runner's time: the build's deadline, the link timeout, the
// SSH access rules and the times it records. Tests inject a fake one.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened; it reports whether
	// it did.
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time                            { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Config configures a Runner.
type Config struct {
	Store   Store
	Driver  machine.Driver
	Mirrors Mirrors
	// Link serves builders; its listener must come from Driver.Listen.
	Link     *link.Server
	LinkAddr string
	// Executable is the hangar binary that machines run as the builder.
	Executable string
	// MaxBuilds is how many builds run at once.
	MaxBuilds int
	// LinkTimeout bounds machine start to builder link.
	LinkTimeout time.Duration
	// RevokeTimeout bounds how long teardown waits for the builder to
	// confirm that it closed its SSH sessions (default 5 seconds).
	RevokeTimeout time.Duration
	Logger        *slog.Logger
	// SSH enables SSH builds; nil refuses them, failing them with
	// NoSSHReason (default: "SSH access is not available on this server").
	SSH         *SSHConfig
	NoSSHReason string
	// Clock is the runner's time (nil: the system clock).
	Clock Clock
	// Images gives isolated machines their root; nil for drivers that
	// are not isolated (they boot nothing).
	Images Images
	// Secrets opens the variable groups and keystores builds name; nil
	// fails the builds that name any.
	Secrets Secrets
	// Files keeps artifacts and caches; nil: builds keep none.
	Files Files
	// PublicURL gives the API's base URL as users reach it (artifact
	// links); nil: links are paths.
	PublicURL func() string
	// Notify, if set, is called as a build ends, before its final status
	// is written (publishing.email); what it returns goes to the log.
	// b is a copy with its final status and message.
	Notify func(ctx context.Context, b build.Build, spec *build.Spec, artifacts []build.Artifact) []string
}

// Secrets opens what a build's workflow names: its environment variable
// groups and keystores (package secrets). Its errors hold no secret.
// VaultSecrets opens them from the server's own vault; a runner on
// another host asks the servers for those of build id (package runnerapi).
type Secrets interface {
	Resolve(ctx context.Context, id int64, app string, groups, keystores []string) (*secrets.Resolved, error)
}

// Images finds the image a build's machine boots from.
type Images interface {
	// ForInstanceType returns the root of instance type name's image and
	// the image's labels, or an error for the build's user.
	ForInstanceType(name string) (*machine.Image, map[string]string, error)
}

// Causes of a build's end other than its own result.
var (
	errCanceled = errors.New("canceled")
	errShutdown = errors.New("the server is shutting down")
	errDeadline = errors.New("max_build_duration reached")
	// errEndedElsewhere: the store holds the build ended already (see
	// job.save); the runner's own end is not written.
	errEndedElsewhere = errors.New("the build was ended outside its runner (the runner was found silent, or revoked)")
)

// Runner runs builds. Create it with New.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	hostKey string

	mu      sync.Mutex
	running map[int64]*job  // guarded by mu; builds claimed and not yet ended
	byAlias map[string]*job // guarded by mu; SSH builds whose access is live, by alias
	wg      sync.WaitGroup  // one per running build
}

// New returns a runner.
func New(cfg Config) *Runner {
	if cfg.MaxBuilds <= 0 {
		cfg.MaxBuilds = 4
	}
	if cfg.LinkTimeout <= 0 {
		cfg.LinkTimeout = 60 * time.Second
	}
	if cfg.RevokeTimeout <= 0 {
		cfg.RevokeTimeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	clock := cfg.Clock
	if clock == nil {
		clock = systemClock{}
	}
	return &Runner{
		cfg:     cfg,
		log:     log,
		clock:   clock,
		hostKey: string(ssh.MarshalAuthorizedKey(cfg.Link.HostKey.PublicKey())),
		running: make(map[int64]*job),
		byAlias: make(map[string]*job),
	}
}
