package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// Secrets keeps the environment variable groups and keystores (a
// *secrets.Vault). Values go in and never come out of the API.
type Secrets interface {
	SetGroup(ctx context.Context, app, group string, vars []secrets.Var) error
	Groups(ctx context.Context, app string) ([]store.Group, error)
	DeleteGroup(ctx context.Context, app, group string) error
	DeleteGroupVar(ctx context.Context, app, group, key string) error
	PutKeystore(ctx context.Context, app, ref string, ks *secrets.Keystore) error
	Keystores(ctx context.Context, app string) ([]store.Keystore, error)
	DeleteKeystore(ctx context.Context, app, ref string) error
	// Check says whether app has the groups and keystores a workflow
	// names (a *secrets.MissingError otherwise).
	Check(ctx context.Context, app string, groups, keystores []string) error
}

// secretRoutes are the endpoints of groups and keystores.
func (s *Server) secretRoutes() []route {
	return []route{
		{"GET /api/v1/groups", s.auth(s.listGroups)},
		{"PUT /api/v1/groups/{group}", s.auth(s.setGroup)},
		{"DELETE /api/v1/groups/{group}", s.auth(s.deleteGroup)},
		{"DELETE /api/v1/groups/{group}/variables/{key}", s.auth(s.deleteGroupVar)},
		{"GET /api/v1/apps/{name}/groups", s.auth(s.listGroups)},
		{"PUT /api/v1/apps/{name}/groups/{group}", s.auth(s.setGroup)},
		{"DELETE /api/v1/apps/{name}/groups/{group}", s.auth(s.deleteGroup)},
		{"DELETE /api/v1/apps/{name}/groups/{group}/variables/{key}", s.auth(s.deleteGroupVar)},
		{"GET /api/v1/apps/{name}/keystores", s.auth(s.listKeystores)},
		{"PUT /api/v1/apps/{name}/keystores/{ref}", s.auth(s.putKeystore)},
		{"DELETE /api/v1/apps/{name}/keystores/{ref}", s.auth(s.deleteKeystore)},
	}
}

// groupScope is the app of a group request ("" for a global group) once
// the token may write (write) or read it; false when an answer was
// written. Any token may read the global groups' names; only an admin's
// may change them.
func (s *Server) groupScope(w http.ResponseWriter, r *http.Request, write bool) (string, bool) {
	if s.cfg.Secrets == nil {
		writeError(w, http.StatusNotImplemented, "this server keeps no environment variable groups or keystores")
		return "", false
	}
	name := r.PathValue("name")
	if name == "" {
		return "", !write || adminOnly(w, r)
	}
	_, ok := s.lookupApp(w, r, name)
	return name, ok
}

func presentGroup(g store.Group) api.Group {
	return api.Group{Name: g.Name, Global: g.App == "", Keys: g.Keys, UpdatedAt: g.UpdatedAt}
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, false)
	if !ok {
		return
	}
	groups, err := s.cfg.Secrets.Groups(r.Context(), app)
	writeList(s, w, "groups", groups, err, presentGroup)
}

func (s *Server) setGroup(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, true)
	if !ok {
		return
	}
	var req api.GroupRequest
	if !s.decode(w, r, &req) {
		return
	}
	group := r.PathValue("group")
	vars := make([]secrets.Var, len(req.Variables))
	keys := make([]string, len(req.Variables))
	for i, v := range req.Variables {
		vars[i], keys[i] = secrets.Var{Name: v.Name, Value: v.Value}, v.Name
	}
	err := s.cfg.Secrets.SetGroup(r.Context(), app, group, vars)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q", app))
		return
	}
	if err != nil {
		// The vault's errors name keys, never values.
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Info("environment variable group set", "app", app, "group", group, "keys", keys)
	groups, err := s.cfg.Secrets.Groups(r.Context(), app)
	writeStored(s, w, "group", groups, err, func(g store.Group) bool { return g.Name == group }, presentGroup)
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, true)
	if !ok {
		return
	}
	group := r.PathValue("group")
	err := s.cfg.Secrets.DeleteGroup(r.Context(), app, group)
	s.deleted(w, err, fmt.Sprintf("no group %q%s: see `%s`", group, ofApp(app), strings.TrimSpace("hangar group list "+app)), "delete group")
	if err == nil {
		s.log.Info("environment variable group deleted", "app", app, "group", group)
	}
}

func (s *Server) deleteGroupVar(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, true)
	if !ok {
		return
	}
	group, key := r.PathValue("group"), r.PathValue("key")
	err := s.cfg.Secrets.DeleteGroupVar(r.Context(), app, group, key)
	s.deleted(w, err, fmt.Sprintf("group %q%s has no variable %s", group, ofApp(app), key), "delete group variable")
	if err == nil {
		s.log.Info("environment variable deleted", "app", app, "group", group, "key", key)
	}
}

func ofApp(app string) string {
	if app == "" {
		return " (global)"
	}
	return " of app " + app
}

// writeList answers a request for a list of what (groups, keystores):
// items, read with err, each as present makes it.
func writeList[T, P any](s *Server, w http.ResponseWriter, what string, items []T, err error, present func(T) P) {
	if err != nil {
		s.internal(w, "list "+what, err)
		return
	}
	out := []P{}
	for _, it := range items {
		out = append(out, present(it))
	}
	writeJSON(w, http.StatusOK, out)
}

// writeStored answers a request that stored a what (a group, a keystore)
// with it as read back: the item of items (read with err) that stored
// picks, as present makes it.
func writeStored[T, P any](s *Server, w http.ResponseWriter, what string, items []T, err error, stored func(T) bool, present func(T) P) {
	if err != nil {
		s.internal(w, "list "+what+"s", err)
		return
	}
	for _, it := range items {
		if stored(it) {
			writeJSON(w, http.StatusOK, present(it))
			return
		}
	}
	s.internal(w, "read the "+what+" stored", fmt.Errorf("%s not found after it was stored", what))
}

// deleted answers a delete that returned err.
func (s *Server) deleted(w http.ResponseWriter, err error, notFound, what string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, notFound)
	case err != nil:
		s.internal(w, what, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func presentKeystore(k store.Keystore) api.Keystore {
	return api.Keystore{Reference: k.Ref, KeyAlias: k.Alias, CreatedAt: k.CreatedAt}
}

func (s *Server) listKeystores(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, false)
	if !ok {
		return
	}
	list, err := s.cfg.Secrets.Keystores(r.Context(), app)
	writeList(s, w, "keystores", list, err, presentKeystore)
}

func (s *Server) putKeystore(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, true)
	if !ok {
		return
	}
	var req api.KeystoreRequest
	if !s.decode(w, r, &req) {
		return
	}
	ref := r.PathValue("ref")
	ks := &secrets.Keystore{File: req.Keystore, Password: req.KeystorePassword, Alias: req.KeyAlias, KeyPassword: req.KeyPassword}
	if err := s.cfg.Secrets.PutKeystore(r.Context(), app, ref, ks); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Info("keystore added", "app", app, "reference", ref)
	list, err := s.cfg.Secrets.Keystores(r.Context(), app)
	writeStored(s, w, "keystore", list, err, func(k store.Keystore) bool { return k.Ref == ref }, presentKeystore)
}

func (s *Server) deleteKeystore(w http.ResponseWriter, r *http.Request) {
	app, ok := s.groupScope(w, r, true)
	if !ok {
		return
	}
	ref := r.PathValue("ref")
	err := s.cfg.Secrets.DeleteKeystore(r.Context(), app, ref)
	s.deleted(w, err, fmt.Sprintf("app %s has no keystore %q: see `hangar app keystore list %s`", app, ref, app), "delete keystore")
	if err == nil {
		s.log.Info("keystore deleted", "app", app, "reference", ref)
	}
}

// secretsRefusal says why a build of wf cannot start for app's secrets
// ("" when it can): ios_signing on Linux machines, a group or keystore the
// app does not have.
func (s *Server) secretsRefusal(ctx context.Context, app string, wf *workflow.Workflow) (string, error) {
	if wf.IOSSigning {
		return "environment.ios_signing: " + workflow.IOSSigningRefused, nil
	}
	if len(wf.Groups)+len(wf.AndroidSigning) == 0 {
		return "", nil
	}
	if s.cfg.Secrets == nil {
		return "this server keeps no environment variable groups or keystores, which the workflow names", nil
	}
	err := s.cfg.Secrets.Check(ctx, app, wf.Groups, wf.AndroidSigning)
	var me *secrets.MissingError
	if errors.As(err, &me) {
		return me.Error(), nil
	}
	return "", err
}
