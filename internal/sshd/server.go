// Package sshd is the SSH server that runs inside a build machine: users'
// OpenSSH clients reach it through the builder's reverse tunnel and get
// shells, commands, SFTP/scp/rsync, agent forwarding and `ssh -L` port
// forwarding there, running as the build's user.
//
// The caller decides who may log in (host key, accepted keys and
// certificates) through the ssh.ServerConfig it sets in Server.Config; this
// package decides what an authenticated user may do, and refuses everything
// it does not know.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/sshalgo"
)

// Defaults used when the corresponding Server field is zero.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultMaxConns         = 64
)

// ErrServerClosed is returned by Serve after CloseAll, Close or Shutdown.
var ErrServerClosed = errors.New("sshd: server closed")

// Server serves SSH connections. Set its fields before the first call to
// ServeConn or Serve and do not change them afterwards. The zero value
// refuses every connection (Config is nil).
type Server struct {
	// Config holds the host key and the authentication callbacks. nil
	// refuses every connection. Its algorithm lists that are empty (key
	// exchanges, ciphers, MACs, user key algorithms) are Hangar's
	// (package sshalgo), not x/crypto's defaults.
	Config *ssh.ServerConfig
	// Credential is who sessions run as (uid, gid, supplementary groups);
	// nil: the server's own user.
	Credential *syscall.Credential
	// Home is HOME of sessions; empty: the user's home from the password
	// database, else "/".
	Home string
	// Env returns the base environment of a new session (KEY=VALUE); it is
	// called once per session. The server sets HOME, USER, LOGNAME, SHELL,
	// TERM, SSH_CONNECTION, SSH_CLIENT, SSH_TTY and SSH_AUTH_SOCK over it,
	// and adds PATH when it has none.
	Env func() []string
	// Dir returns the starting directory of sessions (shells, commands and
	// SFTP); Home when nil, empty or not an existing directory.
	Dir func() string
	// SFTPCommand is the argv that serves SFTP on its stdin and stdout (see
	// ServeSFTP), e.g. {"/proc/self/exe", "builder-sftp"}. It runs like any
	// session command, as Credential. Empty: the sftp subsystem is refused.
	SFTPCommand []string
	// Banner, when set, returns the text a new login shell's terminal shows
	// before the shell's own output, as sshd shows /etc/motd (lines end with
	// "\n"; empty: nothing). It is called once per new login shell, not
	// when a client re-attaches to one (its screen is restored instead),
	// nor for commands, scp or sftp.
	Banner func() string
	// Events, when set, is called for connection, channel and login events.
	// It is called synchronously from connection goroutines: it must not
	// block for long.
	Events func(Event)
	// HandshakeTimeout bounds the SSH handshake including authentication;
	// zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that has carried no bytes in either
	// direction for that long; zero means never.
	IdleTimeout time.Duration
	// MaxConns bounds concurrent connections, handshakes included; further
	// ones are closed at once. Zero means DefaultMaxConns.
	MaxConns int

	nextID atomic.Uint64
	logins atomic.Int64

	// life holds the listeners and the connections (each until ServeConn
	// returns) and bounds them by MaxConns.
	life netx.Tracker

	mu        sync.Mutex
	conns     map[*conn]struct{} // guarded by mu: connections past the handshake's start, for Notice
	sids      map[int]bool       // guarded by mu: the sessions of the processes started, ended when the server closes
	closed    bool               // guarded by mu: the sessions have been ended; later ones are ended at once
	shells    map[int]*shell     // guarded by mu: running login shells by number
	nextShell int                // guarded by mu: the last shell number given
	shellsWG  sync.WaitGroup     // the shells' goroutines
}

// Event kinds.
const (
	EventConnect     = "connect"      // handshake and authentication done; Detail: user and remote address
	EventDisconnect  = "disconnect"   // an authenticated connection ended; Detail: why
	EventReject      = "reject"       // a connection was refused or failed its handshake; Detail: why
	EventChannel     = "channel"      // Detail: "session", "direct-tcpip HOST:PORT", "exec: CMD", "subsystem: sftp", "shell", or a refused request
	EventLoginStart  = "login_start"  // a login shell (pty + shell) started; Detail: its pid and number
	EventLoginEnd    = "login_end"    // a login shell's process ended; Detail: its pid and how it ended
	EventLoginDetach = "login_detach" // a login shell's client went away; the shell runs on; Detail: its pid and number
	EventLoginAttach = "login_attach" // a client re-attached to a running login shell; Detail: its pid and number
	EventError       = "error"        // a session could not be set up; Detail: the error (not shown to the user)
)

// Event is something that happened on a connection, for logs and for the
// caller's access rules (see EventLoginStart).
type Event struct {
	Kind   string
	Conn   uint64 // connection number, unique within this Server
	Detail string
	Time   time.Time
}

func (s *Server) emit(id uint64, kind, detail string) {
	if s.Events != nil {
		s.Events(Event{Kind: kind, Conn: id, Detail: detail, Time: time.Now()})
	}
}

// LoginShells returns how many login shells (sessions with a pty that asked
// for a shell) are running now, attached or detached.
func (s *Server) LoginShells() int { return int(s.logins.Load()) }

// Serve accepts connections on l and serves each with ServeConn in its own
// goroutine. It returns ErrServerClosed after CloseAll, Close or Shutdown,
// otherwise the error of Accept. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	return s.life.Serve(l, ErrServerClosed, func(nc net.Conn) {
		id := s.nextID.Add(1)
		release, err := s.track(nc)
		if err != nil {
			nc.Close()
			s.emit(id, EventReject, s.refusal(err))
			return
		}
		go func() {
			defer release()
			s.serveConn(nc, id)
		}()
	})
}

// ServeConn runs the SSH handshake on nc (bounded by HandshakeTimeout) and
// serves the connection until it closes; then it ends the connection's
// processes and returns. It always closes nc. It may be called from many
// goroutines at once.
func (s *Server) ServeConn(nc net.Conn) {
	id := s.nextID.Add(1)
	release, err := s.track(nc)
	if err != nil {
		nc.Close()
		s.emit(id, EventReject, s.refusal(err))
		return
	}
	defer release()
	s.serveConn(nc, id)
}

// track registers nc with the lifecycle, within MaxConns.
func (s *Server) track(nc net.Conn) (func(), error) {
	return s.life.Track(nc, s.maxConns())
}

func (s *Server) maxConns() int {
	if s.MaxConns <= 0 {
		return DefaultMaxConns
	}
	return s.MaxConns
}

// refusal is what the reject event says of a refused connection.
func (s *Server) refusal(err error) string {
	if errors.Is(err, netx.ErrTooManyConns) {
		return fmt.Sprintf("too many connections (%d)", s.maxConns())
	}
	return "server closed"
}

// serveConn serves nc, a tracked connection.
func (s *Server) serveConn(nc net.Conn, id uint64) {
	c := &conn{srv: s, id: id, nc: nc, done: make(chan struct{})}
	defer close(c.done)
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	var tc net.Conn = nc
	if s.IdleTimeout > 0 {
		tc = netx.NewIdleConn(nc, s.IdleTimeout)
	}
	defer tc.Close()
	if s.Config == nil {
		s.emit(c.id, EventReject, "no server config")
		return
	}
	timeout := s.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	// x/crypto/ssh has no context for the handshake, and nc may not support
	// deadlines (it can be a tunnelled channel): close it when time is up.
	timer := time.AfterFunc(timeout, func() { nc.Close() })
	cfg := withAlgorithms(s.Config)
	sc, chans, reqs, err := ssh.NewServerConn(tc, cfg)
	if !timer.Stop() {
		if sc != nil {
			sc.Close()
		}
		s.emit(c.id, EventReject, "handshake timed out")
		return
	}
	if err != nil {
		s.emit(c.id, EventReject, "handshake: "+err.Error())
		return
	}
	c.sc = sc
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s.emit(c.id, EventConnect, fmt.Sprintf("user %q from %s", sc.User(), nc.RemoteAddr()))

	// Global requests (tcpip-forward, i.e. ssh -R; keepalives) get "no".
	c.goTracked(func() { ssh.DiscardRequests(reqs) })
	for nch := range chans {
		c.handleChannel(nch)
	}
	// The connection is gone: end everything that belongs to it.
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.cancel()
	sc.Close()
	werr := sc.Wait()
	c.wg.Wait()
	c.killStragglers()
	why := "closed"
	if werr != nil && !errors.Is(werr, net.ErrClosed) {
		why = werr.Error()
	}
	s.emit(c.id, EventDisconnect, why)
}

// withAlgorithms returns cfg, or a copy whose empty algorithm lists are
// Hangar's.
func withAlgorithms(cfg *ssh.ServerConfig) *ssh.ServerConfig {
	if len(cfg.KeyExchanges) > 0 && len(cfg.Ciphers) > 0 && len(cfg.MACs) > 0 && len(cfg.PublicKeyAuthAlgorithms) > 0 {
		return cfg
	}
	var algos ssh.ServerConfig
	sshalgo.Server(&algos)
	or := func(have, def []string) []string {
		if len(have) > 0 {
			return have
		}
		return def
	}
	c := *cfg
	c.KeyExchanges = or(c.KeyExchanges, algos.KeyExchanges)
	c.Ciphers = or(c.Ciphers, algos.Ciphers)
	c.MACs = or(c.MACs, algos.MACs)
	c.PublicKeyAuthAlgorithms = or(c.PublicKeyAuthAlgorithms, algos.PublicKeyAuthAlgorithms)
	return &c
}

// noticeTimeout bounds how long Notice and CloseAll wait for slow clients.
const noticeTimeout = 2 * time.Second

// Notice writes "*** msg ***" on a line of its own to every running login
// shell (on its screen too when it is detached, so a client that
// re-attaches sees it) and every `ssh -t` command. It waits at most a
// couple of seconds for clients that do not read.
func (s *Server) Notice(msg string) {
	s.notify(s.snapshot(), msg, false)
}

// CloseAll revokes access: it stops accepting (closes the listeners given
// to Serve), writes msg (as Notice does, unless empty; and on the standard
// error of commands without a terminal, scp and sftp), then closes every
// connection, and ends every process that sessions started: login shells,
// attached or detached, commands, and what they left running (`nohup cmd
// &`), with their descendants. Later ServeConn calls refuse their
// connection at once. CloseAll returns once those processes are gone (a few
// seconds at most); it does not wait for the connections' goroutines.
func (s *Server) CloseAll(msg string) {
	_ = s.life.CloseListeners()
	if msg != "" {
		s.notify(s.snapshot(), msg, true)
	}
	_ = s.life.Close()
	s.endAll()
}

// Close is CloseAll without a message: it closes the listeners and every
// connection now, and ends every process that sessions started.
func (s *Server) Close() error {
	err := s.life.Close()
	s.endAll()
	return err
}

// Shutdown stops accepting connections, then waits until every connection
// has ended by itself and ServeConn has returned for it, or ctx ends: then
// it closes the rest and returns ctx's error. Either way it then ends every
// process that sessions started (detached login shells included).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.life.Shutdown(ctx)
	s.endAll()
	return err
}

// snapshot returns the open connections.
func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// notify writes msg to every login shell and pty session, and with stderr
// to the standard error of the other sessions that run a process.
func (s *Server) notify(conns []*conn, msg string, stderr bool) {
	text := []byte("\r\n*** " + msg + " ***\r\n")
	line := []byte(msg + "\n")
	done := make(chan struct{})
	var wg sync.WaitGroup
	// A write blocks while the client's window is full; it ends at the
	// latest when the connection closes.
	for _, sh := range s.shellList() {
		wg.Go(func() { sh.notice(text) })
	}
	for _, c := range conns {
		pty, other := c.runningSessions()
		for _, s := range pty {
			wg.Go(func() { s.notice(text) })
		}
		if stderr {
			for _, s := range other {
				wg.Go(func() { s.noticeStderr(line) })
			}
		}
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(noticeTimeout):
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	// Set once the handshake is done, before any channel is handled.
	sc     *ssh.ServerConn
	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	wg   sync.WaitGroup // goroutines of this connection (see goTracked)
	done chan struct{}  // closed when serveConn has returned

	mu         sync.Mutex
	closing    bool                  // guarded by mu: no new goroutines
	channels   int                   // guarded by mu: open session and direct-tcpip channels
	sessions   map[*session]struct{} // guarded by mu
	stragglers []int                 // guarded by mu: process groups that outlived their session
}

// goTracked runs f in a goroutine that ServeConn waits for, unless the
// connection is already being torn down.
func (c *conn) goTracked(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

func (c *conn) addSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions == nil {
		c.sessions = make(map[*session]struct{})
	}
	c.sessions[s] = struct{}{}
}

func (c *conn) removeSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, s)
}

// runningSessions returns this connection's sessions whose process runs,
// those on a pty and the others (login shells are the server's, not
// these).
func (c *conn) runningSessions() (pty, other []*session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.sessions {
		switch running, onPTY := s.running(); {
		case running && onPTY:
			pty = append(pty, s)
		case running:
			other = append(other, s)
		}
	}
	return pty, other
}

// maxChannels bounds the open session and direct-tcpip channels of one
// connection.
const maxChannels = 64

func (c *conn) handleChannel(nch ssh.NewChannel) {
	switch t := nch.ChannelType(); t {
	case "session", "direct-tcpip":
		handle := c.handleSession
		if t == "direct-tcpip" {
			handle = c.handleDirectTCPIP
		}
		c.mu.Lock()
		full := c.channels >= maxChannels
		if !full {
			c.channels++
		}
		c.mu.Unlock()
		if full {
			_ = nch.Reject(ssh.ResourceShortage, "too many channels on this connection")
			return
		}
		release := func() {
			c.mu.Lock()
			c.channels--
			c.mu.Unlock()
		}
		if !c.goTracked(func() { defer release(); handle(nch) }) {
			release()
			_ = nch.Reject(ssh.ResourceShortage, "connection closing")
		}
	case "x11", "forwarded-tcpip", "direct-streamlocal@openssh.com", "forwarded-streamlocal@openssh.com", "tun@openssh.com":
		c.srv.emit(c.id, EventChannel, t+" (refused)")
		_ = nch.Reject(ssh.Prohibited, t+" channels are not allowed on this server")
	default:
		c.srv.emit(c.id, EventChannel, t+" (refused)")
		_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type "+t)
	}
}
