package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// userError is an error whose message is meant for the API client.
type userError struct {
	code int
	msg  string
}

func (e *userError) Error() string { return e.msg }

func (s *Server) startBuild(w http.ResponseWriter, r *http.Request) {
	var req api.StartRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.App == "" {
		writeError(w, http.StatusBadRequest, `"app" is required: the name of the app to build`)
		return
	}
	if req.Trigger != "" && req.Trigger != string(build.Manual) {
		msg := fmt.Sprintf("trigger %q: builds started through the API are manual", req.Trigger)
		if req.SSH {
			msg = fmt.Sprintf("SSH access is only for manually triggered builds, not %q ones: leave out \"trigger\" or set it to \"manual\"", req.Trigger)
		}
		writeError(w, http.StatusUnprocessableEntity, msg)
		return
	}
	if req.SSH && req.SSHOnFailure {
		writeError(w, http.StatusBadRequest, `"ssh" and "ssh_on_failure" exclude each other: SSH from the start, or only if a step fails`)
		return
	}
	if len(req.SSHBreakBefore) > 0 && !req.SSH {
		writeError(w, http.StatusUnprocessableEntity, `a breakpoint ("ssh_break_before") holds the build for you to SSH in: ask for SSH access too ("ssh": true)`)
		return
	}
	if (req.SSH || req.SSHOnFailure) && s.cfg.SSH == nil {
		writeError(w, http.StatusUnprocessableEntity, "SSH access is not enabled on this server")
		return
	}
	if !allowed(w, r, req.App) {
		return
	}
	if (req.SSH || req.SSHOnFailure) && !s.sshAllowed(w, r) {
		return
	}
	app, err := s.cfg.Store.App(r.Context(), req.App)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q: see `hangar app list`", req.App))
		return
	}
	if err != nil {
		s.internal(w, "read app", err)
		return
	}
	mirror, err := s.cfg.Mirrors.Fetch(r.Context(), app.Name, app.Repo)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("app %s: %v", app.Name, err))
		return
	}
	branch := req.Branch
	if branch == "" {
		if branch, err = gitrepo.DefaultBranch(r.Context(), mirror); err != nil {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("app %s: %v; pass a branch", app.Name, err))
			return
		}
	}
	commit, err := gitrepo.Resolve(r.Context(), mirror, branch)
	if err != nil {
		writeFieldError(w, http.StatusUnprocessableEntity, "branch", fmt.Sprintf("app %s has no branch %q", app.Name, branch))
		return
	}
	starter := ""
	if t := tokenOf(r); t != nil {
		starter = t.Name
	}
	b, err := s.createBuild(r.Context(), app, mirror, branch, commit, req.Workflow, &start{
		trigger: build.Manual, starter: starter, ssh: req.SSH, sshOnFailure: req.SSHOnFailure, inputs: req.Inputs, breaks: req.SSHBreakBefore})
	var ue *userError
	if errors.As(err, &ue) {
		writeFieldError(w, ue.code, fieldOf(err), ue.msg)
		return
	}
	if err != nil {
		s.internal(w, "create build", err)
		return
	}
	writeJSON(w, http.StatusCreated, s.present(r, b))
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	app := r.URL.Query().Get("app")
	if app != "" {
		if !allowed(w, r, app) {
			return
		}
		if _, err := s.cfg.Store.App(r.Context(), app); errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q: see `hangar app list`", app))
			return
		}
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		limit = n
	}
	list, err := s.cfg.Store.Builds(r.Context(), app, limit)
	if err != nil {
		s.internal(w, "list builds", err)
		return
	}
	out := []*build.Build{}
	for _, b := range list {
		if t := tokenOf(r); t != nil && t.Allows(b.App) {
			out = append(out, s.present(r, b))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// lookupBuild writes a 404 for an unknown build.
func (s *Server) lookupBuild(w http.ResponseWriter, r *http.Request) (*build.Build, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return nil, false
	}
	b, err := s.cfg.Store.Build(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no build %d: see `hangar build list`", id))
		return nil, false
	}
	if err != nil {
		s.internal(w, "read build", err)
		return nil, false
	}
	if !allowed(w, r, b.App) {
		return nil, false
	}
	return b, true
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	if b, ok := s.lookupBuild(w, r); ok {
		writeJSON(w, http.StatusOK, s.present(r, b))
	}
}

func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	if b.Status.Done() {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d has already ended (%s)", b.ID, b.Status))
		return
	}
	// One statement: a queued build ends canceled; one a runner has claimed
	// gets a cancel request, and its runner ends it (the server never writes
	// a running build).
	if _, err := s.cfg.Store.CancelBuild(r.Context(), b.ID, "canceled before it started"); err != nil {
		s.internal(w, "cancel build", err)
		return
	}
	// Wait briefly so that the answer shows the ended build.
	s.answerWhen(w, r, b.ID, func(nb *build.Build) bool { return nb.Status.Done() })
}

// answerWhen answers with build id once done says it has changed as asked
// (200), or as it is after a while (202).
func (s *Server) answerWhen(w http.ResponseWriter, r *http.Request, id int64, done func(*build.Build) bool) {
	ch, unsub := s.cfg.Store.Subscribe(id)
	defer unsub()
	deadline := time.After(10 * time.Second)
	for {
		nb, err := s.cfg.Store.Build(r.Context(), id)
		if err != nil {
			s.internal(w, "read build", err)
			return
		}
		if done(nb) {
			writeJSON(w, http.StatusOK, s.present(r, nb))
			return
		}
		select {
		case <-ch:
		case <-deadline:
			writeJSON(w, http.StatusAccepted, s.present(r, nb))
			return
		case <-r.Context().Done():
			return
		}
	}
}

// breakpoints resolves the steps a build pauses before, each a script's
// number (1: the first) or name, to script numbers.
func breakpoints(wf *workflow.Workflow, steps []string) ([]int, error) {
	var out []int
	for _, arg := range steps {
		n := slices.IndexFunc(wf.Scripts, func(sc workflow.Script) bool { return strings.EqualFold(sc.Name, strings.TrimSpace(arg)) }) + 1
		if n == 0 {
			if v, err := strconv.Atoi(strings.TrimSpace(arg)); err == nil && v >= 1 && v <= len(wf.Scripts) {
				n = v
			}
		}
		if n == 0 {
			var names []string
			for i, sc := range wf.Scripts {
				names = append(names, fmt.Sprintf("%d %q", i+1, sc.Name))
			}
			return nil, onField("ssh_break_before", &userError{http.StatusBadRequest, fmt.Sprintf("no step %q to pause before in workflow %s: its steps are %s (give a number or a name)", arg, wf.ID, strings.Join(names, ", "))})
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// continueBuild resumes a build paused at a breakpoint.
func (s *Server) continueBuild(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	paused := slices.IndexFunc(b.Steps, func(st build.Step) bool { return st.Status == build.StepPaused })
	if b.Status.Done() || paused < 0 || s.cfg.Continue == nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d is not paused at a breakpoint (it is %s)", b.ID, b.Status))
		return
	}
	who := "someone"
	if t := tokenOf(r); t != nil {
		who = t.Name
	}
	if err := s.cfg.Continue(b.ID, who+" (API)"); err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d: %v", b.ID, err))
		return
	}
	// Wait briefly so that the answer shows the build going on.
	s.answerWhen(w, r, b.ID, func(nb *build.Build) bool { return nb.Status.Done() || nb.Steps[paused].Status != build.StepPaused })
}

// maxExtension bounds one request for more SSH time.
const maxExtension = 24 * time.Hour

// extendSSH gives a build's SSH access more time, never past its
// max_build_duration (the runner's rules cap it).
func (s *Server) extendSSH(w http.ResponseWriter, r *http.Request) {
	var req api.ExtendRequest
	if !s.decode(w, r, &req) {
		return
	}
	by, err := time.ParseDuration(req.By)
	if err != nil || by <= 0 || by > maxExtension {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"by" must be a duration from 1s to 24h, such as "10m" (got %q)`, req.By))
		return
	}
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	if !b.SSH.Enabled || b.SSH.State == build.SSHClosed || b.Status.Done() || s.cfg.Extend == nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d has no open SSH access to extend (it is %s, SSH %s)", b.ID, b.Status, b.SSH.State))
		return
	}
	who := "someone"
	if t := tokenOf(r); t != nil {
		who = t.Name
	}
	// The runner has written the new end when Extend returns (it may not
	// have moved: at max_build_duration already; the log says so).
	if err := s.cfg.Extend(b.ID, by, who); err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d: %v", b.ID, err))
		return
	}
	nb, err := s.cfg.Store.Build(r.Context(), b.ID)
	if err != nil {
		s.internal(w, "read build", err)
		return
	}
	writeJSON(w, http.StatusOK, s.present(r, nb))
}

// rerunBuild queues a new build of an ended build's commit, workflow and
// inputs (its stored spec, as it ran, without its breakpoints), linked to
// it both ways; with SSH access if asked.
func (s *Server) rerunBuild(w http.ResponseWriter, r *http.Request) {
	var req api.RerunRequest
	if !s.decode(w, r, &req) {
		return
	}
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	if !b.Status.Done() {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d has not ended (it is %s): rerun it once it has, or cancel it first", b.ID, b.ShownStatus()))
		return
	}
	if req.SSH && s.cfg.SSH == nil {
		writeError(w, http.StatusUnprocessableEntity, "SSH access is not enabled on this server")
		return
	}
	if req.SSH && !s.sshAllowed(w, r) {
		return
	}
	data, err := s.cfg.Store.BuildSpec(r.Context(), b.ID)
	if err != nil {
		s.internal(w, "read build spec", err)
		return
	}
	var spec build.Spec
	// A build that never ran has an empty spec (a workflow without
	// scripts has its repository and nothing to run, and reruns).
	if err := json.Unmarshal(data, &spec); err != nil || spec.Repo == "" {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d never ran (%s): there is nothing to run again; fix the workflow file and start a new build", b.ID, b.Message))
		return
	}
	if app, err := s.cfg.Store.App(r.Context(), b.App); err == nil && app.RefuseUnsupported {
		var keys []workflow.Unsupported
		for _, k := range spec.Ignored {
			keys = append(keys, workflow.Unsupported{Key: k, Why: workflow.WhyIgnored(k)})
		}
		if why := unsupportedRefusal(app.Name, b.Workflow, keys); why != "" {
			s.log.Info("build refused", "app", b.App, "workflow", b.Workflow, "reason", why)
			writeError(w, http.StatusUnprocessableEntity, why)
			return
		}
	}
	spec.BreakBefore = nil
	if data, err = json.Marshal(spec); err != nil {
		s.internal(w, "rerun", err)
		return
	}
	starter := ""
	if t := tokenOf(r); t != nil {
		starter = t.Name
	}
	nb := &build.Build{
		App: b.App, Workflow: b.Workflow, WorkflowName: b.WorkflowName, Branch: b.Branch, Commit: b.Commit,
		Status: build.Queued, Trigger: build.Manual, StartedBy: starter, MaxDuration: b.MaxDuration,
		Steps: spec.Steps(), RerunOf: &b.ID,
	}
	if req.SSH {
		nb.SSH = build.SSH{Enabled: true, State: build.SSHPending, Mode: build.SSHAlways}
	} else if spec.SSHOnFailure {
		nb.SSH.Mode = build.SSHOnFailure
	}
	if err := s.cfg.Store.CreateBuild(r.Context(), nb, data); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusConflict, fmt.Sprintf("build %d's app %s no longer exists", b.ID, b.App))
			return
		}
		s.internal(w, "rerun", err)
		return
	}
	s.log.Info("build queued", "build", nb.ID, "app", nb.App, "workflow", nb.Workflow, "rerun_of", b.ID, "ssh", req.SSH)
	writeJSON(w, http.StatusCreated, s.present(r, nb))
}
