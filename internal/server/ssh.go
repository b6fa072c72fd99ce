package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/connect"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// SSHConfig enables SSH builds in the API.
type SSHConfig struct {
	Store  SSHStore
	Sealer *sshca.Sealer
	// URLKey signs the one-line command's URLs.
	URLKey []byte
	// GatewayHost is the gateway's host name as users reach it; empty:
	// the host name of the API request.
	GatewayHost string
	GatewayPort int
	GatewayKey  ssh.PublicKey
	// GatewayDialAddr is where the server itself reaches the gateway (for
	// browser terminals).
	GatewayDialAddr string
	// PublicURL is the API's base URL as users reach it; empty: from the
	// request.
	PublicURL string
	// ReadyWait is how long a script request waits for the build's tunnel.
	ReadyWait time.Duration
}

// SSHStore is what the SSH endpoints need of the store.
type SSHStore interface {
	GetBuildSSH(ctx context.Context, id int64) (*store.BuildSSH, error)
	AddEvent(ctx context.Context, id int64, ev build.Event) error
	Events(ctx context.Context, id int64) ([]build.Event, error)
}

// signature is the signed part of a build's one-line URL.
func (c *SSHConfig) signature(id int64) string {
	m := hmac.New(sha256.New, c.URLKey)
	fmt.Fprintf(m, "hangar ssh script %d", id)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// safeHost matches Host headers that may go into generated shell commands.
var safeHost = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$`)

func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.SSH != nil && s.cfg.SSH.PublicURL != "" {
		return strings.TrimRight(s.cfg.SSH.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// scriptURL is the unguessable URL of build id's script.
func (s *Server) scriptURL(r *http.Request, id int64) string {
	return fmt.Sprintf("%s/ssh/%d/%s", s.baseURL(r), id, s.cfg.SSH.signature(id))
}

// present fills what a build shows only to those allowed to see it.
func (s *Server) present(r *http.Request, b *build.Build) *build.Build {
	b.Status = b.ShownStatus()
	if b.SSH.Sessions == nil {
		b.SSH.Sessions = []build.SSHSession{}
	}
	hostOK := s.cfg.SSH != nil && (s.cfg.SSH.PublicURL != "" || safeHost.MatchString(r.Host))
	// The one-line command is a credential: only for a token that may
	// have SSH access to the build (see unisolatedSSHAllowed).
	mayConnect := s.cfg.Isolated || tokenOf(r) != nil && tokenOf(r).Admin
	if b.SSH.Enabled && hostOK && mayConnect && !b.Status.Done() && b.SSH.State != build.SSHClosed {
		url := s.scriptURL(r, b.ID)
		b.SSH.Command = connect.OneLiner(url)
		b.SSH.PowerShell = connect.PowerShellOneLiner(url)
	}
	return b
}

// unisolatedSSHAllowed writes a 403 unless SSH access is safe to give this
// request's token: a shell on a machine that is not isolated (the host
// driver) is a shell as the server's own user, next to its data, so only
// admin tokens get one.
func (s *Server) unisolatedSSHAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Isolated {
		return true
	}
	if t := tokenOf(r); t != nil && t.Admin {
		return true
	}
	writeError(w, http.StatusForbidden, "this server's machines are not isolated (host driver): SSH access is for admin tokens only")
	return false
}

// access loads what a user needs to connect to build b, waiting a little
// for its tunnel. It writes an error and returns nil when it cannot.
func (s *Server) access(w http.ResponseWriter, r *http.Request, b *build.Build) *connect.Access {
	if s.cfg.SSH == nil || !b.SSH.Enabled {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d was started without SSH access: start a build with --ssh (API: \"ssh\": true)", b.ID))
		return nil
	}
	wait := s.cfg.SSH.ReadyWait
	if wait <= 0 {
		wait = 20 * time.Second
	}
	ch, unsub := s.cfg.Store.Subscribe(b.ID)
	defer unsub()
	deadline := time.After(wait)
	for b.SSH.State == build.SSHPending && !b.Status.Done() {
		select {
		case <-ch:
		case <-deadline:
			writeError(w, http.StatusTooEarly, fmt.Sprintf("build %d's machine is not ready for SSH yet (%s): try again in a few seconds", b.ID, b.Status))
			return nil
		case <-r.Context().Done():
			return nil
		}
		nb, err := s.cfg.Store.Build(r.Context(), b.ID)
		if err != nil {
			s.internal(w, "read build", err)
			return nil
		}
		*b = *nb
	}
	if b.Status.Done() || b.SSH.State == build.SSHClosed {
		msg := fmt.Sprintf("build %d has ended (%s): its SSH access is closed", b.ID, b.Status)
		if !b.Status.Done() && b.SSH.ClosedReason != "" {
			msg = b.SSH.ClosedReason
		}
		writeError(w, http.StatusGone, msg)
		return nil
	}
	cred, err := s.cfg.SSH.Store.GetBuildSSH(r.Context(), b.ID)
	if err != nil || cred.PrivateKey == nil {
		writeError(w, http.StatusGone, fmt.Sprintf("build %d's SSH access is closed", b.ID))
		return nil
	}
	alias := build.Alias(b.ID)
	key, err := s.cfg.SSH.Sealer.Open(cred.PrivateKey, alias)
	if err != nil {
		s.internal(w, "open the build's key", err)
		return nil
	}
	host := s.cfg.SSH.GatewayHost
	if host == "" && !safeHost.MatchString(r.Host) {
		writeError(w, http.StatusBadRequest, "the request's Host header is not a plain host name: set --ssh-public-host on the server")
		return nil
	}
	if host == "" {
		host = r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
	}
	a := &connect.Access{
		Build: b.ID, App: b.App, Alias: alias,
		GatewayHost: host, GatewayPort: s.cfg.SSH.GatewayPort,
		GatewayKey:  string(ssh.MarshalAuthorizedKey(s.cfg.SSH.GatewayKey)),
		BuilderKey:  cred.HostKey,
		PrivateKey:  string(key),
		Certificate: cred.Certificate,
	}
	if b.SSH.ExpiresAt != nil {
		a.ExpiresAt = *b.SSH.ExpiresAt
	}
	return a
}

// record notes a script fetch in the build's events.
func (s *Server) record(r *http.Request, id int64, via, shell string) {
	ev := build.Event{Kind: "ssh_script", Data: map[string]string{"via": via, "remote": r.RemoteAddr, "shell": shell}}
	if t := tokenOf(r); t != nil {
		ev.Data["token"] = t.Name
	}
	if err := s.cfg.SSH.Store.AddEvent(r.Context(), id, ev); err != nil {
		s.log.Error("record event", "err", err)
	}
}

func (s *Server) writeScript(w http.ResponseWriter, r *http.Request, a *connect.Access, via string) {
	shell := r.URL.Query().Get("shell")
	var body string
	switch shell {
	case "", "bash", "sh":
		shell, body = "bash", a.Bash()
	case "powershell", "pwsh":
		shell, body = "powershell", a.PowerShell()
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("shell %q: use bash or powershell", shell))
		return
	}
	s.record(r, a.Build, via, shell)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(body))
}

// sshScript serves GET /api/v1/builds/{id}/ssh/script.
func (s *Server) sshScript(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok || !s.unisolatedSSHAllowed(w, r) {
		return
	}
	if a := s.access(w, r, b); a != nil {
		s.writeScript(w, r, a, "api")
	}
}

// signedScript serves GET /ssh/{id}/{sig}: the one-line command's URL.
func (s *Server) signedScript(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if s.cfg.SSH == nil || err != nil || !hmac.Equal([]byte(r.PathValue("sig")), []byte(s.cfg.SSH.signature(id))) {
		writeError(w, http.StatusNotFound, "no such SSH script: copy the command again from the build")
		return
	}
	b, err := s.cfg.Store.Build(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such SSH script: copy the command again from the build")
		return
	} else if err != nil {
		s.internal(w, "read build", err)
		return
	}
	if a := s.access(w, r, b); a != nil {
		s.writeScript(w, r, a, "url")
	}
}

// sshAccess serves GET /api/v1/builds/{id}/ssh/access.
func (s *Server) sshAccess(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok || !s.unisolatedSSHAllowed(w, r) {
		return
	}
	a := s.access(w, r, b)
	if a == nil {
		return
	}
	s.record(r, b.ID, "cli", "ssh_config")
	f := a.Files()
	writeJSON(w, http.StatusOK, api.SSHAccess{
		Alias: a.Alias, Gateway: a.GatewayAddr(), Key: f.Key, Cert: f.Cert, KnownHosts: f.KnownHosts,
		Config: a.Config("@DIR@"), ExpiresAt: a.ExpiresAt,
	})
}

// buildEvents serves GET /api/v1/builds/{id}/events.
func (s *Server) buildEvents(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	if s.cfg.SSH == nil {
		writeJSON(w, http.StatusOK, []build.Event{})
		return
	}
	evs, err := s.cfg.SSH.Store.Events(r.Context(), b.ID)
	if err != nil {
		s.internal(w, "read events", err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}
