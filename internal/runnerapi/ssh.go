package runnerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/runner"
	"github.com/hangar-ci/hangar/internal/store"
)

// SSHConfig lets runners on other hosts run SSH builds through the
// separate gateways (`hangar server --gateway-addr`): the server issues
// the builds' credentials (the runner never holds the user CA, the sealer
// or a build's private key) and controls the gateways for the runners'
// builds.
type SSHConfig struct {
	// Credentials issues and destroys the credentials
	// (runner.LocalCredentials with the database's keys).
	Credentials runner.Credentials
	// Gateway controls the gateways (*cluster.Control).
	Gateway runner.Gateway
	// TunnelAddr is the gateways' address, where builders open their
	// tunnels; TunnelCA the host CA of the gateways' certificates.
	TunnelAddr string
	TunnelCA   ssh.PublicKey
}

// Messages of SSH builds.
type (
	// StartSSH tells a runner where its builders open their tunnels: the
	// gateways' address and the host CA their certificates are of.
	StartSSH struct {
		TunnelAddr string `json:"tunnel_addr"`
		TunnelCA   string `json:"tunnel_ca"` // authorized_keys format
	}
	// IssueRequest asks for a build's SSH credential.
	IssueRequest struct {
		Alias   string    `json:"alias"`    // the build's alias, build-N
		Expires time.Time `json:"expires"`  // the certificate's end: the build's deadline
		HostKey string    `json:"host_key"` // the builder's SSH host public key, authorized_keys format
	}
	// IssueResponse is what the builder needs of the credential.
	IssueResponse struct {
		UserCA  string `json:"user_ca"`  // authorized_keys format
		UserKey string `json:"user_key"` // the build's user public key, authorized_keys format
	}
	// GatewayRequest is a gateway control call for one of the runner's
	// builds (see runner.Gateway).
	GatewayRequest struct {
		Op     string `json:"op"` // open, drain, disconnect or forget
		Alias  string `json:"alias"`
		Key    string `json:"key,omitempty"`    // open, forget: the build's user key
		Reason string `json:"reason,omitempty"` // drain
	}
	// GatewayEvent is a gateway's event of one of the runner's builds.
	GatewayEvent struct {
		ID     int64     `json:"id"`
		Time   time.Time `json:"time"`
		Alias  string    `json:"alias"`
		Kind   string    `json:"kind"`
		Remote string    `json:"remote,omitempty"`
		Client string    `json:"client,omitempty"`
		Detail string    `json:"detail,omitempty"`
	}
	// BuildRequest is a user's request to one of the runner's builds
	// (store.BuildRequest), which the runner does and answers.
	BuildRequest struct {
		ID    int64         `json:"id"`
		Build int64         `json:"build"`
		Kind  string        `json:"kind"` // continue or extend
		By    time.Duration `json:"by,omitempty"`
		Who   string        `json:"who"`
	}
	// AnswerRequest is a runner's answer to a BuildRequest.
	AnswerRequest struct {
		Error string `json:"error"` // "" if done
	}
)

// noSSH refuses SSH calls on a server without separate gateways, and of
// a runner that did not start to run SSH builds.
func (h *handler) noSSH(w http.ResponseWriter, rn *store.Runner) bool {
	switch {
	case h.cfg.SSH == nil:
		writeError(w, http.StatusConflict, "this server has no separate SSH gateways (hangar server --gateway-addr): runners on other hosts run no SSH builds through it")
		return true
	case !rn.SSH:
		writeError(w, http.StatusConflict, fmt.Sprintf("runner %s did not start to run SSH builds (start it again)", rn.Name))
		return true
	}
	return false
}

// sshBuild reads the path's build id, which must be the runner's, and
// checks that alias is its alias.
func (h *handler) sshBuild(w http.ResponseWriter, r *http.Request, rn *store.Runner, alias string) (*build.Build, bool) {
	id, ok := h.own(w, r, rn)
	if !ok {
		return nil, false
	}
	if alias != build.Alias(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("alias %q: build %d's alias is %s", alias, id, build.Alias(id)))
		return nil, false
	}
	b, err := h.cfg.Store.Build(r.Context(), id)
	if err != nil {
		h.internal(w, "read the build", err)
		return nil, false
	}
	return b, true
}

// running refuses a build that has ended.
func running(w http.ResponseWriter, b *build.Build) bool {
	if b.Status != build.Preparing && b.Status != build.Building {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d has ended (%s): its SSH access cannot open", b.ID, b.Status))
		return false
	}
	return true
}

// slack is how far past its max_build_duration a build's certificate may
// be asked to last (the runner's and the server's clocks differ).
const slack = time.Minute

// maxDuration bounds a build whose max_build_duration is not recorded.
const maxDuration = 120 * time.Minute

func (h *handler) issueSSH(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	var req IssueRequest
	if h.noSSH(w, rn) || !h.decode(w, r, &req) {
		return
	}
	b, ok := h.sshBuild(w, r, rn, req.Alias)
	if !ok || !running(w, b) {
		return
	}
	if b.SSH.Mode == "" {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d was started without SSH access", b.ID))
		return
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.HostKey))
	if err != nil {
		writeError(w, http.StatusBadRequest, "host_key: want the builder's SSH host public key in authorized_keys format (ssh-ed25519 AAAA...)")
		return
	}
	limit := time.Now().Add(maxDuration)
	if b.StartedAt != nil && b.MaxDuration > 0 {
		limit = b.StartedAt.Add(time.Duration(b.MaxDuration) * time.Second)
	}
	if now := time.Now(); !req.Expires.After(now) || req.Expires.After(limit.Add(slack)) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("expires %s: want a time after now and at most the build's deadline (%s)",
			req.Expires.UTC().Format(time.RFC3339), limit.UTC().Format(time.RFC3339)))
		return
	}
	cred, err := h.cfg.SSH.Credentials.Issue(r.Context(), b.ID, req.Alias, req.Expires, hostKey)
	if err != nil {
		h.internal(w, "issue the build's SSH credential", err)
		return
	}
	h.log.Info("SSH credential issued to runner", "build", b.ID, "runner", rn.Name)
	writeJSON(w, http.StatusOK, IssueResponse{UserCA: authorized(cred.UserCA), UserKey: authorized(cred.UserKey)})
}

func (h *handler) destroySSH(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if h.noSSH(w, rn) {
		return
	}
	id, ok := h.own(w, r, rn)
	if !ok {
		return
	}
	if err := h.cfg.SSH.Credentials.Destroy(r.Context(), id); err != nil {
		h.internal(w, "destroy the build's SSH key", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func (h *handler) gateway(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	var req GatewayRequest
	if h.noSSH(w, rn) || !h.decode(w, r, &req) {
		return
	}
	b, ok := h.sshBuild(w, r, rn, req.Alias)
	if !ok {
		return
	}
	// The key is the build's, as the server issued it: open and forget
	// take no other.
	key := func() (ssh.PublicKey, bool) {
		c, err := h.cfg.Store.GetBuildSSH(r.Context(), b.ID)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusConflict, fmt.Sprintf("build %d has no SSH credential: issue it first (POST %s)", b.ID, buildPath(b.ID, "/ssh")))
			return nil, false
		}
		if err != nil {
			h.internal(w, "read the build's SSH credential", err)
			return nil, false
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.PublicKey))
		if err != nil {
			h.internal(w, "read the build's SSH credential", err)
			return nil, false
		}
		if req.Key != "" && req.Key != authorized(k) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("key: not build %d's user key", b.ID))
			return nil, false
		}
		return k, true
	}
	gw := h.cfg.SSH.Gateway
	switch req.Op {
	case "open":
		if !running(w, b) {
			return
		}
		k, ok := key()
		if !ok {
			return
		}
		gw.Open(req.Alias, k)
	case "drain":
		if req.Reason == "" {
			writeError(w, http.StatusBadRequest, "drain: give the reason that users connecting are told")
			return
		}
		if !textWithin(w, "reason", req.Reason, maxText) {
			return
		}
		gw.Drain(req.Alias, req.Reason)
	case "disconnect":
		gw.Disconnect(req.Alias)
	case "forget":
		k, ok := key()
		if !ok {
			return
		}
		gw.Forget(req.Alias, k)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("op %q: want open, drain, disconnect or forget", req.Op))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) gatewayEvents(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if h.noSSH(w, rn) || !current(w, r, rn) {
		return
	}
	since, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "since: want an RFC 3339 time, e.g. ?since=2026-01-02T15:04:05Z")
		return
	}
	evs, err := h.cfg.Store.RunnerGatewayEventsSince(r.Context(), rn.ID, since)
	if err != nil {
		h.internal(w, "read the gateways' events", err)
		return
	}
	out := make([]GatewayEvent, len(evs))
	for i, ev := range evs {
		out[i] = GatewayEvent{ID: ev.ID, Time: ev.Time, Alias: ev.Alias, Kind: ev.Kind, Remote: ev.Remote, Client: ev.Client, Detail: ev.Detail}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) requests(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if !current(w, r, rn) {
		return
	}
	qs, err := h.cfg.Store.PendingBuildRequests(r.Context(), rn.ID)
	if err != nil {
		h.internal(w, "read the requests to the runner's builds", err)
		return
	}
	out := make([]BuildRequest, len(qs))
	for i, q := range qs {
		out[i] = BuildRequest{ID: q.ID, Build: q.BuildID, Kind: q.Kind, By: q.By, Who: q.Who}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) answer(w http.ResponseWriter, r *http.Request, rn *store.Runner) {
	if !current(w, r, rn) {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a request id", r.PathValue("id")))
		return
	}
	var req AnswerRequest
	if !h.decode(w, r, &req) {
		return
	}
	q, err := h.cfg.Store.BuildRequestOf(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no request %d", id))
		return
	}
	if err != nil {
		h.internal(w, "read the request", err)
		return
	}
	owner, err := h.cfg.Store.BuildRunner(r.Context(), q.BuildID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		h.internal(w, "find the build's runner", err)
		return
	}
	if owner != rn.ID {
		writeError(w, http.StatusForbidden, fmt.Sprintf("request %d is to build %d, which is not runner %s's", id, q.BuildID, rn.Name))
		return
	}
	if !textWithin(w, "error", req.Error, maxText) {
		return
	}
	if err := h.cfg.Store.AnswerBuildRequest(context.WithoutCancel(r.Context()), id, req.Error); err != nil {
		h.internal(w, "answer the request", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
