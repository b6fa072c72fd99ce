package server

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/gitrepo"
)

// maxBranches bounds the branches GET /api/v1/apps/{name}/branches lists.
const maxBranches = 500

// appBranches serves an app's branches from the server's mirror (fetched
// first, as a build's start does): the default branch first, then the
// most recently committed to.
func (s *Server) appBranches(w http.ResponseWriter, r *http.Request) {
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	mirror, err := s.cfg.Mirrors.Fetch(r.Context(), app.Name, app.Repo)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("app %s: %v", app.Name, err))
		return
	}
	names, err := gitrepo.Branches(r.Context(), mirror, maxBranches+1)
	if err != nil {
		s.internal(w, "list branches", err)
		return
	}
	out := api.Branches{Branches: []string{}}
	if len(names) > maxBranches {
		names, out.Truncated = names[:maxBranches], true
	}
	// A repository without commits has no default branch yet.
	if def, err := gitrepo.DefaultBranch(r.Context(), mirror); err == nil {
		out.Default = def
		names = slices.DeleteFunc(names, func(n string) bool { return n == def })
		if _, err := gitrepo.Resolve(r.Context(), mirror, def); err == nil {
			out.Branches = append(out.Branches, def)
		}
	}
	out.Branches = append(out.Branches, names...)
	writeJSON(w, http.StatusOK, out)
}

// fieldError is a userError about one field of the request (api.Error's
// Field), so that a form can point at it and word it its own way.
type fieldError struct {
	field string
	err   *userError
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// onField marks ue as an error about the request's field.
func onField(field string, ue *userError) error { return &fieldError{field: field, err: ue} }

// fieldOf returns the field err is about, if any.
func fieldOf(err error) string {
	var fe *fieldError
	if errors.As(err, &fe) {
		return fe.field
	}
	return ""
}

// writeFieldError is writeError with the field the error is about.
func writeFieldError(w http.ResponseWriter, code int, field, msg string) {
	writeJSON(w, code, api.Error{Message: msg, Field: field})
}
