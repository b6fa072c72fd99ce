package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshca"
)

// Tunnel keeps an SSH build's reverse tunnel up: a connection to the link
// address that asks for a forward of alias port 22 and hands each user
// connection that arrives through it to Serve. It redials with backoff
// when the connection drops, until ctx ends.
type Tunnel struct {
	Hello *Hello
	Alias string
	// Serve handles one user connection (the builder's SSH server).
	Serve func(net.Conn)
	// State, if set, is told when the tunnel goes up (true) or down.
	State func(up bool, err error)
	// Keepalive is how often a tunnel to the gateways (Hello.Gateway)
	// checks that its gateway answers (default KeepaliveInterval).
	Keepalive time.Duration
}

// Run keeps the tunnel up until ctx ends.
func (t *Tunnel) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := t.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if t.State != nil {
			t.State(false, err)
		}
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// once holds one tunnel connection until it drops.
func (t *Tunnel) once(ctx context.Context) error {
	dial := dialSSH
	if t.Hello.Gateway != "" {
		dial = t.dialGateway
	}
	nc, sc, chans, reqs, err := dial(ctx, t.Hello)
	if err != nil {
		return err
	}
	defer nc.Close()
	go t.dialRequests(ctx, reqs)
	stop := context.AfterFunc(ctx, func() { sc.Close() })
	defer stop()
	if t.Hello.Gateway != "" {
		every := t.Keepalive
		if every <= 0 {
			every = KeepaliveInterval
		}
		go keepalive(ctx, sc, every)
	}
	ok, _, err := sc.SendRequest("tcpip-forward", true, ssh.Marshal(&forwardRequest{Addr: t.Alias, Port: 22}))
	if err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	if !ok {
		sc.Close()
		return errors.New("tunnel: the gateway refused the forward")
	}
	if t.State != nil {
		t.State(true, nil)
	}
	var wg sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "forwarded-tcpip" {
			_ = nch.Reject(ssh.UnknownChannelType, "not accepted")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go ssh.DiscardRequests(creqs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Serve(newChanConn(ch, nc))
		}()
	}
	wg.Wait()
	return errors.New("tunnel: connection closed")
}

// KeepaliveInterval is how often a tunnel to the gateways checks that
// its gateway answers; one that does not answer within the interval is
// given up for another.
const KeepaliveInterval = 15 * time.Second

// keepalive checks that sc's peer answers, every interval, and closes sc
// when it does not answer within the interval, until sc or ctx ends. The
// checks also keep the gateway from closing the tunnel as idle.
func keepalive(ctx context.Context, sc ssh.Conn, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := time.AfterFunc(every, func() { sc.Close() })
		_, _, err := sc.SendRequest("keepalive@openssh.com", true, nil)
		t.Stop()
		if err != nil {
			return
		}
	}
}

// dialGateway opens the tunnel's SSH connection to the gateways: as the
// alias, with the machine's SSH host key, to a gateway whose host
// certificate the host CA signed.
func (t *Tunnel) dialGateway(ctx context.Context, h *Hello) (net.Conn, ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	signer, err := ssh.ParsePrivateKey([]byte(h.SSHHostKey))
	if err != nil {
		return nil, nil, nil, nil, errors.New("tunnel: the SSH host key is not a valid private key")
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.GatewayCA))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("tunnel: the gateways' host CA: %w", err)
	}
	cfg := &ssh.ClientConfig{
		User:            t.Alias,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: sshca.HostKeyCallback(ca),
		Timeout:         HandshakeTimeout,
		ClientVersion:   "SSH-2.0-Hangar_builder_tunnel",
	}
	return dialConfig(ctx, h.Gateway, cfg)
}

// dialRequests answers the gateway's requests for data connections: for
// each, dial the link address, send the token, and serve SSH on it.
func (t *Tunnel) dialRequests(ctx context.Context, reqs <-chan *ssh.Request) {
	for r := range reqs {
		if r.Type != DialRequest || len(r.Payload) == 0 || len(r.Payload) > 128 {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
			continue
		}
		token := string(r.Payload)
		if r.WantReply {
			_ = r.Reply(true, nil)
		}
		go func() {
			d := net.Dialer{Timeout: HandshakeTimeout}
			dc, err := d.DialContext(ctx, "tcp", t.Hello.Addr)
			if err != nil {
				return
			}
			if _, err := io.WriteString(dc, DataPrefix+token+"\n"); err != nil {
				dc.Close()
				return
			}
			t.Serve(dc)
		}()
	}
}

// chanConn is an SSH channel seen as a net.Conn. Deadlines close the
// channel when they pass (enough for handshake timeouts).
type chanConn struct {
	ssh.Channel
	under net.Conn

	mu    sync.Mutex
	timer *time.Timer // guarded by mu
}

func newChanConn(ch ssh.Channel, under net.Conn) *chanConn {
	return &chanConn{Channel: ch, under: under}
}

func (c *chanConn) LocalAddr() net.Addr  { return c.under.LocalAddr() }
func (c *chanConn) RemoteAddr() net.Addr { return c.under.RemoteAddr() }

func (c *chanConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if !t.IsZero() {
		c.timer = time.AfterFunc(time.Until(t), func() { c.Channel.Close() })
	}
	return nil
}

func (c *chanConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *chanConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }

func (c *chanConn) Close() error {
	_ = c.SetDeadline(time.Time{})
	return c.Channel.Close()
}

var _ io.ReadWriteCloser = (*chanConn)(nil)
