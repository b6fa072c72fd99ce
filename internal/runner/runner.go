// Package runner claims queued builds, provisions a machine for each through
// a machine.Driver, links up with the builder inside (package link) and
// records what it reports.
package runner

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/store"
)

// Store is what the runner needs of the store.
type Store interface {
	Subscribe(id int64) (<-chan struct{}, func())
	ClaimBuild(ctx context.Context) (*build.Build, []byte, error)
	UpdateBuild(ctx context.Context, b *build.Build) (bool, error)
	LogStore
}

// Mirrors gives the path of an app's repository mirror on the host.
type Mirrors interface {
	Path(app string) string
}

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
	Logger      *slog.Logger
	// SSH enables SSH builds; nil refuses them.
	SSH *SSHConfig
}

// Causes of a build's end other than its own result.
var (
	errCanceled = errors.New("canceled")
	errShutdown = errors.New("the server is shutting down")
)

// Runner runs builds. Create it with New.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	hostKey string

	mu      sync.Mutex
	running map[int64]context.CancelCauseFunc // guarded by mu
	byAlias map[string]*job                   // guarded by mu; SSH builds by alias
	wg      sync.WaitGroup
}

// New returns a runner.
func New(cfg Config) *Runner {
	if cfg.MaxBuilds <= 0 {
		cfg.MaxBuilds = 4
	}
	if cfg.LinkTimeout <= 0 {
		cfg.LinkTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{
		cfg:     cfg,
		log:     log,
		hostKey: string(ssh.MarshalAuthorizedKey(cfg.Link.HostKey.PublicKey())),
		running: make(map[int64]context.CancelCauseFunc),
		byAlias: make(map[string]*job),
	}
}

// Run claims and runs builds until ctx ends, then stops every running build
// (marking it failed) and waits for their machines to be destroyed.
func (r *Runner) Run(ctx context.Context) error {
	wake, unsub := r.cfg.Store.Subscribe(0)
	defer unsub()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	slots := make(chan struct{}, r.cfg.MaxBuilds)
	for {
		r.claimAll(ctx, slots)
		select {
		case <-ctx.Done():
			r.mu.Lock()
			for _, cancel := range r.running {
				cancel(errShutdown)
			}
			r.mu.Unlock()
			r.wg.Wait()
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// claimAll starts queued builds while a slot is free.
func (r *Runner) claimAll(ctx context.Context, slots chan struct{}) {
	for {
		select {
		case slots <- struct{}{}:
		default:
			return
		}
		b, spec, err := r.cfg.Store.ClaimBuild(ctx)
		if err != nil {
			<-slots
			if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
				r.log.Error("claim build", "err", err)
			}
			return
		}
		bctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		r.mu.Lock()
		r.running[b.ID] = cancel
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-slots }()
			r.execute(bctx, b, spec)
			r.mu.Lock()
			delete(r.running, b.ID)
			r.mu.Unlock()
			cancel(nil)
		}()
	}
}

// Cancel stops build id if this runner runs it.
func (r *Runner) Cancel(id int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cancel, ok := r.running[id]
	if ok {
		cancel(errCanceled)
	}
	return ok
}

// job is one build being run.
type job struct {
	r     *Runner
	b     *build.Build
	store Store
	log   *slog.Logger
	logs  *logBook

	ssh *sshJob // nil unless the build has SSH access
}

func (j *job) save() {
	if _, err := j.store.UpdateBuild(context.Background(), j.b); err != nil {
		j.log.Error("update build", "err", err)
	}
}

func (j *job) stepStart(i int, t time.Time) {
	if i < 0 || i >= len(j.b.Steps) {
		return
	}
	t = t.UTC()
	j.b.Steps[i].Status = build.StepRunning
	j.b.Steps[i].StartedAt = &t
}

func (j *job) stepEnd(i int, st build.StepStatus, t time.Time, code *int) {
	if i < 0 || i >= len(j.b.Steps) {
		return
	}
	t = t.UTC()
	s := &j.b.Steps[i]
	s.Status = st
	s.FinishedAt = &t
	s.ExitCode = code
	if s.StartedAt != nil {
		d := t.Sub(*s.StartedAt).Milliseconds()
		s.DurationMS = &d
	}
}

// execute runs build b to its end.
func (r *Runner) execute(ctx context.Context, b *build.Build, specJSON []byte) {
	log := r.log.With("build", b.ID)
	j := &job{r: r, b: b, store: r.cfg.Store, log: log, logs: newLogBook(r.cfg.Store, b.ID, log)}
	start := time.Now()
	if b.StartedAt != nil {
		start = *b.StartedAt
	}
	deadline := start.Add(time.Duration(b.MaxDuration) * time.Second)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	buildsRunning.Inc()
	st, msg := r.run(ctx, j, specJSON)
	buildsRunning.Dec()
	status, msg := resolve(ctx, b, st, msg)
	buildsEnded.WithLabelValues(string(status)).Inc()
	now := time.Now().UTC()
	for i := range b.Steps {
		switch b.Steps[i].Status {
		case build.StepRunning:
			st := build.StepFailed
			if status == build.Canceled || status == build.Timeout {
				st = build.StepCanceled
			}
			j.stepEnd(i, st, now, nil)
		case build.StepPending:
			b.Steps[i].Status = build.StepSkipped
		}
	}
	if status != build.Finished {
		j.logs.Printf(lastStarted(b), "hangar: %s", msg)
	}
	j.logs.Flush()
	b.Status, b.Message, b.FinishedAt = status, msg, &now
	j.save()
	j.log.Info("build ended", "status", status, "duration", now.Sub(start).Round(time.Millisecond))
}

// resolve gives the final status of a build whose run returned st and
// msg; an empty st means the build's context ended first.
func resolve(ctx context.Context, b *build.Build, st build.Status, msg string) (build.Status, string) {
	switch cause := context.Cause(ctx); {
	case st != "":
		return st, msg
	case errors.Is(cause, errCanceled):
		return build.Canceled, "canceled"
	case errors.Is(cause, context.DeadlineExceeded):
		return build.Timeout, fmt.Sprintf("the build ran past its max_build_duration of %s and was stopped", time.Duration(b.MaxDuration)*time.Second)
	case errors.Is(cause, errShutdown):
		return build.Failed, "the server shut down during the build"
	}
	return build.Failed, "the build machine stopped unexpectedly"
}

func lastStarted(b *build.Build) int {
	last := 0
	for i, s := range b.Steps {
		if s.Status != build.StepPending && s.Status != build.StepSkipped {
			last = i
		}
	}
	return last
}

// run provisions the machine and follows the builder. It returns the final
// status and message, or "" when ctx ended first.
func (r *Runner) run(ctx context.Context, j *job, specJSON []byte) (st build.Status, msg string) {
	b := j.b
	var spec build.Spec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return build.Failed, "the build's stored spec is unreadable: " + err.Error()
	}
	if len(b.Steps) == 0 {
		b.Steps = build.NewSteps(spec.Scripts)
	}
	j.stepStart(0, time.Now())
	j.save()
	if r.cfg.Driver.Isolated() {
		j.logs.Printf(0, "Machine: %s driver, an isolated machine for this build", r.cfg.Driver.Name())
	} else {
		j.logs.Printf(0, "Machine: %s driver, NOT isolated: the build runs as a process on the server", r.cfg.Driver.Name())
	}
	for _, s := range spec.Ignored {
		j.logs.Printf(0, "Ignored: %s is not run by Hangar yet", s)
	}

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return build.Failed, "cannot make the builder's key"
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	pemBlock, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return build.Failed, "cannot make the builder's key"
	}
	name := build.Alias(b.ID)
	exp, err := r.cfg.Link.Expect(name, sshPub)
	if err != nil {
		return build.Failed, err.Error()
	}
	defer exp.Close()
	hello := link.Hello{Name: name, Addr: r.cfg.LinkAddr, HostKey: r.hostKey, Key: string(pem.EncodeToMemory(pemBlock))}
	var jobSSH *link.JobSSH
	if b.SSH.Enabled {
		if r.cfg.SSH == nil {
			return build.Failed, "SSH access is not available on this server"
		}
		if jobSSH, err = r.setupSSH(j, &hello); err != nil {
			return build.Failed, "could not set up SSH access: " + err.Error()
		}
		j.save()
	}
	helloJSON, _ := json.Marshal(hello)

	// However the build ends from here on: SSH access is revoked first
	// (telling open sessions why), then the machine goes.
	var m machine.Machine
	var conn *link.Conn
	defer func() {
		if j.ssh != nil {
			fst, _ := resolve(ctx, b, st, msg)
			r.teardownSSH(j, conn, fst)
			if conn != nil {
				time.Sleep(300 * time.Millisecond) // let the builder tell its sessions
			}
		}
		if m != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := m.Destroy(dctx); err != nil {
				j.log.Error("destroy machine", "err", err)
			}
		}
	}()

	mirror := r.cfg.Mirrors.Path(b.App)
	repo := mirror
	mount := machine.Mount{Source: mirror, Target: "/hangar/repo.git"}
	if r.cfg.Driver.Isolated() {
		repo = mount.Target
	}
	m, err = r.cfg.Driver.Start(ctx, machine.Spec{
		Name:    name,
		Builder: r.cfg.Executable,
		Args:    []string{"builder"},
		Env:     []string{"HANGAR_BUILD=" + name},
		Stdin:   strings.NewReader(string(helloJSON) + "\n"),
		Output:  j.logs.Diagnostics(),
		Mounts:  []machine.Mount{mount},
	})
	if err != nil {
		m = nil
		if ctx.Err() != nil {
			return "", ""
		}
		j.log.Error("start machine", "err", err)
		return build.Failed, "could not start the build machine: " + err.Error()
	}
	exited := make(chan error, 1)
	go func() { exited <- m.Wait() }()

	select {
	case conn = <-exp.Conn():
	case err := <-exited:
		return build.Failed, fmt.Sprintf("the builder exited before it linked up (%v)", err)
	case <-time.After(r.cfg.LinkTimeout):
		return build.Failed, "the builder did not link up within " + r.cfg.LinkTimeout.String()
	case <-ctx.Done():
		return "", ""
	}
	j.stepEnd(0, build.StepSuccess, time.Now(), nil)
	machineStart.Observe(time.Since(*b.StartedAt).Seconds())
	j.logs.Printf(0, "Machine ready in %s", time.Since(*b.StartedAt).Round(time.Millisecond))
	b.Status = build.Building
	j.logs.Flush()
	j.save()

	steps := []link.Step{{Name: build.StepFetch}}
	for _, s := range spec.Scripts {
		steps = append(steps, link.Step{Name: s.Name, File: s.File, Script: s.Script, IgnoreFailure: s.IgnoreFailure, WorkingDirectory: s.WorkingDirectory})
	}
	env := append(stdEnv(b, spec.Repo), spec.Vars...)
	if err := conn.SendJob(&link.Job{Repo: repo, Origin: spec.Repo, Branch: b.Branch, Commit: b.Commit, Env: env, Steps: steps, SSH: jobSSH, MaxOutput: MaxLogBytes}); err != nil {
		return build.Failed, "lost the link to the builder"
	}
	return r.follow(ctx, j, conn)
}

// follow records the builder's events until it is done.
func (r *Runner) follow(ctx context.Context, j *job, conn *link.Conn) (build.Status, string) {
	events := make(chan link.Event, 256)
	go func() {
		defer close(events)
		for {
			ev, err := conn.Recv()
			if err != nil {
				return
			}
			select {
			case events <- ev:
			case <-conn.Done():
				return
			}
		}
	}()
	flush := time.NewTicker(100 * time.Millisecond)
	defer flush.Stop()
	var gw chan gateway.Event
	if j.ssh != nil {
		gw = j.ssh.gw
		r.scheduleNotices(j, conn, j.ssh.deadline, "max_build_duration")
	}
	var result *build.Status
	var resultMsg string
	var window <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return "", ""
		case <-flush.C:
			j.logs.Flush()
		case <-window:
			r.closeSSH(j, conn, fmt.Sprintf("the SSH window of build %d has ended (%s)", j.b.ID, j.b.SSH.ExpiresBecause))
			return *result, resultMsg
		case gev := <-gw:
			j.onGateway(gev)
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return "", ""
				}
				if result != nil {
					return *result, resultMsg
				}
				return build.Failed, "lost the link to the builder before the build ended"
			}
			i := ev.Step + 1 // build steps start with the runner's own
			switch ev.Type {
			case link.Output:
				j.logs.Output(i, ev.Data)
			case link.StepStart:
				j.logs.StartStep(i)
				j.logs.Flush()
				j.stepStart(i, ev.Time)
				j.save()
			case link.StepEnd:
				st := build.StepSuccess
				if ev.Failed {
					st = build.StepFailed
				}
				code := ev.ExitCode
				j.logs.EndStep(i)
				j.logs.Flush()
				j.stepEnd(i, st, ev.Time, &code)
				j.save()
			case link.SSH:
				if r.onBuilderSSH(j, ev) && !j.ssh.closed {
					r.closeSSH(j, conn, fmt.Sprintf("you logged out of build %d: its SSH access is closed", j.b.ID))
					if result != nil {
						return *result, resultMsg
					}
				}
			case link.Done:
				st, msg := build.Finished, ""
				if ev.Failed {
					st, msg = build.Failed, ev.Error
				}
				result, resultMsg = &st, msg
				if j.ssh == nil || j.ssh.closed {
					return st, msg
				}
				j.logs.Flush()
				wait := r.stepsDone(j, conn, st)
				if wait <= 0 {
					r.closeSSH(j, conn, fmt.Sprintf("build %d reached its max_build_duration", j.b.ID))
					return st, msg
				}
				j.logs.Printf(lastStarted(j.b), "hangar: steps done; the machine stays for SSH for %s (%s) unless you log out", wait.Round(time.Second), j.b.SSH.ExpiresBecause)
				r.scheduleNotices(j, conn, *j.b.SSH.ExpiresAt, j.b.SSH.ExpiresBecause)
				window = time.After(wait)
			}
		}
	}
}

// stdEnv is the environment every step gets from Hangar.
func stdEnv(b *build.Build, repo string) []string {
	id := strconv.FormatInt(b.ID, 10)
	return []string{
		"CI=true",
		"HANGAR=true",
		"FCI_BUILD_ID=" + id,
		"CM_BUILD_ID=" + id,
		"BUILD_NUMBER=" + strconv.FormatInt(b.Number, 10),
		"PROJECT_BUILD_NUMBER=" + strconv.FormatInt(b.Number, 10),
		"CM_BRANCH=" + b.Branch,
		"FCI_BRANCH=" + b.Branch,
		"CM_COMMIT=" + b.Commit,
		"FCI_COMMIT=" + b.Commit,
		"CM_REPO_SLUG=" + repoSlug(repo),
		"FCI_REPO_SLUG=" + repoSlug(repo),
		"CM_WORKFLOW=" + b.Workflow,
	}
}

// repoSlug is "owner/name" of a repository URL or path.
func repoSlug(repo string) string {
	s := strings.TrimSuffix(strings.TrimRight(repo, "/"), ".git")
	if i := strings.LastIndex(s, ":"); i >= 0 && !strings.Contains(s[i:], "/") {
		s = s[i+1:]
	}
	s = strings.ReplaceAll(s, ":", "/")
	name := path.Base(s)
	owner := path.Base(path.Dir(s))
	if owner == "." || owner == "/" || owner == "" {
		return name
	}
	return owner + "/" + name
}
