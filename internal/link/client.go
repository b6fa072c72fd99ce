package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshalgo"
)

// ReadHello reads the runner's Hello from r (the builder's standard input).
func ReadHello(r io.Reader) (*Hello, error) {
	line, err := bufio.NewReaderSize(r, 16<<10).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return nil, fmt.Errorf("read hello from stdin: %w", err)
	}
	var h Hello
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("parse hello from stdin: %w", err)
	}
	if h.Name == "" || h.Addr == "" || h.HostKey == "" || h.Key == "" {
		return nil, errors.New("hello from stdin is incomplete")
	}
	return &h, nil
}

// Client is the builder's end of a link.
type Client struct {
	conn *ssh.Client
	ch   ssh.Channel
	dec  *json.Decoder

	mu  sync.Mutex // guards enc
	enc *json.Encoder
}

// dialSSH opens an SSH connection to the link address as h.Name.
func dialSSH(ctx context.Context, h *Hello) (net.Conn, ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	signer, err := ssh.ParsePrivateKey([]byte(h.Key))
	if err != nil {
		return nil, nil, nil, nil, errors.New("link: the builder key is not a valid private key")
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKey))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("link: parse host key: %w", err)
	}
	cfg := &ssh.ClientConfig{
		User:            h.Name,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         HandshakeTimeout,
	}
	return dialConfig(ctx, h.Addr, cfg)
}

// dialConfig opens an SSH connection to addr with cfg (its algorithms set
// to Hangar's), its handshake bounded by HandshakeTimeout.
func dialConfig(ctx context.Context, addr string, cfg *ssh.ClientConfig) (net.Conn, ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	sshalgo.Client(cfg)
	d := net.Dialer{Timeout: HandshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("link: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, nil, nil, fmt.Errorf("link: ssh handshake with %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, sc, chans, reqs, nil
}

// Dial opens the link described by h.
func Dial(ctx context.Context, h *Hello) (*Client, error) {
	_, sc, chans, reqs, err := dialSSH(ctx, h)
	if err != nil {
		return nil, err
	}
	conn := ssh.NewClient(sc, chans, reqs)
	ch, creqs, err := conn.OpenChannel(ControlChannel, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("link: open control channel: %w", err)
	}
	go ssh.DiscardRequests(creqs)
	return &Client{
		conn: conn,
		ch:   ch,
		dec:  json.NewDecoder(bufio.NewReaderSize(ch, 64<<10)),
		enc:  json.NewEncoder(ch),
	}, nil
}

// SSH is the underlying connection, for features that add channels.
func (c *Client) SSH() *ssh.Client { return c.conn }

// Job waits for the runner's job.
func (c *Client) Job() (*Job, error) {
	var j Job
	if err := c.dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("link: read job: %w", err)
	}
	return &j, nil
}

// Command waits for the runner's next command.
func (c *Client) Command() (*Command, error) {
	var cmd Command
	if err := c.dec.Decode(&cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// Send sends an event. It is safe for concurrent use.
func (c *Client) Send(ev Event) error {
	if ev.Type == Output {
		return c.sendOutput(ev)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(ev)
}

// sendOutput sends an output frame (see OutputFrame, OutputS2Frame).
func (c *Client) sendOutput(ev Event) error {
	frame, data := byte(OutputFrame), ev.Data
	if ev.S2 != nil {
		if len(ev.Data) > MaxMessage || len(ev.S2) > MaxMessage {
			return fmt.Errorf("link: compressed output of %d bytes (at most %d in one frame)", len(ev.Data), MaxMessage)
		}
		frame, data = OutputS2Frame, ev.S2
	}
	for len(data) > 0 {
		part := data[:min(len(data), MaxMessage)]
		data = data[len(part):]
		hdr := make([]byte, 1, 1+2*binary.MaxVarintLen64)
		hdr[0] = frame
		hdr = binary.AppendUvarint(hdr, uint64(ev.Step))
		hdr = binary.AppendUvarint(hdr, uint64(len(part)))
		c.mu.Lock()
		_, err := c.ch.Write(hdr)
		if err == nil {
			_, err = c.ch.Write(part)
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Wait blocks until the runner closes the link.
func (c *Client) Wait() error { return c.conn.Wait() }

// Close closes the link.
func (c *Client) Close() error { return c.conn.Close() }
