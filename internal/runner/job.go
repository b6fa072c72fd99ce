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
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/sshca"
)

// job is one build being run. One goroutine, the build's, runs execute and
// owns every field and the build. Other goroutines use only what never
// changes once the job is registered (b.ID, log, ssh and its channels,
// read by GatewayEvent) and cancel (safe for concurrent use): no field
// needs a mutex.
type job struct {
	r        *Runner
	b        *build.Build
	specJSON []byte
	spec     build.Spec
	ctx      context.Context // ends with the build: cancel, deadline, shutdown
	cancel   context.CancelCauseFunc
	log      *slog.Logger
	logs     *logBook

	name     string    // "build-N": the machine, the link user, the SSH alias
	deadline time.Time // start + max_build_duration
	exp      *link.Expectation
	hello    link.Hello
	jobSSH   *link.JobSSH
	repo     string // the repository as the builder reaches it
	m        machine.Machine
	exited   chan error        // m.Wait's result
	conn     *link.Conn        // the builder's link, once up
	events   <-chan link.Event // the builder's events; closed when the link drops
	// stopReading is closed when the job no longer reads events.
	stopReading chan struct{}
	linkErr     error        // why the link ended; set before events is closed
	flush       *time.Ticker // log batching (not a rule: the system clock)

	ssh *sshAccess // nil unless the build has SSH access

	// asks are what other goroutines ask of the job (Continue, Extend),
	// run by its own goroutine; paused is the step the builder waits
	// before (-1: none).
	asks   chan func()
	paused int

	sshHostKey    ssh.PublicKey  // the builder's SSH host key (SSH builds)
	builderFailed bool           // the builder reported failed steps (done)
	image         *machine.Image // the machine's root; nil for a driver that is not isolated

	// secrets are the groups and keystores the build names, opened.
	secrets *secrets.Resolved
	files   *fileServer // serves the builder's file channels, once linked
}

// outcome is how a phase ended the build: its status and message, or an
// empty status when the build's context ended first (resolve says why).
type outcome struct {
	status build.Status
	msg    string
}

// stopped is the outcome of a phase that the build's context ended.
var stopped = &outcome{}

func failed(msg string) *outcome { return &outcome{status: build.Failed, msg: msg} }

func (r *Runner) newJob(b *build.Build, spec []byte) *job {
	ctx, cancel := context.WithCancelCause(context.Background())
	log := r.log.With("build", b.ID)
	return &job{
		r: r, b: b, specJSON: spec, ctx: ctx, cancel: cancel, log: log,
		logs:        newLogBook(r.cfg.Store, b.ID, log),
		name:        build.Alias(b.ID),
		stopReading: make(chan struct{}),
		asks:        make(chan func()),
		paused:      -1,
	}
}

// execute runs the build to its end and writes the end.
func (j *job) execute() {
	defer j.cancel(nil)
	defer close(j.stopReading)
	start := j.r.clock.Now()
	if j.b.StartedAt != nil {
		start = *j.b.StartedAt
	}
	j.deadline = start.Add(time.Duration(j.b.MaxDuration) * time.Second)
	t := j.r.clock.AfterFunc(j.deadline.Sub(j.r.clock.Now()), func() { j.cancel(errDeadline) })
	defer t.Stop()

	buildsRunning.Inc()
	st, msg := j.resolve(j.run())
	buildsRunning.Dec()
	j.end(st, msg, start)
}

// run takes the build through its phases; teardown follows whichever
// ended it.
func (j *job) run() (out *outcome) {
	defer func() {
		if out != nil && out.status == build.Failed {
			out = j.outOfDisk(j.outOfMemory(out))
		}
		st, _ := j.resolve(out)
		j.teardown(st)
	}()
	if out = j.prepare(); out != nil {
		return out
	}
	if out = j.provision(); out != nil {
		return out
	}
	if out = j.linkUp(); out != nil {
		return out
	}
	out = j.steps()
	if out.status == build.Failed && j.builderFailed && j.ssh == nil && j.spec.SSHOnFailure {
		if err := j.openOnFailure(); err != nil {
			j.logs.Printf(lastStarted(j.b), "hangar: could not open SSH access after the failure: %v", err)
			return out
		}
	}
	if out.status == "" || j.ssh == nil {
		return out
	}
	return j.window(out)
}

// resolve gives the final status and message of a build whose phases ended
// with out.
func (j *job) resolve(out *outcome) (build.Status, string) {
	switch cause := context.Cause(j.ctx); {
	case out.status != "":
		return out.status, out.msg
	case errors.Is(cause, errCanceled):
		return build.Canceled, "canceled"
	case errors.Is(cause, errDeadline):
		return build.Timeout, fmt.Sprintf("the build ran past its max_build_duration of %s and was stopped", time.Duration(j.b.MaxDuration)*time.Second)
	case errors.Is(cause, errShutdown):
		return build.Failed, "the server shut down during the build"
	case errors.Is(cause, errEndedElsewhere):
		return build.Failed, errEndedElsewhere.Error()
	}
	return build.Failed, "the build machine stopped unexpectedly"
}

// prepare reads the spec, makes the link's key and expectation and, for an
// SSH build, its credential.
func (j *job) prepare() *outcome {
	b := j.b
	if err := json.Unmarshal(j.specJSON, &j.spec); err != nil {
		return failed("the build's stored spec is unreadable: " + err.Error())
	}
	if len(b.Steps) == 0 {
		b.Steps = j.spec.Steps()
	}
	j.stepStart(0, j.r.clock.Now())
	j.save()
	d := j.r.cfg.Driver
	if d.Isolated() {
		j.logs.Printf(0, "Machine: %s driver, an isolated machine for this build", d.Name())
	} else {
		j.logs.Printf(0, "Machine: %s driver, NOT isolated: the build runs as a process on the server", d.Name())
	}
	if j.spec.InstanceType != "" {
		limits := j.spec.Resources.String()
		if !d.Isolated() {
			limits += "; not enforced by the " + d.Name() + " driver"
		}
		j.logs.Printf(0, "Instance type: %s (%s)", j.spec.InstanceType, limits)
	}
	for _, s := range j.spec.Ignored {
		j.logs.Printf(0, "Ignored: %s is not run by Hangar yet", s)
	}
	if len(j.spec.Scripts) == 0 {
		j.logs.Printf(0, "The workflow has no scripts: the build fetches the sources and ends")
	}
	if out := j.openSecrets(); out != nil {
		return out
	}
	if out := j.pickImage(); out != nil {
		return out
	}

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return failed("cannot make the builder's key")
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	pemBlock, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return failed("cannot make the builder's key")
	}
	if j.exp, err = j.r.cfg.Link.Expect(j.name, sshPub); err != nil {
		return failed(err.Error())
	}
	j.hello = link.Hello{Name: j.name, Addr: j.r.cfg.LinkAddr, HostKey: j.r.hostKey, Key: string(pem.EncodeToMemory(pemBlock))}
	if (b.SSH.Enabled || j.spec.SSHOnFailure) && j.r.cfg.SSH == nil {
		if j.r.cfg.NoSSHReason != "" {
			return failed(j.r.cfg.NoSSHReason)
		}
		return failed("SSH access is not available on this server")
	}
	if b.SSH.Enabled || j.spec.SSHOnFailure {
		// The builder's host key goes with its hello; the user's credential
		// only when access opens (for SSH on failure, if a step fails).
		hostKey, hostPEM, err := sshca.NewKey(j.name)
		if err != nil {
			return failed("could not set up SSH access: " + err.Error())
		}
		j.sshHostKey, j.hello.SSHHostKey = hostKey.PublicKey(), string(hostPEM)
		if c := j.r.cfg.SSH; c.TunnelAddr != "" {
			j.hello.Gateway, j.hello.GatewayCA = c.TunnelAddr, string(ssh.MarshalAuthorizedKey(c.TunnelCA))
		}
	}
	if b.SSH.Enabled {
		if err := j.setupSSH(); err != nil {
			return failed("could not set up SSH access: " + err.Error())
		}
	}
	return nil
}

// openSecrets opens the variable groups and keystores the build names.
func (j *job) openSecrets() *outcome {
	groups, keystores := j.spec.Groups, j.spec.Keystores
	if len(groups)+len(keystores) == 0 {
		return nil
	}
	if j.r.cfg.Secrets == nil {
		return failed("this runner cannot open environment variable groups or keystores")
	}
	res, err := j.r.cfg.Secrets.Resolve(j.ctx, j.b.ID, j.b.App, groups, keystores)
	if err != nil {
		return failed(err.Error())
	}
	j.secrets = res
	if len(groups) > 0 {
		j.logs.Printf(0, "Environment variable groups: %s (%d variables; their values are hidden in this log)", strings.Join(groups, ", "), len(res.Env))
	}
	if len(keystores) > 0 {
		j.logs.Printf(0, "Android keystores: %s (written to ~/.hangar/keystores; CM_KEYSTORE_PATH, CM_KEYSTORE_PASSWORD, CM_KEY_ALIAS, CM_KEY_PASSWORD set for %s)", strings.Join(keystores, ", "), keystores[0])
	}
	return nil
}

// provision starts the build's machine.
func (j *job) provision() *outcome {
	if j.ctx.Err() != nil {
		return stopped
	}
	b := j.b
	mirror := j.r.cfg.Mirrors.Path(b.App)
	if f, ok := j.r.cfg.Mirrors.(RepoFetcher); ok {
		var err error
		if mirror, err = f.FetchForBuild(j.ctx, b.App, j.spec.Repo); err != nil {
			if j.ctx.Err() != nil {
				return stopped
			}
			return failed("could not fetch the repository on the runner's host: " + err.Error())
		}
	}
	mount := machine.Mount{Source: mirror, Target: "/hangar/repo.git"}
	j.repo = mirror
	if j.r.cfg.Driver.Isolated() {
		j.repo = mount.Target
	}
	helloJSON, _ := json.Marshal(j.hello)
	m, err := j.r.cfg.Driver.Start(j.ctx, machine.Spec{
		Name:    j.name,
		Builder: j.r.cfg.Executable,
		Args:    []string{"builder"},
		Env:     []string{"HANGAR_BUILD=" + j.name},
		Stdin:   strings.NewReader(string(helloJSON) + "\n"),
		Output:  j.logs.Diagnostics(),
		Mounts:  []machine.Mount{mount},
		Image:   j.image,
		// Same fields: a conversion.
		Resources: machine.Resources(j.spec.Resources),
	})
	if err != nil {
		if j.ctx.Err() != nil {
			return stopped
		}
		j.log.Error("start machine", "err", err)
		return failed("could not start the build machine: " + err.Error())
	}
	j.m = m
	j.exited = make(chan error, 1)
	go func() { j.exited <- m.Wait() }()
	return nil
}

// outOfMemory returns the outcome of a failed build whose machine had a
// process killed for lack of memory (the likely cause of the failure), or
// out. The machine is still there: Destroy comes after.
func (j *job) outOfMemory(out *outcome) *outcome {
	r, ok := j.m.(machine.OOMReporter)
	if !ok {
		return out
	}
	killed, limit := r.OOMKilled()
	if !killed {
		return out
	}
	msg := "the build ran out of memory"
	if limit > 0 {
		msg += " (limit " + build.FormatBytes(limit) + ")"
	}
	if out.msg != "" {
		j.logs.Printf(lastStarted(j.b), "hangar: %s", out.msg)
	}
	return failed(msg)
}

// linkUp waits for the builder to link up.
func (j *job) linkUp() *outcome {
	timeout := make(chan struct{})
	t := j.r.clock.AfterFunc(j.r.cfg.LinkTimeout, func() { close(timeout) })
	defer t.Stop()
	select {
	case j.conn = <-j.exp.Conn():
	case err := <-j.exited:
		return failed(fmt.Sprintf("the builder exited before it linked up (%v)", err))
	case <-timeout:
		return failed("the builder did not link up within " + j.r.cfg.LinkTimeout.String())
	case <-j.ctx.Done():
		return stopped
	}
	j.receive()
	j.serveFiles()
	b := j.b
	now := j.r.clock.Now()
	j.stepEnd(0, build.StepSuccess, now, nil)
	machineStart.Observe(now.Sub(*b.StartedAt).Seconds())
	j.logs.Printf(0, "Machine ready in %s", now.Sub(*b.StartedAt).Round(time.Millisecond))
	b.Status = build.Building
	j.logs.Flush()
	j.save()
	return nil
}

// teardown ends what the build holds, whatever ended it (final is its
// status): SSH access first (telling open sessions why, and waiting until
// the builder has), then the machine, then the link.
func (j *job) teardown(final build.Status) {
	if j.ssh != nil {
		j.endAccess(final)
	}
	if j.m != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := j.m.Destroy(ctx); err != nil {
			j.log.Error("destroy machine", "err", err)
		}
	}
	if j.exp != nil {
		j.exp.Close()
	}
}

// end writes the build's end: unfinished steps, the reason in the log, the
// final status.
func (j *job) end(status build.Status, msg string, start time.Time) {
	b := j.b
	buildsEnded.WithLabelValues(string(status)).Inc()
	now := j.r.clock.Now().UTC()
	for i := range b.Steps {
		switch b.Steps[i].Status {
		case build.StepRunning:
			st := build.StepFailed
			// A step stopped from outside (cancel, timeout, the server's
			// shutdown) did not fail by itself.
			if status == build.Canceled || status == build.Timeout || errors.Is(context.Cause(j.ctx), errShutdown) {
				st = build.StepCanceled
			}
			j.stepEnd(i, st, now, nil)
		case build.StepPending:
			b.Steps[i].Status = build.StepSkipped
		}
	}
	j.logs.EndAll()
	if status != build.Finished {
		j.logs.Printf(lastStarted(b), "hangar: %s", msg)
	}
	if notify := j.r.cfg.Notify; notify != nil && j.spec.Email != nil {
		final := *b
		final.Status, final.Message, final.FinishedAt = status, msg, &now
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, line := range notify(ctx, final, &j.spec, j.uploaded()) {
			j.logs.Printf(lastStarted(b), "%s", line)
		}
		cancel()
	}
	j.logs.Flush()
	b.Status, b.Message, b.FinishedAt = status, msg, &now
	j.save()
	j.log.Info("build ended", "status", status, "duration", now.Sub(start).Round(time.Millisecond))
}

func (j *job) save() {
	wrote, err := j.r.cfg.Store.UpdateBuild(context.Background(), j.b)
	if err != nil {
		j.log.Error("update build", "err", err)
		return
	}
	if !wrote && !j.b.Status.Done() {
		// Ended by someone else: a server that found this runner silent
		// (its builds fail), or its token revoked. Stop it here too.
		j.log.Warn("the build was ended outside this runner: stopping it")
		j.cancel(errEndedElsewhere)
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

func lastStarted(b *build.Build) int {
	last := 0
	for i, s := range b.Steps {
		if s.Status != build.StepPending && s.Status != build.StepSkipped {
			last = i
		}
	}
	return last
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
