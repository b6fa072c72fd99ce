// Package runnerapi is the HTTP API between the servers and the runners on
// other hosts (`hangar runner`): the server's side (Handler, mounted by
// package server at /api/runner/) and the runner's (Client, a
// runner.Store).
//
// The contract, all JSON over HTTP, authenticated with a runner token
// (`Authorization: Bearer hrt_...`, see `hangar runner token create`), and
// the runner process's session (a random value it makes at start) in the
// Hangar-Runner-Session header:
//
//	POST /api/runner/v1/start      it starts: records host, labels, capacity,
//	                               driver, whether it runs SSH builds; fails
//	                               the builds an earlier run of it left
//	                               running. Refused (409) while another
//	                               process on another host runs as this
//	                               runner. With separate gateways, it is told
//	                               their tunnel address and host CA.
//	POST /api/runner/v1/heartbeat  it is alive (409: another process took
//	                               over, or it was revoked: it must stop).
//	POST /api/runner/v1/claim      the oldest queued build of its labels, or
//	                               {"build": null}.
//	GET  /api/runner/v1/cancels    its builds that have a cancel request.
//	POST /api/runner/v1/ended      which of the builds it runs ([ids]) have
//	                               ended without it (failed by a sweep).
//	PUT  /api/runner/v1/builds/ID         writes its build ({"written"}).
//	POST /api/runner/v1/builds/ID/notify  sends its publishing.email as it
//	                               ends ({"lines"} for its log); once.
//	POST /api/runner/v1/builds/ID/logs    stores log chunks of its build.
//	POST /api/runner/v1/builds/ID/events  records an event of its build.
//	GET  /api/runner/v1/wait       a long poll: answers when a build changes
//	                               ({"changed": true}), a gateway records an
//	                               event ({"gateway": true}), requests to its
//	                               builds are pending ({"requests": true}),
//	                               or after a while.
//	GET  /api/runner/v1/requests       the pending Continue/Extend requests
//	                                   to its builds (store.BuildRequest).
//	POST /api/runner/v1/requests/ID    answers one ({"error"}: "" if done).
//
// SSH builds, with separate gateways (`hangar server --gateway-addr`;
// 409 without), see SSHConfig:
//
//	POST   /api/runner/v1/builds/ID/ssh      {alias, expires, host_key}: the
//	                                         server issues the build's
//	                                         credential with its user CA and
//	                                         keeps it sealed; answers the
//	                                         user CA and the user's public
//	                                         key, never a private key.
//	DELETE /api/runner/v1/builds/ID/ssh      destroys its private key.
//	POST   /api/runner/v1/builds/ID/gateway  {op, alias, key, reason}: open,
//	                                         drain, disconnect or forget the
//	                                         build's access on the gateways
//	                                         (cluster.Control); the key is
//	                                         the one the server issued.
//	GET    /api/runner/v1/gateway-events?since=RFC3339
//	                                         the gateways' events of its
//	                                         builds.
//
// and the secrets, artifacts and caches of its builds, and its builds'
// publishing.email (files.go, notify.go).
//
// A runner reads and writes only the builds it claimed and their requests
// (403 otherwise), from its current process (409 from one another has
// replaced); bad input gets 400 saying what is wrong. Any server replica
// answers: the state is the database's.
package runnerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
)

// SessionHeader carries the runner process's session.
const SessionHeader = "Hangar-Runner-Session"

// Messages.
type (
	// StartRequest is what a runner says of itself when it starts.
	StartRequest struct {
		Host     string   `json:"host"`
		Labels   []string `json:"labels"`
		Capacity int      `json:"capacity"`
		Driver   string   `json:"driver"`
		// SSH: the runner runs SSH builds if the server has separate
		// gateways (StartResponse.SSH).
		SSH bool `json:"ssh,omitempty"`
	}
	// StartResponse names the runner and counts the builds of its
	// earlier run that were failed.
	StartResponse struct {
		Name        string `json:"name"`
		Interrupted int64  `json:"interrupted"`
		// SSH is set when the runner asked for SSH builds and the server
		// has separate gateways: the runner claims SSH builds, and its
		// builders open their tunnels there.
		SSH *StartSSH `json:"ssh,omitempty"`
	}
	// ClaimResponse is a claimed build with its spec, or none.
	ClaimResponse struct {
		Build *build.Build `json:"build"`
		Spec  string       `json:"spec,omitempty"`
	}
	// UpdateResponse says whether a build update was written.
	UpdateResponse struct {
		Written bool `json:"written"`
	}
	// WaitResponse says what changed during a long poll: a build
	// (Changed), the gateways' events of the runner's builds (Gateway),
	// the requests to them (Requests: some are pending).
	WaitResponse struct {
		Changed  bool `json:"changed"`
		Gateway  bool `json:"gateway,omitempty"`
		Requests bool `json:"requests,omitempty"`
	}
)

// Store is what the runner API needs of the store.
type Store interface {
	RunnerByToken(ctx context.Context, hash string) (*store.Runner, error)
	StartRunner(ctx context.Context, id int64, info store.RunnerInfo, session string, staleAfter time.Duration) error
	RunnerHeartbeat(ctx context.Context, id int64, session string) error
	FailRunnerBuilds(ctx context.Context, id int64, message string) (int64, error)
	ClaimBuildFor(ctx context.Context, c store.Claim) (*build.Build, []byte, error)
	BuildRunner(ctx context.Context, id int64) (int64, error)
	UpdateBuild(ctx context.Context, b *build.Build) (bool, error)
	AppendLog(ctx context.Context, id int64, chunks []build.LogChunk) error
	AddEvent(ctx context.Context, id int64, ev build.Event) error
	RunnerCancelRequests(ctx context.Context, id int64) ([]int64, error)
	RunnerEndedBuilds(ctx context.Context, runner int64, ids []int64) ([]int64, error)
	Subscribe(id int64) (<-chan struct{}, func())
	// SSH builds and requests.
	Build(ctx context.Context, id int64) (*build.Build, error)
	GetBuildSSH(ctx context.Context, id int64) (*store.BuildSSH, error)
	RunnerGatewayEventsSince(ctx context.Context, runner int64, since time.Time) ([]store.GatewayEvent, error)
	PendingBuildRequests(ctx context.Context, runner int64) ([]store.BuildRequest, error)
	BuildRequestOf(ctx context.Context, id int64) (*store.BuildRequest, error)
	AnswerBuildRequest(ctx context.Context, id int64, errText string) error
	// Build specs and artifacts for the file endpoints.
	BuildSpec(ctx context.Context, id int64) ([]byte, error)
	Artifacts(ctx context.Context, id int64) ([]build.Artifact, error)
	Events(ctx context.Context, id int64) ([]build.Event, error)
}

// Config configures the runner API.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// StaleAfter is the bound of silence after which a runner's builds
	// fail; a second process may take over a runner silent that long.
	StaleAfter time.Duration
	// SSH, if set, lets runners run SSH builds (see SSHConfig). Nil:
	// they claim none.
	SSH *SSHConfig
	// MaxWait bounds a long poll (default 25 s).
	MaxWait time.Duration
	// MaxBody bounds request bodies (default 32 MiB: a batch of log
	// chunks).
	MaxBody int64
	// Secrets opens the groups and keystores runners' builds name (nil:
	// such builds fail); Files keeps their artifacts and caches (nil:
	// none kept); PublicURL is the API's URL as users reach it (artifact
	// links; nil: paths). See files.go.
	Secrets   Secrets
	Files     Files
	PublicURL func() string
	// Notify sends the publishing.email of runners' builds (nil: none
	// is sent, and none is said to be).
	Notify Notifier
}

// InterruptedMessage is the message of the builds a runner left running
// when its process stopped without ending them.
func InterruptedMessage(name string) string {
	return fmt.Sprintf("runner %s stopped during the build (crash or kill)", name)
}

type handler struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the runner API's handler (its paths start /api/runner/v1/).
func New(cfg Config) http.Handler {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 25 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 32 << 20
	}
	h := &handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.Default()
	}
	for pattern, f := range map[string]func(http.ResponseWriter, *http.Request, *store.Runner){
		"POST /api/runner/v1/start":               h.start,
		"POST /api/runner/v1/heartbeat":           h.heartbeat,
		"POST /api/runner/v1/claim":               h.claim,
		"GET /api/runner/v1/cancels":              h.cancels,
		"POST /api/runner/v1/ended":               h.ended,
		"PUT /api/runner/v1/builds/{id}":          h.update,
		"POST /api/runner/v1/builds/{id}/logs":    h.logs,
		"POST /api/runner/v1/builds/{id}/events":  h.event,
		"GET /api/runner/v1/wait":                 h.wait,
		"POST /api/runner/v1/builds/{id}/ssh":     h.issueSSH,
		"DELETE /api/runner/v1/builds/{id}/ssh":   h.destroySSH,
		"POST /api/runner/v1/builds/{id}/gateway": h.gateway,
		"GET /api/runner/v1/gateway-events":       h.gatewayEvents,
		"GET /api/runner/v1/requests":             h.requests,
		"POST /api/runner/v1/requests/{id}":       h.answer,
	} {
		h.mux.Handle(pattern, h.auth(f))
	}
	h.fileRoutes()
	h.mux.HandleFunc("/api/runner/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no runner API endpoint %s %s: is this runner newer than the server?", r.Method, r.URL.Path))
	})
	return h.mux
}

// auth admits requests with a runner token that is not revoked.
func (h *handler) auth(f func(http.ResponseWriter, *http.Request, *store.Runner)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		secret = strings.TrimSpace(secret)
		if !ok || !strings.HasPrefix(secret, server.RunnerTokenPrefix) {
			writeError(w, http.StatusUnauthorized, "missing runner token: pass hangar runner --token with a token of `hangar runner token create NAME` (API tokens are not runner tokens)")
			return
		}
		rn, err := h.cfg.Store.RunnerByToken(r.Context(), server.HashToken(secret))
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusUnauthorized, "invalid runner token: it was revoked, or never made; make one with `hangar runner token create NAME`")
			return
		}
		if err != nil {
			h.internal(w, "check runner token", err)
			return
		}
		f(w, r, rn)
	}
}

func (h *handler) start(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	var req StartRequest
	if !h.decode(w, r, &req) {
		return
	}
	session := r.Header.Get(SessionHeader)
	if session == "" || req.Capacity < 1 || req.Host == "" || len(req.Labels) == 0 {
		writeError(w, http.StatusBadRequest, "a runner starts with a session, its host, at least one label and a capacity of at least 1")
		return
	}
	if !shortText(w, "host", req.Host) || !shortText(w, "driver", req.Driver) {
		return
	}
	if len(req.Labels) > maxLabels {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d labels: a runner serves at most %d instance types", len(req.Labels), maxLabels))
		return
	}
	for _, l := range req.Labels {
		if !shortText(w, "label", l) {
			return
		}
	}
	info := store.RunnerInfo{Host: req.Host, Labels: req.Labels, Capacity: req.Capacity, Driver: req.Driver, SSH: req.SSH && h.cfg.SSH != nil}
	err := h.cfg.Store.StartRunner(r.Context(), rn.ID, info, session, h.cfg.StaleAfter)
	var inUse *store.RunnerInUseError
	if errors.As(err, &inUse) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		h.internal(w, "start runner", err)
		return
	}
	n, err := h.cfg.Store.FailRunnerBuilds(r.Context(), rn.ID, InterruptedMessage(rn.Name))
	if err != nil {
		h.internal(w, "fail the runner's interrupted builds", err)
		return
	}
	h.log.Info("runner started", "runner", rn.Name, "host", req.Host, "labels", strings.Join(req.Labels, ","),
		"capacity", req.Capacity, "driver", req.Driver, "ssh", info.SSH, "interrupted_builds_failed", n)
	resp := StartResponse{Name: rn.Name, Interrupted: n}
	if info.SSH {
		resp.SSH = &StartSSH{TunnelAddr: h.cfg.SSH.TunnelAddr, TunnelCA: authorized(h.cfg.SSH.TunnelCA)}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) heartbeat(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	err := h.cfg.Store.RunnerHeartbeat(r.Context(), rn.ID, r.Header.Get(SessionHeader))
	if errors.Is(err, store.ErrReplaced) {
		writeError(w, http.StatusConflict, fmt.Sprintf("runner %s: another process started as this runner: this one must stop", rn.Name))
		return
	}
	if err != nil {
		h.internal(w, "runner heartbeat", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// current refuses a request of a process that is not the runner's last
// started one.
func current(w http.ResponseWriter, r *http.Request, rn *store.Runner) bool {
	if s := r.Header.Get(SessionHeader); s == "" || s != rn.Session {
		writeError(w, http.StatusConflict, fmt.Sprintf("runner %s: this process is not the runner's current one (start it again)", rn.Name))
		return false
	}
	return true
}

func (h *handler) claim(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if !current(w, r, rn) {
		return
	}
	// A runner runs SSH builds if it said so at start and the servers
	// have separate gateways (see docs/deploy.md).
	b, spec, err := h.cfg.Store.ClaimBuildFor(r.Context(), store.Claim{Runner: rn.ID, Labels: rn.Labels, NoSSH: !rn.SSH || h.cfg.SSH == nil})
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, ClaimResponse{})
		return
	}
	if err != nil {
		h.internal(w, "claim build", err)
		return
	}
	h.log.Info("build claimed by runner", "build", b.ID, "runner", rn.Name)
	writeJSON(w, http.StatusOK, ClaimResponse{Build: b, Spec: string(spec)})
}

func (h *handler) cancels(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	ids, err := h.cfg.Store.RunnerCancelRequests(r.Context(), rn.ID)
	if err != nil {
		h.internal(w, "cancel requests", err)
		return
	}
	writeJSON(w, http.StatusOK, ids)
}

// maxEnded bounds the ids of one ended request.
const maxEnded = 10000

func (h *handler) ended(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	var ids []int64
	if !h.decode(w, r, &ids) {
		return
	}
	if len(ids) > maxEnded {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d build ids: at most %d at once", len(ids), maxEnded))
		return
	}
	ended, err := h.cfg.Store.RunnerEndedBuilds(r.Context(), rn.ID, ids)
	if err != nil {
		h.internal(w, "ended builds", err)
		return
	}
	writeJSON(w, http.StatusOK, ended)
}

// own reads the path's build id and refuses a build the runner did not
// claim, and a process that is not the runner's current one (another took
// over: what this one writes is stale).
func (h *handler) own(w http.ResponseWriter, r *http.Request, rn *store.Runner) (int64, bool) {
	if !current(w, r, rn) {
		return 0, false
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a build id", r.PathValue("id")))
		return 0, false
	}
	owner, err := h.cfg.Store.BuildRunner(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no build %d", id))
		return 0, false
	}
	if err != nil {
		h.internal(w, "find the build's runner", err)
		return 0, false
	}
	if owner != rn.ID {
		writeError(w, http.StatusForbidden, fmt.Sprintf("build %d is not runner %s's", id, rn.Name))
		return 0, false
	}
	return id, true
}

func (h *handler) update(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	id, ok := h.own(w, r, rn)
	if !ok {
		return
	}
	var b build.Build
	if !h.decode(w, r, &b) {
		return
	}
	b.ID = id
	wrote, err := h.cfg.Store.UpdateBuild(r.Context(), &b)
	if err != nil {
		h.internal(w, "update build", err)
		return
	}
	writeJSON(w, http.StatusOK, UpdateResponse{Written: wrote})
}

func (h *handler) logs(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	record(h, w, r, rn, "append log", checkChunks, h.cfg.Store.AppendLog)
}

func (h *handler) event(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	record(h, w, r, rn, "add event", nil, h.cfg.Store.AddEvent)
}

// maxChunkDecoded bounds what a compressed log chunk decodes to: the
// runner stores a block as the builder sent it, and the link admits
// blocks that decode to at most link.MaxMessage bytes.
const maxChunkDecoded = link.MaxMessage

// checkChunks refuses log chunks the server could not read back: an
// unknown encoding, or an S2 block that claims to decode to more than
// maxChunkDecoded bytes (the server allocates that much each time the
// log is read). A runner is not trusted with the server's memory.
func checkChunks(chunks []build.LogChunk) error {
	for _, c := range chunks {
		switch c.Encoding {
		case "":
		case build.LogS2:
			if n, err := s2.DecodedLen(c.Data); err != nil || n > maxChunkDecoded {
				return fmt.Errorf("log chunk at line %d: not an S2 block that decodes to at most %d bytes", c.Seq, maxChunkDecoded)
			}
		default:
			return fmt.Errorf("log chunk at line %d: unknown encoding %q (is this runner newer than the server?)", c.Seq, c.Encoding)
		}
	}
	return nil
}

// record decodes a T from the body of a request about the runner's own
// build, checks it with check (if any: 400 when it fails) and hands it
// to add.
func record[T any](h *handler, w http.ResponseWriter, r *http.Request, rn *store.Runner, what string, check func(T) error, add func(context.Context, int64, T) error) {
	id, ok := h.own(w, r, rn)
	if !ok {
		return
	}
	var v T
	if !h.decode(w, r, &v) {
		return
	}
	if check != nil {
		if err := check(v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := add(r.Context(), id, v); err != nil {
		h.internal(w, what, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// wait answers when what concerns the runner changes: a build is queued
// or one is asked to cancel (store.QueueChanges), a gateway records an
// event of one of its builds (a runner of SSH builds), requests to its
// builds are pending; or after MaxWait. Other builds' changes (their
// logs, events, other runners' writes) do not wake it.
func (h *handler) wait(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	start := time.Now()
	builds, unsub := h.cfg.Store.Subscribe(store.QueueChanges)
	defer unsub()
	reqs, unsubReqs := h.cfg.Store.Subscribe(store.BuildRequestChanges)
	defer unsubReqs()
	var gw <-chan struct{} // nil: never
	if rn.SSH && h.cfg.SSH != nil {
		var unsubGW func()
		gw, unsubGW = h.cfg.Store.Subscribe(store.GatewayEventChanges)
		defer unsubGW()
	}
	t := time.NewTimer(h.cfg.MaxWait)
	defer t.Stop()
	pending := func() bool {
		qs, err := h.cfg.Store.PendingBuildRequests(r.Context(), rn.ID)
		if err != nil && r.Context().Err() == nil {
			h.log.Warn("read the requests to a runner's builds", "runner", rn.Name, "err", err)
		}
		return len(qs) > 0
	}
	// Requests made between two polls are not missed.
	if pending() {
		writeJSON(w, http.StatusOK, WaitResponse{Requests: true})
		return
	}
	for {
		select {
		case <-builds:
			writeJSON(w, http.StatusOK, WaitResponse{Changed: true})
			return
		case <-gw:
			// Only the events of its builds (a gateway's clock may be a
			// little behind).
			evs, err := h.cfg.Store.RunnerGatewayEventsSince(r.Context(), rn.ID, start.Add(-2*time.Second))
			if err != nil || len(evs) > 0 {
				writeJSON(w, http.StatusOK, WaitResponse{Gateway: true})
				return
			}
		case <-reqs:
			if pending() {
				writeJSON(w, http.StatusOK, WaitResponse{Requests: true})
				return
			}
		case <-t.C:
			writeJSON(w, http.StatusOK, WaitResponse{})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBody)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, "request body is not valid JSON for this endpoint: "+err.Error())
		return false
	}
	return true
}

func (h *handler) internal(w http.ResponseWriter, what string, err error) {
	h.log.Error(what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: "+what+" failed; see the server log")
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Bounds of the text a runner sends (beside the request body's).
const (
	maxText   = 4096 // a message, reason or error: users read it
	maxShort  = 255  // a host name, driver or label
	maxLabels = 64
)

// shortText answers 400 and reports false if value (of field) is longer
// than maxShort.
func shortText(w http.ResponseWriter, field, value string) bool {
	return textWithin(w, field, value, maxShort)
}

// textWithin answers 400 and reports false if value (of field) is longer
// than max bytes.
func textWithin(w http.ResponseWriter, field, value string, max int) bool {
	if len(value) > max {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: %d bytes, at most %d", field, len(value), max))
		return false
	}
	return true
}
