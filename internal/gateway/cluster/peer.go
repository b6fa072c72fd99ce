package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/netx"
	"github.com/hangar-ci/hangar/internal/sshalgo"
	"github.com/hangar-ci/hangar/internal/sshca"
)

// The peer link: a gateway that admitted a user's hop to a build whose
// tunnel another gateway holds opens a PeerChannel to that gateway over
// an SSH connection between them (one per pair, kept for later hops).
// Both ends authenticate with their host certificates of the host CA
// (principal sshca.GatewayPrincipal): the server's as its host key, the
// client's as its user key. The receiving gateway checks that the build's
// access is open and that it holds the tunnel, then copies bytes between
// the channel and the builder, as for its own users.

// PeerChannel is the channel type of a forwarded hop; its payload is a
// peerRequest.
const PeerChannel = "hangar-peer@hangar"

// peerRequest is PeerChannel's payload.
type peerRequest struct {
	Alias      string
	OriginHost string
	OriginPort uint32
}

// peerUser is the user name peers log in as.
const peerUser = "hangar-gateway"

// PeerHandshakeTimeout bounds a peer link's TCP connect and handshake.
const PeerHandshakeTimeout = 10 * time.Second

// peerServer serves the peer link.
type peerServer struct {
	life netx.Tracker
}

// ServePeers accepts peer links on l until ctx ends (Shutdown) or l
// fails; it closes l when it returns.
func (n *Node) ServePeers(l net.Listener) error {
	n.init()
	if n.PeerSigner == nil || n.HostCA == nil {
		l.Close()
		return errors.New("gateway: the peer link needs the host CA and this gateway's host certificate")
	}
	cfg := &ssh.ServerConfig{
		MaxAuthTries: 2,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() != peerUser {
				return nil, errors.New("not a peer")
			}
			if err := sshca.CheckHostCert(n.HostCA, sshca.GatewayPrincipal, key); err != nil {
				return nil, err
			}
			return &ssh.Permissions{}, nil
		},
		ServerVersion: "SSH-2.0-Hangar_peer",
	}
	sshalgo.Server(cfg)
	if err := sshalgo.AddHostKey(cfg, n.PeerSigner); err != nil {
		l.Close()
		return fmt.Errorf("gateway: peer link: %w", err)
	}
	return n.peerSrv.life.Serve(l, nil, func(nc net.Conn) {
		_ = n.peerSrv.life.Go(nc, 0, func(nc net.Conn) { n.servePeer(nc, cfg) })
	})
}

// ShutdownPeers stops accepting peer links and waits for those open (the
// hops they carry) to end, or ctx: then it closes them.
func (n *Node) ShutdownPeers(ctx context.Context) error {
	err := n.peerSrv.life.Shutdown(ctx)
	n.peers.closeAll()
	if errors.Is(err, netx.ErrServerClosed) {
		return nil
	}
	return err
}

// ClosePeers closes every peer link now.
func (n *Node) ClosePeers() {
	_ = n.peerSrv.life.Close()
	n.peers.closeAll()
}

func (n *Node) servePeer(nc net.Conn, cfg *ssh.ServerConfig) {
	_ = nc.SetDeadline(time.Now().Add(PeerHandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		n.log().Info("gateway: peer link refused", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	defer sc.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nch := range chans {
		if nch.ChannelType() != PeerChannel {
			_ = nch.Reject(ssh.UnknownChannelType, "a peer link carries only "+PeerChannel)
			continue
		}
		var p peerRequest
		if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, "malformed "+PeerChannel+" request")
			continue
		}
		down, err := n.Gateway.OpenRoute(p.Alias, p.OriginHost, p.OriginPort)
		if err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			down.Close()
			continue
		}
		go ssh.DiscardRequests(creqs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			gateway.Splice(ch, down)
		}()
	}
}

// peerPool holds this gateway's client links to its peers, by address.
type peerPool struct {
	mu    sync.Mutex
	conns map[string]*ssh.Client // guarded by mu
}

// open opens a PeerChannel to the peer at addr, over its link (dialled
// if there is none, or again if it failed).
func (p *peerPool) open(ctx context.Context, n *Node, addr string, req peerRequest) (ssh.Channel, error) {
	payload := ssh.Marshal(&req)
	for attempt := 0; ; attempt++ {
		c, err := p.client(ctx, n, addr)
		if err != nil {
			return nil, err
		}
		ch, reqs, err := c.OpenChannel(PeerChannel, payload)
		if err == nil {
			go ssh.DiscardRequests(reqs)
			return ch, nil
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || attempt > 0 {
			return nil, err // the peer answered: no retry
		}
		p.drop(addr, c) // a broken link: dial again, once
	}
}

func (p *peerPool) client(ctx context.Context, n *Node, addr string) (*ssh.Client, error) {
	p.mu.Lock()
	c := p.conns[addr]
	p.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if n.PeerSigner == nil || n.HostCA == nil {
		return nil, errors.New("no host certificate for the peer link")
	}
	cfg := &ssh.ClientConfig{
		User:            peerUser,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(n.PeerSigner)},
		HostKeyCallback: sshca.HostKeyCallback(n.HostCA),
		Timeout:         PeerHandshakeTimeout,
		ClientVersion:   "SSH-2.0-Hangar_peer",
	}
	sshalgo.Client(cfg)
	d := net.Dialer{Timeout: PeerHandshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(PeerHandshakeTimeout))
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("peer link to %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c = ssh.NewClient(sc, chans, reqs)
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[string]*ssh.Client{}
	}
	if old := p.conns[addr]; old != nil { // dialled at the same time
		p.mu.Unlock()
		c.Close()
		return old, nil
	}
	p.conns[addr] = c
	p.mu.Unlock()
	go func() {
		_ = c.Wait()
		p.drop(addr, c)
	}()
	return c, nil
}

// drop forgets and closes c, the link to addr.
func (p *peerPool) drop(addr string, c *ssh.Client) {
	p.mu.Lock()
	if p.conns[addr] == c {
		delete(p.conns, addr)
	}
	p.mu.Unlock()
	c.Close()
}

func (p *peerPool) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
