package sshd

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// dialTimeout bounds the connection a direct-tcpip channel asks for.
const dialTimeout = 10 * time.Second

// handleDirectTCPIP serves `ssh -L` and `ssh -W`: it connects, from inside
// the machine, to the address the client names and copies both ways.
func (c *conn) handleDirectTCPIP(nch ssh.NewChannel) {
	var p struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil || p.Port > 65535 {
		_ = nch.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	addr := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	c.srv.emit(c.id, EventChannel, "direct-tcpip "+addr)
	d := net.Dialer{Timeout: dialTimeout}
	tc, err := d.DialContext(c.ctx, "tcp", addr)
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "cannot connect to "+addr)
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		tc.Close()
		return
	}
	c.proxy(ch, reqs, tc)
}

// halfCloser is a connection whose sending side can be shut on its own.
type halfCloser interface {
	CloseWrite() error
}

// proxy copies between an SSH channel and a local connection until both
// directions are done, passing EOF on each side (half-close). The local
// connection is closed when the channel is closed by the client or the SSH
// connection ends, so that nothing waits on a silent peer.
func (c *conn) proxy(ch ssh.Channel, reqs <-chan *ssh.Request, other net.Conn) {
	stop := context.AfterFunc(c.ctx, func() { other.Close() })
	defer stop()
	if !c.goTracked(func() {
		ssh.DiscardRequests(reqs) // returns once the channel is closed
		other.Close()
	}) {
		ch.Close()
		other.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = copyBuffer(other, ch)
		if hc, ok := other.(halfCloser); ok {
			_ = hc.CloseWrite()
		} else {
			other.Close()
		}
	}()
	_, _ = copyBuffer(ch, other)
	_ = ch.CloseWrite()
	wg.Wait()
	ch.Close()
	other.Close()
}

// copyBufSize is the buffer of every copy loop: large, so that bulk data
// moves in few system calls and few SSH packets' worth of bookkeeping.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBuffer is io.Copy with a pooled large buffer. It always uses the
// buffer (it hides WriterTo/ReaderFrom, whose fallbacks use 32 KiB).
func copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}
