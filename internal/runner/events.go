package runner

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/build/access"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
)

// How next ends a wait other than with an event.
var (
	errStopped  = errors.New("the build's context ended")
	errLinkLost = errors.New("the link to the builder dropped")
)

// flushInterval is how often buffered log lines are written while the
// builder runs.
const flushInterval = 100 * time.Millisecond

// receive reads the builder's events into j.events until the link drops
// or j.stopReading is closed (the job no longer reads them). Why the link
// ended is in j.linkErr once j.events is closed.
func (j *job) receive() {
	events := make(chan link.Event, 16) // output events hold up to 1 MiB each
	j.events = events
	go func() {
		defer close(events)
		for {
			ev, err := j.conn.Recv()
			if err != nil {
				j.linkErr = err
				return
			}
			// Every event read is delivered, also when the link closed
			// right after it (a builder that crashed), for as long as the
			// job reads.
			select {
			case events <- ev:
			case <-j.stopReading:
				return
			}
		}
	}()
}

// linkLost is the message of a build whose link dropped before the end: a
// builder that broke the protocol is named as such.
func (j *job) linkLost() string {
	msg := "lost the link to the builder before the build ended"
	if err := j.linkErr; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		msg += " (" + err.Error() + ")"
	}
	return msg
}

// steps sends the job and follows the builder's events until it reports
// that the steps are done.
func (j *job) steps() *outcome {
	b, spec := j.b, j.spec
	steps := []link.Step{{Name: build.StepFetch}}
	for _, p := range spec.Plan() {
		st := link.Step{Name: p.Name, Kind: p.Kind}
		if s := p.Script; s != nil {
			st.File, st.Script, st.IgnoreFailure, st.WorkingDirectory, st.Skip, st.Condition = s.File, s.Script, s.IgnoreFailure, s.WorkingDirectory, s.Skip, s.Condition
		}
		steps = append(steps, st)
	}
	var limits *link.FileLimits
	if f := j.r.cfg.Files; f != nil {
		l := f.Limits()
		limits = &link.FileLimits{ArtifactFile: l.ArtifactFile, ArtifactBuild: l.ArtifactBuild, Cache: l.Cache}
	}
	// The machine never gets the repository's credentials: fetching is
	// the server's job (the clone borrows the mirror's objects).
	origin := gitrepo.StripCredentials(spec.Repo)
	env := append(stdEnv(b, origin), spec.Env...)
	j.withExpiry(j.jobSSH)
	// One byte past the cap, so that the log book sees the cap crossed
	// and says so when the steps' output alone reaches it.
	job := &link.Job{Repo: j.repo, Origin: origin, Branch: b.Branch, Commit: b.Commit, Env: env, Vars: spec.Vars,
		Event: spec.Event, Inputs: spec.Inputs, Steps: steps, SSH: j.jobSSH, MaxOutput: MaxLogBytes + 1, BreakBefore: breakSteps(spec),
		Artifacts: spec.Artifacts, CachePaths: spec.CachePaths, Limits: limits,
		Build: &link.JobBuild{ID: b.ID, Name: b.Name(), Workflow: b.Workflow, WorkflowName: b.WorkflowName}}
	if s := j.secrets; s != nil {
		// Codemagic's order: built-in variables, the groups', then vars.
		job.Env, job.Secure = append(job.Env, s.Env...), s.Secure
		for _, k := range s.Keystores {
			job.Keystores = append(job.Keystores, link.Keystore{Ref: k.Ref, File: k.File, Password: k.Password, Alias: k.Alias, KeyPassword: k.KeyPassword})
		}
	}
	if err := j.conn.SendJob(job); err != nil {
		return failed("lost the link to the builder")
	}
	j.flush = time.NewTicker(flushInterval)
	defer j.flush.Stop()
	for {
		ev, err := j.next()
		switch {
		case errors.Is(err, errStopped):
			return stopped
		case errors.Is(err, errLinkLost):
			return failed(j.linkLost())
		case ev == nil:
		case ev.Type == link.Done:
			if ev.Failed {
				j.builderFailed = true
				return failed(ev.Error)
			}
			return &outcome{status: build.Finished}
		default:
			j.handle(*ev)
		}
	}
}

// window keeps the machine for SSH after the steps (whose outcome is
// result) until the access rules end the build.
func (j *job) window(result *outcome) *outcome {
	j.logs.Flush()
	j.rules(access.Event{Kind: access.StepsDone, Time: j.r.clock.Now(), Result: result.status})
	j.flush = time.NewTicker(flushInterval)
	defer j.flush.Stop()
	for !j.ssh.finished {
		ev, err := j.next()
		switch {
		case errors.Is(err, errStopped):
			return stopped
		case errors.Is(err, errLinkLost):
			return result
		case ev != nil:
			j.handle(*ev)
		}
	}
	return result
}

// next waits for the builder's next event and handles what else happens
// to the build meanwhile (log flushes, gateway events, the access rules'
// wake-ups): then it returns a nil event. It returns errStopped when the
// build's context has ended, errLinkLost when the link dropped.
func (j *job) next() (*link.Event, error) {
	var gw <-chan gateway.Event // nil channels: no SSH access
	var wake <-chan struct{}
	if j.ssh != nil {
		gw, wake = j.ssh.gw, j.ssh.wake
	}
	select {
	case <-j.ctx.Done():
		return nil, errStopped
	case <-j.flush.C:
		j.logs.Flush()
	case gev := <-gw:
		j.onGateway(gev)
	case <-wake:
		j.rules(access.Event{Kind: access.Tick, Time: j.r.clock.Now()})
	case ask := <-j.asks:
		ask()
	case ev, ok := <-j.events:
		if !ok {
			if j.ctx.Err() != nil {
				return nil, errStopped
			}
			return nil, errLinkLost
		}
		return &ev, nil
	}
	return nil, nil
}

// handle records one event of the builder (but done, which ends a phase).
// The builder is not trusted: events for steps that do not exist, or that
// would move a step backwards, are dropped.
func (j *job) handle(ev link.Event) {
	i := ev.Step + 1 // build steps start with the runner's own
	if ev.Type != link.SSH && (ev.Step < 0 || i >= len(j.b.Steps)) {
		return
	}
	switch ev.Type {
	case link.Output:
		if ev.Lines > 0 {
			j.logs.OutputBlock(i, ev.S2, ev.Size, ev.Lines)
		} else {
			j.logs.Output(i, ev.Data)
		}
	case link.StepStart:
		if j.b.Steps[i].Status != build.StepPending {
			return
		}
		j.logs.StartStep(i)
		j.logs.Flush()
		j.stepStart(i, ev.Time)
		j.save()
	case link.StepEnd:
		if j.b.Steps[i].Status != build.StepRunning {
			return
		}
		st := build.StepSuccess
		if ev.Failed {
			st = build.StepFailed
		}
		code := ev.ExitCode
		j.logs.EndStep(i)
		j.logs.Flush()
		j.stepEnd(i, st, ev.Time, &code)
		j.save()
	case link.StepSkipped:
		if j.b.Steps[i].Status != build.StepPending {
			return
		}
		j.logs.StartStep(i)
		j.logs.Printf(i, "Skipped: %s", ev.Text)
		j.logs.Flush()
		j.b.Steps[i].Status = build.StepSkipped
		j.b.Steps[i].Reason = ev.Text
		j.save()
	case link.SSH:
		j.onBuilderSSH(ev)
	case link.Paused:
		if j.b.Steps[i].Status != build.StepPending || j.paused >= 0 {
			return
		}
		j.paused = i
		j.b.Steps[i].Status = build.StepPaused
		j.logs.Printf(i, "hangar: the build is paused before step %d (%s), a breakpoint: SSH in and run `hangar-steps continue`, or use Continue on the build page (`hangar build continue %d`). The time paused counts towards max_build_duration.", ev.Step, j.b.Steps[i].Name, j.b.ID)
		j.logs.Flush()
		j.save()
		j.log.Info("build paused", "step", i)
	case link.Resumed:
		if i != j.paused {
			return
		}
		j.paused = -1
		j.b.Steps[i].Status = build.StepPending
		who := ev.Text
		if who == "" {
			who = "someone"
		}
		j.logs.Printf(i, "hangar: resumed by %s", who)
		j.save()
		j.log.Info("build resumed", "step", i, "by", who)
	}
}

// cont passes a Continue request to the builder of a paused build.
func (j *job) cont(who string) error {
	if j.paused < 0 || j.conn == nil {
		return errors.New("the build is not paused at a breakpoint")
	}
	if err := j.conn.Send(link.Command{Type: link.Continue, Text: who}); err != nil {
		return fmt.Errorf("the builder is unreachable: %w", err)
	}
	return nil
}

// breakSteps are the steps (indexes of the Job's steps) of the scripts
// the build pauses before: a restored cache comes before the scripts.
func breakSteps(spec build.Spec) []int {
	if len(spec.CachePaths) == 0 {
		return spec.BreakBefore
	}
	out := make([]int, len(spec.BreakBefore))
	for i, n := range spec.BreakBefore {
		out[i] = n + 1
	}
	return out
}
