package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/store"
)

// RunnerStore keeps runners: the admin endpoints' part of the store.
type RunnerStore interface {
	CreateRunner(ctx context.Context, name, tokenHash string) (*store.Runner, error)
	Runners(ctx context.Context) ([]*store.Runner, error)
	RevokeRunner(ctx context.Context, name string) error
}

// RunnerTokenPrefix starts every runner token (user tokens start with
// "hgr_"): a runner token is refused by the API, a user token by the
// runner API.
const RunnerTokenPrefix = "hrt_"

// newSecret is a new token's secret: prefix and 32 random bytes in hex.
func newSecret(prefix string) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// runnerRoutes are the admin endpoints of runners and, if configured,
// the runner API itself.
func (s *Server) runnerRoutes() []route {
	rs := []route{
		{"POST /api/v1/runners", s.auth(s.createRunner)},
		{"GET /api/v1/runners", s.auth(s.listRunners)},
		{"DELETE /api/v1/runners/{name}", s.auth(s.revokeRunner)},
	}
	if s.cfg.RunnerAPI != nil {
		rs = append(rs, route{"/api/runner/", s.cfg.RunnerAPI})
	}
	return rs
}

// createRunner makes a runner and its token (admin); the token is shown
// once.
func (s *Server) createRunner(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	var req api.RunnerRequest
	if !s.decode(w, r, &req) {
		return
	}
	if !validAppName.MatchString(req.Name) || strings.HasPrefix(req.Name, "server-") {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("runner name %q: use 1-63 letters, digits, '.', '_' or '-', not starting with server- (the names of servers' own runners)", req.Name))
		return
	}
	secret := newSecret(RunnerTokenPrefix)
	_, err := s.cfg.Runners.CreateRunner(r.Context(), req.Name, HashToken(secret))
	if errors.Is(err, store.ErrExists) {
		writeError(w, http.StatusConflict, fmt.Sprintf("runner %s exists: revoke it first (hangar runner revoke %s) or pick another name", req.Name, req.Name))
		return
	}
	if err != nil {
		s.internal(w, "create runner", err)
		return
	}
	writeJSON(w, http.StatusCreated, api.RunnerToken{Name: req.Name, Token: secret})
}

// listRunners lists the runners (admin).
func (s *Server) listRunners(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	list, err := s.cfg.Runners.Runners(r.Context())
	if err != nil {
		s.internal(w, "list runners", err)
		return
	}
	out := make([]api.Runner, 0, len(list))
	for _, rn := range list {
		out = append(out, api.Runner{Name: rn.Name, Server: rn.Server, Host: rn.Host, Labels: rn.Labels, Capacity: rn.Capacity,
			Driver: rn.Driver, SSH: rn.SSH, StartedAt: rn.StartedAt, LastSeen: rn.LastSeen, RevokedAt: rn.RevokedAt, Running: rn.Running,
			Answering: rn.RevokedAt == nil && rn.LastSeen != nil && time.Since(*rn.LastSeen) < s.cfg.RunnerStaleAfter})
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeRunner revokes a runner's token (admin): its running builds fail.
func (s *Server) revokeRunner(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	name := r.PathValue("name")
	err := s.cfg.Runners.RevokeRunner(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no runner %q with a token (see hangar runner list; a server's own runner stops with its server)", name))
		return
	}
	if err != nil {
		s.internal(w, "revoke runner", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
