package link

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/sshalgo"
)

// HandshakeTimeout bounds a builder's TCP accept to an authenticated control
// channel.
const HandshakeTimeout = 10 * time.Second

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("link: server closed")

// Tunnels takes builders' reverse forwards (the tunnels of SSH builds).
type Tunnels interface {
	// Bind makes conn the route to alias and returns a func that unbinds it.
	Bind(alias string, conn ssh.Conn) (func(), error)
	// Deliver hands over a data connection a builder opened for token (see
	// DataPrefix); it reports whether token was expected. It owns c then.
	Deliver(token string, c net.Conn) bool
}

// DataPrefix starts a data connection: a builder asked for one (request
// DialRequest on its tunnel, with a one-time token) dials the link address
// and writes DataPrefix, the token and a newline; what follows is a user's
// SSH session with the builder, already encrypted end to end, so it needs
// no second layer of SSH.
const DataPrefix = "HANGAR-DATA "

// DialRequest is the global request by which the gateway asks a builder,
// over its tunnel, for a data connection. Its payload is the token.
const DialRequest = "hangar-dial@hangar"

// MaxConnsPerBuild bounds a builder's simultaneous connections (its control
// link and its tunnel, with room for reconnects).
const MaxConnsPerBuild = 4

// Server accepts builders' links. Its zero value is not usable: set HostKey.
type Server struct {
	HostKey ssh.Signer
	Logger  *slog.Logger
	// HandshakeTimeout bounds TCP accept to authenticated (default
	// HandshakeTimeout).
	HandshakeTimeout time.Duration
	// Tunnels, if set, takes "tcpip-forward" requests: a builder may bind
	// only the alias it authenticated as. Without it they are refused.
	Tunnels Tunnels

	// life holds the listeners and connections: a connection is tracked
	// until its goroutine (and the goroutines it started) ends.
	life netx.Tracker
	// perSource counts open connections by source (see MaxConnsPerSource).
	perSource netx.SourceLimit

	mu     sync.Mutex
	expect map[string]*Expectation // guarded by mu
}

// MaxConnsPerSource bounds a source's open connections, authenticated or
// not (its control link, its tunnel and one data connection per user
// session): a machine cannot starve the others' links. Loopback is exempt: every
// machine of the host driver comes from there.
const MaxConnsPerSource = 64

// Expectation is a build the server is waiting for.
type Expectation struct {
	srv  *Server
	name string
	key  []byte
	ch   chan *Conn

	// guarded by srv.mu
	closed bool
	conns  int   // live connections
	conn   *Conn // the control link, once up
}

// Expect admits one link for name, authenticated by key.
func (s *Server) Expect(name string, key ssh.PublicKey) (*Expectation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.Closed() {
		return nil, ErrServerClosed
	}
	if s.expect == nil {
		s.expect = make(map[string]*Expectation)
	}
	if _, ok := s.expect[name]; ok {
		return nil, fmt.Errorf("link: %s is already expected", name)
	}
	e := &Expectation{srv: s, name: name, key: key.Marshal(), ch: make(chan *Conn, 1)}
	s.expect[name] = e
	return e, nil
}

// Conn delivers the builder's link once it is up.
func (e *Expectation) Conn() <-chan *Conn { return e.ch }

// Close stops admitting the build and closes its link if it is up.
func (e *Expectation) Close() {
	s := e.srv
	s.mu.Lock()
	if s.expect[e.name] == e {
		delete(s.expect, e.name)
	}
	c := e.conn
	e.closed = true
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts links on l until Close or Shutdown; then it returns
// ErrServerClosed. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	if err := sshalgo.CheckHostKey(s.HostKey); err != nil {
		l.Close()
		return fmt.Errorf("link: %w", err)
	}
	return s.life.Serve(l, ErrServerClosed, func(nc net.Conn) {
		limit := MaxConnsPerSource
		if netx.IsLoopback(nc.RemoteAddr()) {
			limit = 0
		}
		release, ok := s.perSource.Acquire(nc.RemoteAddr(), limit)
		if !ok {
			nc.Close()
			return
		}
		if err := s.life.Go(nc, 0, func(nc net.Conn) {
			defer release()
			s.handle(nc)
		}); err != nil {
			release()
		}
	})
}

// Close stops all listeners and closes every link now.
func (s *Server) Close() error {
	return s.life.Close()
}

// Shutdown stops accepting links, then waits until every connection is
// closed (the runner closes builds' links as it destroys their machines)
// and the goroutines serving them have returned, or ctx ends: then it
// closes the rest and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.life.Shutdown(ctx)
}

func (s *Server) config() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			e := s.expect[meta.User()]
			if e == nil || e.closed || e.conns >= MaxConnsPerBuild || !bytes.Equal(e.key, key.Marshal()) {
				return nil, errors.New("not authorized")
			}
			return &ssh.Permissions{}, nil
		},
		MaxAuthTries: 3,
	}
	sshalgo.Server(cfg)
	cfg.AddHostKey(s.HostKey) // Serve checked it
	return cfg
}

func (s *Server) handle(nc net.Conn) {
	log := s.logger().With("remote", nc.RemoteAddr().String())
	timeout := s.HandshakeTimeout
	if timeout <= 0 {
		timeout = HandshakeTimeout
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	// A data connection, or SSH? Both clients speak first.
	br := bufio.NewReaderSize(nc, 256)
	if head, err := br.Peek(len(DataPrefix)); err == nil && string(head) == DataPrefix {
		s.data(nc, br)
		return
	}
	sc, chans, reqs, err := ssh.NewServerConn(&peekedConn{Conn: nc, r: br}, s.config())
	if err != nil {
		log.Debug("link handshake failed", "err", err)
		nc.Close()
		return
	}
	// Authenticated: the connection lives as long as the build (a tunnel
	// connection opens no channel of its own).
	_ = nc.SetDeadline(time.Time{})
	name := sc.User()

	s.mu.Lock()
	e := s.expect[name]
	if e == nil || e.closed || e.conns >= MaxConnsPerBuild {
		s.mu.Unlock()
		sc.Close()
		return
	}
	e.conns++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		e.conns--
		s.mu.Unlock()
	}()
	reqsDone := make(chan struct{})
	go func() {
		defer close(reqsDone)
		s.globalRequests(sc, reqs, log)
	}()
	// The connection's goroutines end with it: Shutdown waits for them.
	defer func() { <-reqsDone }()

	var c *Conn
	for nch := range chans {
		if nch.ChannelType() == FileChannel && c != nil {
			c.offerFile(nch)
			continue
		}
		if nch.ChannelType() != ControlChannel || c != nil {
			_ = nch.Reject(ssh.Prohibited, "only one "+ControlChannel+" channel is allowed")
			continue
		}
		s.mu.Lock()
		taken := e.conn != nil
		s.mu.Unlock()
		if taken {
			_ = nch.Reject(ssh.Prohibited, "the build's control link is up already")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			break
		}
		go ssh.DiscardRequests(creqs)
		c = newConn(sc, ch)
		s.mu.Lock()
		if e.conn != nil || s.expect[name] != e {
			s.mu.Unlock()
			c.Close()
			break
		}
		e.conn = c
		s.mu.Unlock()
		e.ch <- c
		log.Debug("builder linked", "build", name)
	}
	sc.Close()
	if c != nil {
		c.Close()
	}
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection when the underlying one can.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// data takes a builder's data connection and hands it to Tunnels.
func (s *Server) data(nc net.Conn, br *bufio.Reader) {
	line, err := br.ReadSlice('\n')
	token := strings.TrimSpace(strings.TrimPrefix(string(line), DataPrefix))
	if err != nil || s.Tunnels == nil || token == "" {
		nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	// The builder's SSH server may have spoken already: keep what was read.
	if !s.Tunnels.Deliver(token, &peekedConn{Conn: nc, r: br}) {
		nc.Close()
	}
}

// forwardRequest is RFC 4254's tcpip-forward payload.
type forwardRequest struct {
	Addr string
	Port uint32
}

// globalRequests serves a builder's global requests: tcpip-forward of its
// own alias (its SSH tunnel) and nothing else.
func (s *Server) globalRequests(sc *ssh.ServerConn, reqs <-chan *ssh.Request, log *slog.Logger) {
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	for r := range reqs {
		ok := false
		switch r.Type {
		case "tcpip-forward":
			var fr forwardRequest
			if s.Tunnels == nil || ssh.Unmarshal(r.Payload, &fr) != nil || fr.Addr != sc.User() || release != nil {
				log.Warn("builder forward refused", "build", sc.User(), "alias", fr.Addr)
				break
			}
			rel, err := s.Tunnels.Bind(fr.Addr, sc)
			if err != nil {
				log.Debug("builder forward refused", "build", sc.User(), "err", err)
				break
			}
			release, ok = rel, true
		case "cancel-tcpip-forward":
			if release != nil {
				release()
				release, ok = nil, true
			}
		}
		if r.WantReply {
			_ = r.Reply(ok, nil)
		}
	}
}

// MaxMessage bounds one message from a builder (a builder is inside the
// build's machine, so it is not trusted with the server's memory).
const MaxMessage = 1 << 20

// Conn is an established link, seen from the runner.
type Conn struct {
	sc *ssh.ServerConn
	ch ssh.Channel
	rd *bufio.Reader
	// decoded is where Recv decodes compressed output (Recv is not safe
	// for concurrent use).
	decoded []byte

	mu  sync.Mutex // guards enc
	enc *json.Encoder

	once sync.Once
	done chan struct{}
	// files are the builder's file channels (see Files).
	files chan *FileRequest
}

func newConn(sc *ssh.ServerConn, ch ssh.Channel) *Conn {
	return &Conn{
		sc:    sc,
		ch:    ch,
		rd:    bufio.NewReaderSize(ch, 64<<10),
		enc:   json.NewEncoder(ch),
		done:  make(chan struct{}),
		files: make(chan *FileRequest),
	}
}

// Send sends a command to the builder.
func (c *Conn) Send(cmd Command) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(cmd)
}

// RemoteAddr is the builder's address.
func (c *Conn) RemoteAddr() net.Addr { return c.sc.RemoteAddr() }

// SendJob sends the job to the builder.
func (c *Conn) SendJob(j *Job) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(j)
}

// Recv returns the builder's next event. It is not safe for concurrent use.
func (c *Conn) Recv() (Event, error) {
	var ev Event
	first, err := c.rd.Peek(1)
	if err != nil {
		return ev, err
	}
	if first[0] == OutputFrame || first[0] == OutputS2Frame {
		return c.recvOutput()
	}
	var line []byte
	for {
		part, err := c.rd.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > MaxMessage {
			return ev, fmt.Errorf("link: the builder sent a message over %d bytes", MaxMessage)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return ev, err
		}
	}
	if err := json.Unmarshal(line, &ev); err != nil {
		return ev, fmt.Errorf("link: malformed message from the builder: %w", err)
	}
	if ev.Type == Output {
		return ev, errors.New("link: the builder sent output as JSON (output travels in frames)")
	}
	return ev, nil
}

// recvOutput reads an output frame; it checks a compressed one and keeps
// the block as it came (Event.S2).
func (c *Conn) recvOutput() (Event, error) {
	frame, err := c.rd.ReadByte()
	if err != nil {
		return Event{}, err
	}
	step, err := binary.ReadUvarint(c.rd)
	if err != nil {
		return Event{}, fmt.Errorf("link: malformed output frame from the builder: %w", err)
	}
	n, err := binary.ReadUvarint(c.rd)
	if err != nil {
		return Event{}, fmt.Errorf("link: malformed output frame from the builder: %w", err)
	}
	if n > MaxMessage || step > 1<<20 {
		return Event{}, fmt.Errorf("link: the builder sent an output frame of %d bytes for step %d (at most %d bytes)", n, step, MaxMessage)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.rd, data); err != nil {
		return Event{}, err
	}
	ev := Event{Type: Output, Step: int(step), Data: data, Time: time.Now()}
	if frame == OutputS2Frame {
		size, err := s2.DecodedLen(data)
		if err != nil || size > MaxMessage {
			return Event{}, fmt.Errorf("link: the builder sent a compressed output frame that does not decode to at most %d bytes", MaxMessage)
		}
		// Decoded into a buffer kept for the next frame: what the runner
		// needs of lines that need no work is their number.
		if cap(c.decoded) < size {
			c.decoded = make([]byte, size)
		}
		d, err := s2.Decode(c.decoded[:size], data)
		if err != nil {
			return Event{}, fmt.Errorf("link: the builder sent a compressed output frame that does not decode: %w", err)
		}
		ev.S2, ev.Data = data, nil
		if ev.Lines = WholeLines(d); ev.Lines > 0 {
			ev.Size = len(d)
		} else {
			ev.Data = bytes.Clone(d)
		}
	}
	return ev, nil
}

// Done is closed when the link is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close closes the link.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.ch.Close()
		c.sc.Close()
		close(c.done)
	})
	return nil
}
