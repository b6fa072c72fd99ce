package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// start says what starts a build and with what.
type start struct {
	trigger build.Trigger
	starter string
	ssh     bool
	// sshOnFailure: SSH access only if a step fails (manual builds).
	sshOnFailure bool
	// inputs are the values given for the workflow's inputs (JSON values,
	// or strings from the command line).
	inputs map[string]any
	// env are the built-in variables of the event: CM_PULL_REQUEST, its
	// number and destination, CM_TAG.
	env []string
	// payload returns the webhook's payload decoded from JSON; nil for a
	// build started by hand.
	payload func() any
	// breaks are the steps to pause before (--ssh-break-before).
	breaks []string
	// fork names the repository of a pull request from a fork ("" for
	// any other build): its code is not the app's people's, so its build
	// gets no groups or keystores and neither reads nor saves the cache
	// (which later builds, and their secrets, would run), nor sends email.
	fork string
}

// skippedError is a workflow not built because its when is false.
type skippedError struct {
	workflow string
	reason   string
}

func (e *skippedError) Error() string {
	return fmt.Sprintf("workflow %s was not built: %s", e.workflow, e.reason)
}

// createBuild queues a build of workflow wfID (empty: the only one) at
// commit. A missing or malformed workflow file gives a build that has failed
// at once, with the file, line and reason as its message.
func (s *Server) createBuild(ctx context.Context, app *store.App, mirror, branch, commit, wfID string, st *start) (*build.Build, error) {
	b := newBuild(app, branch, commit, wfID, st)
	name, data, err := gitrepo.ReadFile(ctx, mirror, commit, workflow.FileNames)
	if err != nil {
		return s.failAtOnce(ctx, b, err.Error())
	}
	f, err := workflow.Parse(name, data)
	if err != nil {
		return s.failAtOnce(ctx, b, err.Error())
	}
	var wf *workflow.Workflow
	if wfID == "" && len(f.Workflows) == 1 {
		wf = f.Workflows[0]
	} else if wfID == "" {
		ids := make([]string, len(f.Workflows))
		for i, w := range f.Workflows {
			ids[i] = w.ID
		}
		return nil, onField("workflow", &userError{http.StatusBadRequest, fmt.Sprintf("%s defines several workflows (%s): pick one with --workflow (API: \"workflow\")", name, strings.Join(ids, ", "))})
	} else if wf, err = f.Workflow(wfID); err != nil {
		return nil, onField("workflow", &userError{http.StatusBadRequest, err.Error()})
	}
	b, err = s.queue(ctx, b, app, mirror, wf, st)
	var skip *skippedError
	if errors.As(err, &skip) {
		return nil, &userError{http.StatusUnprocessableEntity, skip.Error() + " (as on Codemagic, a workflow whose when is false is skipped)"}
	}
	return b, err
}

func newBuild(app *store.App, branch, commit, wfID string, st *start) *build.Build {
	b := &build.Build{
		App: app.Name, Workflow: wfID, WorkflowName: wfID, Branch: branch, Commit: commit,
		Status: build.Queued, Trigger: st.trigger, StartedBy: st.starter, Steps: []build.Step{},
	}
	// Only manually triggered builds may have SSH access.
	if st.ssh && st.trigger == build.Manual {
		b.SSH = build.SSH{Enabled: true, State: build.SSHPending, Mode: build.SSHAlways}
	} else if st.sshOnFailure && st.trigger == build.Manual {
		b.SSH.Mode = build.SSHOnFailure
	}
	return b
}

// failAtOnce stores b as a build that failed before it ran, with msg.
func (s *Server) failAtOnce(ctx context.Context, b *build.Build, msg string) (*build.Build, error) {
	now := time.Now().UTC()
	b.Status, b.Message, b.FinishedAt = build.Failed, msg, &now
	if b.Steps == nil {
		b.Steps = []build.Step{}
	}
	if b.Workflow == "" {
		b.Workflow, b.WorkflowName = "default", "default"
	}
	if b.SSH.Enabled {
		b.SSH.State = build.SSHClosed
	}
	if err := s.cfg.Store.CreateBuild(ctx, b, []byte("{}")); err != nil {
		return nil, err
	}
	return b, nil
}

// queue stores b as a queued build of wf, or as a failed one if this
// server cannot run wf (an instance type it does not have, inputs a
// webhook cannot give). It returns a *skippedError, storing nothing, when
// wf's when is false, and a *userError for inputs a user gave wrong.
func (s *Server) queue(ctx context.Context, b *build.Build, app *store.App, mirror string, wf *workflow.Workflow, st *start) (*build.Build, error) {
	b.Workflow, b.WorkflowName = wf.ID, wf.Name
	values, err := wf.InputValues(st.inputs)
	if err == nil {
		// Every key read again with the inputs substituted (and checked).
		wf, err = wf.Resolve(values)
	}
	if err != nil {
		if st.trigger == build.Manual {
			return nil, onField("inputs", &userError{http.StatusBadRequest, err.Error()})
		}
		return s.failAtOnce(ctx, b, err.Error())
	}
	b.WorkflowName = wf.Name
	res, err := s.cfg.InstanceTypes.Lookup(wf.InstanceType)
	if err != nil {
		s.log.Info("build refused", "app", b.App, "workflow", wf.ID, "err", err)
		return s.failAtOnce(ctx, b, err.Error())
	}
	if st.fork != "" && len(wf.Groups)+len(wf.AndroidSigning) > 0 {
		why := fmt.Sprintf("a pull request from %s gets no environment variable groups or keystores, and workflow %s names some (environment.groups, android_signing): its code could read them. Build the change from a branch of the app's repository instead", st.fork, wf.ID)
		s.log.Info("build refused", "app", b.App, "workflow", wf.ID, "reason", why)
		return s.failAtOnce(ctx, b, why)
	}
	if app.RefuseUnsupported {
		if why := unsupportedRefusal(app.Name, wf.ID, wf.Report().Unsupported); why != "" {
			return s.refuse(ctx, b, st, why)
		}
	}
	if why, err := s.secretsRefusal(ctx, app.Name, wf); err != nil {
		return nil, err
	} else if why != "" {
		return s.refuse(ctx, b, st, why)
	}
	instance := wf.InstanceType
	if instance == "" {
		instance = build.DefaultInstanceType
	}
	env := st.env
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "CM_PULL_REQUEST=") }) {
		env = append([]string{"CM_PULL_REQUEST=false"}, env...)
	}
	spec := build.Spec{Repo: app.Repo, Ignored: wf.Ignored, InstanceType: instance, Resources: res, Env: env, Inputs: values,
		Toolchains: wf.Toolchains, SSHOnFailure: st.sshOnFailure && st.trigger == build.Manual,
		Groups: wf.Groups, Keystores: wf.AndroidSigning}
	if len(values) == 0 {
		spec.Inputs = nil
	}
	// What the server knows of the build's variables before it runs:
	// what a workflow's condition sees as env.
	env = append([]string{"CI=true", "HANGAR=true", "CM_BRANCH=" + b.Branch, "CM_COMMIT=" + b.Commit, "CM_WORKFLOW=" + wf.ID}, env...)
	for _, v := range wf.Vars {
		spec.Vars = append(spec.Vars, v.Name+"="+v.Value)
		env = append(env, v.Name+"="+workflow.Expand(v.Value, lookupIn(env)))
	}
	ch := &changes{s: s, mirror: mirror, b: b}
	if wf.When != nil {
		if why, err := s.whenFalse(ctx, wf.When, ch, workflow.Context{Env: lookupIn(env), Inputs: values, Event: payloadOf(st)}); err != nil {
			return nil, err
		} else if why != "" {
			s.log.Info("workflow skipped", "app", b.App, "workflow", wf.ID, "branch", b.Branch, "reason", why)
			return nil, &skippedError{workflow: wf.ID, reason: why}
		}
	}
	for i, sc := range wf.Scripts {
		ss := build.SpecScript{
			Name: sc.Name, File: sc.FileName(i + 1), Script: sc.Script,
			IgnoreFailure: sc.IgnoreFailure, WorkingDirectory: sc.WorkingDirectory,
		}
		if sc.When != nil && sc.When.Changeset != nil {
			if ss.Skip, err = ch.skipReason(ctx, sc.When.Changeset); err != nil {
				return nil, err
			}
		}
		if sc.When != nil && sc.When.Condition != nil {
			ss.Condition = sc.When.Condition.String()
		}
		spec.Scripts = append(spec.Scripts, ss)
	}
	addPublishing(&spec, wf)
	if st.fork != "" {
		spec.CachePaths, spec.Email = nil, nil
	}
	if spec.BreakBefore, err = breakpoints(wf, st.breaks); err != nil {
		return nil, err
	}
	if paths := wf.EventPaths(); len(paths) > 0 && st.payload != nil {
		if spec.Event, err = json.Marshal(workflow.ProjectEvent(st.payload(), paths)); err != nil {
			return nil, err
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	b.MaxDuration = int64(wf.MaxDuration / time.Second)
	if b.MaxDuration < 1 {
		b.MaxDuration = 1
	}
	b.Steps = spec.Steps()
	if err := s.cfg.Store.CreateBuild(ctx, b, data); err != nil {
		return nil, err
	}
	s.log.Info("build queued", "build", b.ID, "app", b.App, "workflow", b.Workflow, "trigger", b.Trigger)
	return b, nil
}

// refuse refuses to start b for why: a 422 for a build started by hand, a
// build that failed at once for a webhook's.
func (s *Server) refuse(ctx context.Context, b *build.Build, st *start, why string) (*build.Build, error) {
	s.log.Info("build refused", "app", b.App, "workflow", b.Workflow, "reason", why)
	if st.trigger == build.Manual {
		return nil, &userError{http.StatusUnprocessableEntity, why}
	}
	return s.failAtOnce(ctx, b, why)
}

// unsupportedRefusal says why app, which refuses unsupported keys, does
// not build workflow wfID that uses keys ("" when it uses none).
func unsupportedRefusal(app, wfID string, keys []workflow.Unsupported) string {
	if len(keys) == 0 {
		return ""
	}
	var list []string
	for _, u := range keys {
		list = append(list, u.Key+" ("+u.Why+")")
	}
	// The web UI shows the message up to the command (inUIWords).
	return fmt.Sprintf("app %s refuses workflows that rely on what Hangar does not support, and workflow %s uses %s. "+
		"Remove these keys from the workflow, or allow such builds by unsetting the app's refuse_unsupported setting: "+
		"`hangar app set %s --refuse-unsupported=false` (API: PATCH /api/v1/apps/%s with {\"refuse_unsupported\": false})",
		app, wfID, strings.Join(list, "; "), app, app)
}

func payloadOf(st *start) any {
	if st.payload == nil {
		return nil
	}
	return st.payload()
}

// whenFalse says why a workflow's when is false ("" when it holds).
func (s *Server) whenFalse(ctx context.Context, w *workflow.When, ch *changes, c workflow.Context) (string, error) {
	if w.Changeset != nil {
		if why, err := ch.skipReason(ctx, w.Changeset); err != nil || why != "" {
			return why, err
		}
	}
	if w.Condition != nil && !w.Condition.Eval(c) {
		return "when.condition is false: " + w.Condition.String(), nil
	}
	return "", nil
}

// changes are the files changed since the last successful build of the
// same workflow and branch, found on first use.
type changes struct {
	s      *Server
	mirror string
	b      *build.Build
	done   bool
	all    bool     // no earlier build to compare with: everything changed
	files  []string // the changed files, when !all
	since  string   // "build #N (commit abc)"
}

func (c *changes) load(ctx context.Context) error {
	if c.done {
		return nil
	}
	c.done = true
	prev, number, err := c.s.cfg.Store.LastSuccessfulCommit(ctx, c.b.App, c.b.Workflow, c.b.Branch)
	if errors.Is(err, store.ErrNotFound) {
		c.all = true
		return nil
	}
	if err != nil {
		return err
	}
	c.since = fmt.Sprintf("build #%d (commit %.10s)", number, prev)
	if c.files, err = gitrepo.ChangedFiles(ctx, c.mirror, prev, c.b.Commit); err != nil {
		// The earlier commit is gone (a force push): count everything.
		c.s.log.Info("changeset: compare failed; counting every file as changed", "app", c.b.App, "err", err)
		c.all = true
	}
	return nil
}

// skipReason says why cs skips ("" when it has changes).
func (c *changes) skipReason(ctx context.Context, cs *workflow.Changeset) (string, error) {
	if err := c.load(ctx); err != nil {
		return "", err
	}
	if c.all || cs.Selects(c.files) {
		return "", nil
	}
	return fmt.Sprintf("when.changeset: no change to %s since the last successful build, %s", cs.Describe(), c.since), nil
}

// lookupIn looks a variable up in a KEY=VALUE list, the last one winning.
func lookupIn(env []string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, kv := range slices.Backward(env) {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name {
				return v, true
			}
		}
		return "", false
	}
}
