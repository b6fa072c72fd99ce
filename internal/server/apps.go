package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// presentApp is app a as the API shows it, without its webhook secret.
func presentApp(r *http.Request, a *store.App) api.App {
	return api.App{
		ID: a.ID, Name: a.Name, Repo: gitrepo.Redact(a.Repo), CreatedAt: a.CreatedAt,
		WebhookURL: webhookURL(r, a.Name), RefuseUnsupported: a.RefuseUnsupported,
	}
}

var scpLike = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:`)

var validAppName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func webhookURL(r *http.Request, app string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/api/v1/webhooks/%s", scheme, r.Host, app)
}

// normalizeRepo checks a repository URL or local path and makes paths
// absolute.
func normalizeRepo(repo string) (string, error) {
	repo = strings.TrimSpace(repo)
	switch {
	case repo == "":
		return "", errors.New(`"repo" is required: a git URL (https://, ssh://, git@host:path) or a local path`)
	case strings.HasPrefix(repo, "-"):
		return "", errors.New("repo must not start with '-'")
	case strings.Contains(repo, "://"):
		for _, p := range []string{"https://", "http://", "ssh://", "git://", "file://"} {
			if strings.HasPrefix(repo, p) {
				return repo, nil
			}
		}
		return "", fmt.Errorf("repo %q: only https, http, ssh, git and file URLs are supported", repo)
	case scpLike.MatchString(repo):
		return repo, nil
	}
	abs, err := filepath.Abs(repo)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("repo %q: no such directory on the server: give a git URL or an existing path", repo)
	}
	return abs, nil
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	var req api.AppRequest
	if !s.decode(w, r, &req) {
		return
	}
	if !validAppName.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("app name %q is not valid: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", req.Name))
		return
	}
	repo, err := normalizeRepo(req.Repo)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	secret := req.WebhookSecret
	if secret == "" {
		var b [24]byte
		_, _ = rand.Read(b[:])
		secret = hex.EncodeToString(b[:])
	}
	if _, err := s.cfg.Store.App(r.Context(), req.Name); err == nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("an app named %q already exists", req.Name))
		return
	}
	// Check that the repository can be read before accepting the app.
	if _, err := s.cfg.Mirrors.Fetch(r.Context(), req.Name, repo); err != nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("cannot read repository %s: %v", gitrepo.Redact(repo), err))
		return
	}
	app := &store.App{Name: req.Name, Repo: repo, WebhookSecret: secret, RefuseUnsupported: req.RefuseUnsupported}
	if err := s.cfg.Store.CreateApp(r.Context(), app); errors.Is(err, store.ErrExists) {
		writeError(w, http.StatusConflict, fmt.Sprintf("an app named %q already exists", req.Name))
		return
	} else if err != nil {
		s.internal(w, "create app", err)
		return
	}
	s.log.Info("app added", "app", app.Name, "repo", gitrepo.Redact(app.Repo), "refuse_unsupported", app.RefuseUnsupported)
	resp := presentApp(r, app)
	resp.WebhookSecret = secret
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	apps, err := s.cfg.Store.Apps(r.Context())
	if err != nil {
		s.internal(w, "list apps", err)
		return
	}
	out := []api.App{}
	for _, a := range apps {
		if t := tokenOf(r); t != nil && t.Allows(a.Name) {
			out = append(out, presentApp(r, a))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) lookupApp(w http.ResponseWriter, r *http.Request, name string) (*store.App, bool) {
	if !allowed(w, r, name) {
		return nil, false
	}
	app, err := s.cfg.Store.App(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q: see `hangar app list`", name))
		return nil, false
	}
	if err != nil {
		s.internal(w, "read app", err)
		return nil, false
	}
	return app, true
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	if app, ok := s.lookupApp(w, r, r.PathValue("name")); ok {
		writeJSON(w, http.StatusOK, presentApp(r, app))
	}
}

// patchApp changes an app's settings (admin, or a token for the app).
func (s *Server) patchApp(w http.ResponseWriter, r *http.Request) {
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	var req api.AppSettings
	if !s.decode(w, r, &req) {
		return
	}
	if req.RefuseUnsupported == nil {
		writeError(w, http.StatusBadRequest, `nothing to change: give {"refuse_unsupported": true} or false`)
		return
	}
	err := s.cfg.Store.SetRefuseUnsupported(r.Context(), app.Name, *req.RefuseUnsupported)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q: see `hangar app list`", app.Name))
		return
	} else if err != nil {
		s.internal(w, "change app", err)
		return
	}
	app.RefuseUnsupported = *req.RefuseUnsupported
	s.log.Info("app changed", "app", app.Name, "refuse_unsupported", app.RefuseUnsupported)
	writeJSON(w, http.StatusOK, presentApp(r, app))
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	n, err := s.cfg.Store.ActiveBuilds(r.Context(), app.Name)
	if err != nil {
		s.internal(w, "count builds", err)
		return
	}
	if n > 0 {
		writeError(w, http.StatusConflict, fmt.Sprintf("app %s has %d builds that have not ended: cancel them first", app.Name, n))
		return
	}
	if err := s.cfg.Store.DeleteApp(r.Context(), app.Name); err != nil {
		s.internal(w, "delete app", err)
		return
	}
	if err := s.cfg.Mirrors.Remove(app.Name); err != nil {
		s.log.Warn("remove mirror", "app", app.Name, "err", err)
	}
	s.log.Info("app deleted", "app", app.Name)
	w.WriteHeader(http.StatusNoContent)
}

// appWorkflows serves the workflows of an app's branch (default: the
// repository's default branch).
func (s *Server) appWorkflows(w http.ResponseWriter, r *http.Request) {
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	mirror, err := s.cfg.Mirrors.Fetch(r.Context(), app.Name, app.Repo)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("app %s: %v", app.Name, err))
		return
	}
	branch := r.URL.Query().Get("branch")
	if branch == "" {
		if branch, err = gitrepo.DefaultBranch(r.Context(), mirror); err != nil {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("app %s: %v", app.Name, err))
			return
		}
	}
	commit, err := gitrepo.Resolve(r.Context(), mirror, branch)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("app %s has no branch %q", app.Name, branch))
		return
	}
	name, data, err := gitrepo.ReadFile(r.Context(), mirror, commit, workflow.FileNames)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	f, err := workflow.Parse(name, data)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	out := []api.Workflow{}
	for _, wf := range f.Workflows {
		wi := api.Workflow{ID: wf.ID, Name: wf.Name, MaxDuration: int64(wf.MaxDuration / time.Second), Events: wf.Triggering.Events,
			Scripts: []string{}, Inputs: []api.Input{}, Check: wf.Report()}
		for _, in := range wf.Inputs {
			wi.Inputs = append(wi.Inputs, api.Input{ID: in.ID, Description: in.Description, Type: in.Type, Default: in.Default, Options: in.Options})
		}
		if wi.Events == nil {
			wi.Events = []string{}
		}
		for _, sc := range wf.Scripts {
			wi.Scripts = append(wi.Scripts, sc.Name)
		}
		out = append(out, wi)
	}
	writeJSON(w, http.StatusOK, api.Workflows{Branch: branch, Commit: commit, File: name, Workflows: out})
}
