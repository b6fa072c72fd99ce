package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
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
	// URLKey authenticates the one-line command's URLs (see oneline.go).
	URLKey []byte
	// Now is the clock of URL expiry; nil: time.Now.
	Now func() time.Time
	// GatewayHost is the gateway's host name as users reach it; empty:
	// the host name of the API request.
	GatewayHost string
	GatewayPort int
	// GatewayKey is the in-process gateway's host key (nil with separate
	// gateways); GatewayCA the host CA that signs every gateway's host
	// certificate (nil: GatewayKey alone is pinned).
	GatewayKey ssh.PublicKey
	GatewayCA  ssh.PublicKey
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
	URLNonce(ctx context.Context, id int64) ([]byte, error)
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

// present fills what a build shows only to those allowed to see it.
func (s *Server) present(r *http.Request, b *build.Build) *build.Build {
	b.Status = b.ShownStatus()
	if b.SSH.Sessions == nil {
		b.SSH.Sessions = []build.SSHSession{}
	}
	hostOK := s.cfg.SSH != nil && (s.cfg.SSH.PublicURL != "" || safeHost.MatchString(r.Host))
	// The one-line command is a credential: only for a token that may
	// have SSH access to the build (see sshAllowed).
	if b.SSH.Enabled && hostOK && s.maySSH(r) && !b.Status.Done() && b.SSH.State != build.SSHClosed {
		url, exp, err := s.oneLineURL(r, b)
		if err != nil {
			// The build shows without its command; the CLI's hangar ssh
			// and the script endpoint still work.
			s.log.Error("make the one-line SSH command", "build", b.ID, "err", err)
		} else if url != "" {
			b.SSH.Command = connect.OneLiner(url)
			b.SSH.PowerShell = connect.PowerShellOneLiner(url)
			b.SSH.CommandExpiresAt = &exp
		}
	}
	return b
}

// maySSH reports whether the request's token may have SSH access to the
// builds it may use (the caller checks the app): not a token made without
// SSH (--no-ssh), and, since a shell on a machine that is not isolated (the
// host driver) is a shell as the server's own user next to its data, only
// an admin token on such a server.
func (s *Server) maySSH(r *http.Request) bool {
	t := tokenOf(r)
	return t != nil && !t.NoSSH && (s.cfg.Isolated || t.Admin)
}

// sshAllowed writes a 403 unless the request's token may have SSH access
// (maySSH).
func (s *Server) sshAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.maySSH(r) {
		return true
	}
	if t := tokenOf(r); t != nil && t.NoSSH {
		writeError(w, http.StatusForbidden, fmt.Sprintf("your API token (%s) was made without SSH access: ask an admin for a token without --no-ssh", t.Name))
		return false
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
		GatewayKey:  authorizedKey(s.cfg.SSH.GatewayKey),
		GatewayCA:   authorizedKey(s.cfg.SSH.GatewayCA),
		BuilderKey:  cred.HostKey,
		PrivateKey:  string(key),
		Certificate: cred.Certificate,
	}
	if b.SSH.ExpiresAt != nil {
		a.ExpiresAt = *b.SSH.ExpiresAt
	}
	return a
}

// writeScript writes a's script in the shell the request asks for; g is
// the one-line URL's grant, nil for the API.
func (s *Server) writeScript(w http.ResponseWriter, r *http.Request, a *connect.Access, via string, g *grant) {
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
	s.recordFetch(r.Context(), r, a.Build, "ssh_script", map[string]string{"via": via, "shell": shell}, g)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(body))
}

// sshScript serves GET /api/v1/builds/{id}/ssh/script.
func (s *Server) sshScript(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok || !s.sshAllowed(w, r) {
		return
	}
	if a := s.access(w, r, b); a != nil {
		s.writeScript(w, r, a, "api", nil)
	}
}

// sshAccess serves GET /api/v1/builds/{id}/ssh/access.
func (s *Server) sshAccess(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok || !s.sshAllowed(w, r) {
		return
	}
	a := s.access(w, r, b)
	if a == nil {
		return
	}
	s.recordFetch(r.Context(), r, b.ID, "ssh_script", map[string]string{"via": "cli", "shell": "ssh_config"}, nil)
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

// authorizedKey is k in authorized_keys format, "" for nil.
func authorizedKey(k ssh.PublicKey) string {
	if k == nil {
		return ""
	}
	return string(ssh.MarshalAuthorizedKey(k))
}
