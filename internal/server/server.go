// Package server is Hangar's HTTP API: apps, builds, live logs and webhooks.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// Store is what the API needs of the store.
type Store interface {
	// Tickets of the browser terminal (store.TicketTerminal).
	AddTicket(ctx context.Context, kind, ticket string, id int64, name string, expires time.Time) error
	TakeTicket(ctx context.Context, kind, ticket string) (int64, string, error)
	AddToken(ctx context.Context, hash string, t store.Token) error
	CreateApp(ctx context.Context, a *store.App) error
	App(ctx context.Context, name string) (*store.App, error)
	Apps(ctx context.Context) ([]*store.App, error)
	DeleteApp(ctx context.Context, name string) error
	SetRefuseUnsupported(ctx context.Context, name string, refuse bool) error
	ActiveBuilds(ctx context.Context, app string) (int, error)
	TokenByHash(ctx context.Context, hash string) (*store.Token, error)
	CreateBuild(ctx context.Context, b *build.Build, spec []byte) error
	Build(ctx context.Context, id int64) (*build.Build, error)
	BuildSpec(ctx context.Context, id int64) ([]byte, error)
	Builds(ctx context.Context, app string, limit int) ([]*build.Build, error)
	// CancelBuild cancels a queued build, or asks the runner to cancel a
	// running one; see store.Store.CancelBuild.
	CancelBuild(ctx context.Context, id int64, message string) (bool, error)
	Logs(ctx context.Context, id, after int64, limit int) ([]build.LogLine, error)
	// LastSuccessfulCommit: what a when.changeset compares with.
	LastSuccessfulCommit(ctx context.Context, app, workflow, branch string) (string, int64, error)
	// ActiveWebhookBuilds: what cancel_previous_builds cancels.
	ActiveWebhookBuilds(ctx context.Context, app, workflow, branch string) ([]int64, error)
	// Webhook deliveries, to ignore repeated ones.
	AddDelivery(ctx context.Context, app, id, event string) (bool, error)
	SetDeliveryResult(ctx context.Context, app, id, result string) error
	ForgetDelivery(ctx context.Context, app, id string) error
	Deliveries(ctx context.Context, app string, limit int) ([]store.Delivery, error)
	Subscribe(id int64) (<-chan struct{}, func())
}

// Mirrors keeps the apps' repository mirrors.
type Mirrors interface {
	Fetch(ctx context.Context, name, url string) (string, error)
	Remove(name string) error
}

// Config configures the API.
type Config struct {
	Store   Store
	Mirrors Mirrors
	Logger  *slog.Logger
	MaxBody int64 // API request bodies; default 1 MiB
	MaxHook int64 // webhook bodies; default 25 MiB (GitHub's limit)
	// MaxHookReads is how many webhook bodies are read at once before
	// their signature is checked; default 4.
	MaxHookReads int
	// SpoolDir is where the part of a webhook body past 64 KiB waits for
	// its signature to be checked (on disk: a tmpfs /tmp would hold it in
	// memory); default os.TempDir().
	SpoolDir string
	SSH      *SSHConfig // nil: no SSH builds
	Metrics  http.Handler
	// Driver and Isolated describe the machines, for /api/v1/info.
	Driver   string
	Isolated bool
	// TLS: the API is served over HTTPS; Loopback: it listens on loopback
	// addresses only. /api/v1/info shows both and TransportWarning.
	TLS      bool
	Loopback bool
	// UI serves the web UI at / (nil: none).
	UI http.Handler
	// InstanceTypes are the instance types workflows may name; nil:
	// build.DefaultInstanceTypes. A build naming another fails at once.
	InstanceTypes build.InstanceTypes
	// Continue resumes a build paused at a breakpoint (the runner's;
	// nil: none can be).
	Continue func(id int64, who string) error
	// Extend gives a build's SSH access more time (the runner's; nil:
	// none can be).
	Extend func(id int64, by time.Duration, who string) error
	// Secrets keeps environment variable groups and keystores (nil: the
	// server has none, and refuses builds that name any).
	Secrets Secrets
	// Files serves artifacts and caches (nil: none are kept).
	Files Files
	// Runners keeps runners, for the admin endpoints /api/v1/runners (nil:
	// none); RunnerAPI serves runners on other hosts at /api/runner/ (nil:
	// none); RunnerStaleAfter is how long a silent runner is listed as
	// answering.
	Runners          RunnerStore
	RunnerAPI        http.Handler
	RunnerStaleAfter time.Duration
}

// Server serves the API. Create it with New.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// hookSlots holds a token per webhook body being read (MaxHookReads).
	hookSlots chan struct{}
	// patterns are the routes of mux, as registered (for tests that walk
	// every endpoint).
	patterns []string
}

type route struct {
	pattern string
	h       http.Handler
}

// routes are every endpoint of the server.
func (s *Server) routes() []route {
	rs := []route{
		{"GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, "ok")
		})},
		{"POST /api/v1/apps", s.auth(s.createApp)},
		{"GET /api/v1/apps", s.auth(s.listApps)},
		{"GET /api/v1/apps/{name}", s.auth(s.getApp)},
		{"PATCH /api/v1/apps/{name}", s.auth(s.patchApp)},
		{"DELETE /api/v1/apps/{name}", s.auth(s.deleteApp)},
		{"POST /api/v1/builds", s.auth(s.startBuild)},
		{"GET /api/v1/builds", s.auth(s.listBuilds)},
		{"GET /api/v1/builds/{id}", s.auth(s.getBuild)},
		{"POST /api/v1/builds/{id}/cancel", s.auth(s.cancelBuild)},
		{"POST /api/v1/builds/{id}/continue", s.auth(s.continueBuild)},
		{"POST /api/v1/builds/{id}/rerun", s.auth(s.rerunBuild)},
		{"POST /api/v1/builds/{id}/ssh/extend", s.auth(s.extendSSH)},
		{"GET /api/v1/builds/{id}/logs", s.auth(s.buildLogs)},
		{"POST /api/v1/webhooks/{app}", http.HandlerFunc(s.webhook)},
		{"GET /api/v1/builds/{id}/ssh/script", s.auth(s.sshScript)},
		{"GET /api/v1/builds/{id}/ssh/access", s.auth(s.sshAccess)},
		{"GET /api/v1/builds/{id}/events", s.auth(s.buildEvents)},
		{"GET /ssh/{id}/{grant}", http.HandlerFunc(s.signedScript)},
		{"POST /api/v1/builds/{id}/terminal", s.auth(s.terminalTicket)},
		{"GET /api/v1/builds/{id}/terminal/ws", http.HandlerFunc(s.terminalWS)},
		{"GET /api/v1/info", s.auth(s.info)},
		{"GET /api/v1/apps/{name}/workflows", s.auth(s.appWorkflows)},
		{"GET /api/v1/apps/{name}/branches", s.auth(s.appBranches)},
		{"GET /api/v1/apps/{name}/deliveries", s.auth(s.appDeliveries)},
		{"POST /api/v1/tokens", s.auth(s.createToken)},
		{"GET /api/v1/builds/{id}/artifacts", s.auth(s.listArtifacts)},
		{"GET /api/v1/builds/{id}/artifacts/{name...}", http.HandlerFunc(s.downloadArtifact)},
		{"POST /api/v1/builds/{id}/artifact-tickets", s.auth(s.artifactTicket)},
		{"GET /api/v1/caches", s.auth(s.listCaches)},
		{"DELETE /api/v1/apps/{name}/caches", s.auth(s.clearCaches)},
	}
	rs = append(rs, s.secretRoutes()...)
	if s.cfg.Metrics != nil {
		rs = append(rs, route{"GET /metrics", s.cfg.Metrics})
	}
	if s.cfg.Runners != nil {
		rs = append(rs, s.runnerRoutes()...)
	}
	if s.cfg.UI != nil {
		rs = append(rs, route{"/", s.cfg.UI})
	}
	return append(rs, route{"/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})})
}

// New returns the API server.
func New(cfg Config) *Server {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxHook == 0 {
		cfg.MaxHook = 25 << 20
	}
	if cfg.InstanceTypes == nil {
		cfg.InstanceTypes = build.DefaultInstanceTypes()
	}
	if cfg.MaxHookReads <= 0 {
		cfg.MaxHookReads = defaultHookReads
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), hookSlots: make(chan struct{}, cfg.MaxHookReads)}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern, rt.h)
		s.patterns = append(s.patterns, rt.pattern)
	}
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// HashToken is how tokens are stored: the hex SHA-256 of the secret.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

type ctxKey struct{}

// auth admits requests that carry a valid bearer token.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || secret == "" {
			writeError(w, http.StatusUnauthorized, "missing API token: pass --token or set HANGAR_TOKEN (the admin token is in the server's data dir, file admin-token)")
			return
		}
		t, err := s.cfg.Store.TokenByHash(r.Context(), HashToken(strings.TrimSpace(secret)))
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusUnauthorized, "invalid API token: check --token or HANGAR_TOKEN")
			return
		}
		if err != nil {
			s.internal(w, "check token", err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
	}
}

func tokenOf(r *http.Request) *store.Token {
	t, _ := r.Context().Value(ctxKey{}).(*store.Token)
	return t
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) internal(w http.ResponseWriter, what string, err error) {
	s.log.Error(what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: "+what+" failed; see the server log")
}

// decode reads a JSON body into v, refusing unknown fields and oversized
// bodies with a message that says what to fix.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
		default:
			writeError(w, http.StatusBadRequest, "request body is not valid JSON for this endpoint: "+err.Error())
		}
		return false
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a build id: ids are positive numbers", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

// allowed writes a 403 unless the request's token may use app.
func allowed(w http.ResponseWriter, r *http.Request, app string) bool {
	if t := tokenOf(r); t != nil && t.Allows(app) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("your API token has no access to app %s: ask an admin for a token with --app %s", app, app))
	return false
}

// adminOnly writes a 403 unless the request's token is an admin's.
func adminOnly(w http.ResponseWriter, r *http.Request) bool {
	if t := tokenOf(r); t != nil && t.Admin {
		return true
	}
	writeError(w, http.StatusForbidden, "this needs an admin API token")
	return false
}

// createToken makes an API token (admin only); the secret is shown once.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if !adminOnly(w, r) {
		return
	}
	var req api.TokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	if !validAppName.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, "a token needs a name: 1-63 letters, digits, '.', '_' or '-'")
		return
	}
	for _, a := range req.Apps {
		if _, err := s.cfg.Store.App(r.Context(), a); err != nil {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no app %q", a))
			return
		}
	}
	secret := newSecret("hgr_")
	if err := s.cfg.Store.AddToken(r.Context(), HashToken(secret), store.Token{Name: req.Name, Admin: req.Admin, Apps: req.Apps, NoSSH: req.NoSSH}); err != nil {
		s.internal(w, "create token", err)
		return
	}
	writeJSON(w, http.StatusCreated, api.Token{Name: req.Name, Token: secret, Apps: req.Apps, Admin: req.Admin, NoSSH: req.NoSSH})
}

// info serves GET /api/v1/info: what this server offers.
func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	info := api.Info{Driver: s.cfg.Driver, Isolated: s.cfg.Isolated, SSH: api.SSHInfo{Enabled: s.cfg.SSH != nil},
		HTTP: api.HTTPInfo{TLS: s.cfg.TLS, Loopback: s.cfg.Loopback}}
	publicURL := ""
	if s.cfg.SSH != nil {
		publicURL = s.cfg.SSH.PublicURL
	}
	info.HTTP.Warning = TransportWarning(s.cfg.TLS, s.cfg.Loopback, publicURL)
	if s.cfg.SSH == nil {
		info.SSH.Reason = "SSH access is turned off on this server (hangar server --ssh off)"
	}
	writeJSON(w, http.StatusOK, info)
}
