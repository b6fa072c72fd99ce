package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// A browser terminal is an SSH client inside the server: it reaches the
// build's machine through the gateway exactly like the user's OpenSSH
// (ProxyJump, the build's certificate, pinned host keys, the same rules),
// opens a login shell, and relays it over a WebSocket. The browser never
// sees the key. Like any SSH client's, the terminal's login re-attaches to
// the most recently detached shell, so a shell started in a terminal can be
// continued here and the other way round. Only the terminal's close button
// ends the shell (a logout: the browser sends "logout", the shell gets
// SIGHUP); a closed tab or a lost WebSocket only detaches it.

// terminalTicketTTL is how long a terminal ticket is valid: a
// single-use permission to open a terminal WebSocket (browsers cannot set
// headers on WebSockets), kept in the store so that any replica takes
// it.
const terminalTicketTTL = 30 * time.Second

// terminalTicket serves POST /api/v1/builds/{id}/terminal.
func (s *Server) terminalTicket(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok || !s.sshAllowed(w, r) {
		return
	}
	if s.cfg.SSH == nil || !b.SSH.Enabled {
		writeError(w, http.StatusConflict, fmt.Sprintf("build %d was started without SSH access", b.ID))
		return
	}
	if b.Status.Done() || b.SSH.State == build.SSHClosed {
		writeError(w, http.StatusGone, fmt.Sprintf("build %d's SSH access is closed", b.ID))
		return
	}
	user := ""
	if t := tokenOf(r); t != nil {
		user = t.Name
	}
	var tb [24]byte
	_, _ = rand.Read(tb[:])
	id := hex.EncodeToString(tb[:])
	if err := s.cfg.Store.AddTicket(r.Context(), store.TicketTerminal, id, b.ID, user, time.Now().Add(terminalTicketTTL)); err != nil {
		s.internal(w, "issue a terminal ticket", err)
		return
	}
	writeJSON(w, http.StatusCreated, api.TerminalTicket{URL: fmt.Sprintf("/api/v1/builds/%d/terminal/ws?ticket=%s", b.ID, id)})
}

// terminalMessage is what the browser sends.
type terminalMessage struct {
	Type string `json:"type"` // "input", "resize" or "logout"
	Data string `json:"data,omitempty"`
	Cols int    `json:"cols,omitempty"`
	Rows int    `json:"rows,omitempty"`
}

// terminalWS serves GET /api/v1/builds/{id}/terminal/ws?ticket=T.
func (s *Server) terminalWS(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "not a build id")
		return
	}
	tid, user, err := s.cfg.Store.TakeTicket(r.Context(), store.TicketTerminal, r.URL.Query().Get("ticket"))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internal(w, "take a terminal ticket", err)
		return
	}
	if err != nil || tid != id {
		writeError(w, http.StatusUnauthorized, "this terminal link has expired: open the terminal again")
		return
	}
	b, err := s.cfg.Store.Build(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no build %d", id))
		return
	}
	a := s.access(w, r, b)
	if a == nil {
		return
	}
	ws, err := websocket.Accept(w, r, nil) // same-origin only
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := build.Event{Kind: "ssh_script", Data: map[string]string{"via": "browser", "remote": r.RemoteAddr, "token": user}}
	_ = s.cfg.SSH.Store.AddEvent(ctx, id, ev)
	cols, rows := termSize(r.URL.Query().Get("cols"), r.URL.Query().Get("rows"))
	if err := s.relay(ctx, ws, a.Alias, []byte(a.PrivateKey), a.Certificate, a.BuilderKey, cols, rows); err != nil {
		s.log.Info("browser terminal ended", "build", id, "err", err)
		_ = ws.Close(websocket.StatusNormalClosure, truncate(err.Error(), 120))
		return
	}
	_ = ws.Close(websocket.StatusNormalClosure, "the shell ended")
}

// termSize reads the browser's terminal size (80 x 24 when absent or out of
// range).
func termSize(cols, rows string) (int, int) {
	c, err1 := strconv.Atoi(cols)
	r, err2 := strconv.Atoi(rows)
	if err1 != nil || err2 != nil || !validSize(c, r) {
		return 80, 24
	}
	return c, r
}

func validSize(cols, rows int) bool { return cols > 0 && rows > 0 && cols < 1000 && rows < 1000 }

// logoutGrace is how long a shell has to exit after SIGHUP when the
// browser's close button ends it; then it is killed.
const logoutGrace = 5 * time.Second

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// relay runs a login shell on the build's machine through the gateway and
// copies it to and from the WebSocket.
func (s *Server) relay(ctx context.Context, ws *websocket.Conn, alias string, keyPEM []byte, certLine, builderKeyLine string, cols, rows int) error {
	cfg := s.cfg.SSH
	key, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return errors.New("the build's key is unreadable")
	}
	certPub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(certLine))
	if err != nil {
		return errors.New("the build's certificate is unreadable")
	}
	cert, ok := certPub.(*ssh.Certificate)
	if !ok {
		return errors.New("the build's certificate is unreadable")
	}
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return err
	}
	builderKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(builderKeyLine))
	if err != nil {
		return errors.New("the machine's host key is unreadable")
	}
	gw, err := ssh.Dial("tcp", cfg.GatewayDialAddr, &ssh.ClientConfig{
		User: alias, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: gatewayHostKey(cfg), Timeout: 10 * time.Second,
		ClientVersion: "SSH-2.0-Hangar_browser_terminal",
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer gw.Close()
	nc, err := gw.Dial("tcp", net.JoinHostPort(alias, "22"))
	if err != nil {
		return fmt.Errorf("reach %s: %w", alias, err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, alias, &ssh.ClientConfig{
		User: "builder", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(builderKey), Timeout: 10 * time.Second,
		ClientVersion: "SSH-2.0-Hangar_browser_terminal",
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("%s: %w", alias, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm-256color", rows, cols, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		return err
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	sess.Stderr = nil
	if err := sess.Shell(); err != nil {
		return err
	}
	// Machine -> browser.
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				if werr := ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					sess.Close()
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Browser -> machine. The browser going away only detaches the shell
	// (the connection closes); "logout" ends it.
	go func() {
		defer sess.Close()
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m terminalMessage
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			switch m.Type {
			case "input":
				if _, err := stdin.Write([]byte(m.Data)); err != nil {
					return
				}
			case "resize":
				if validSize(m.Cols, m.Rows) {
					_ = sess.WindowChange(m.Rows, m.Cols)
				}
			case "logout":
				// Deliberate: the shell is hung up, as when a terminal
				// window is closed, and killed if it stays.
				_ = sess.Signal(ssh.SIGHUP)
				t := time.AfterFunc(logoutGrace, func() { _ = sess.Signal(ssh.SIGKILL) })
				defer t.Stop()
			}
		}
	}()
	err = sess.Wait()
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	if errors.As(err, &ee) || errors.As(err, &missing) {
		return nil
	}
	return err
}

// gatewayHostKey accepts the gateway's own host key, or a host
// certificate of the host CA (any of several gateways).
func gatewayHostKey(cfg *SSHConfig) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		if cfg.GatewayKey != nil && ssh.FixedHostKey(cfg.GatewayKey)(host, remote, key) == nil {
			return nil
		}
		if cfg.GatewayCA != nil {
			return sshca.CheckHostCert(cfg.GatewayCA, sshca.GatewayPrincipal, key)
		}
		return errors.New("the gateway's host key is not the expected one")
	}
}
