package sshd

import (
	"net"
	"os"
	"path/filepath"
	"sync"
)

// agentSocket is the unix socket of a forwarded agent (ssh -A): each
// connection to it becomes an "auth-agent@openssh.com" channel to the
// client, whose agent answers.
type agentSocket struct {
	dir  string
	path string // SSH_AUTH_SOCK
	l    net.Listener
	once sync.Once
}

// startAgent creates the socket in a private directory (0700) owned, like
// the socket, by the session's user (when chown is set).
func (c *conn) startAgent(acct account, chown bool) (*agentSocket, error) {
	dir, err := os.MkdirTemp("", "hangar-agent-")
	if err != nil {
		return nil, err
	}
	a := &agentSocket{dir: dir, path: filepath.Join(dir, "agent.sock")}
	l, err := net.Listen("unix", a.path)
	if err == nil {
		a.l = l
		err = os.Chmod(a.path, 0o600)
	}
	if err == nil && chown {
		if err = os.Chown(a.path, acct.uid, acct.gid); err == nil {
			err = os.Chown(dir, acct.uid, acct.gid)
		}
	}
	if err == nil && !c.goTracked(func() { c.serveAgent(l) }) {
		err = net.ErrClosed
	}
	if err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (c *conn) serveAgent(l net.Listener) {
	for {
		uc, err := l.Accept()
		if err != nil {
			return
		}
		ok := c.goTracked(func() {
			ch, reqs, err := c.sc.OpenChannel("auth-agent@openssh.com", nil)
			if err != nil {
				uc.Close()
				return
			}
			c.proxy(ch, reqs, uc)
		})
		if !ok {
			uc.Close()
			return
		}
	}
}

// close removes the socket and its directory. It is safe on a nil
// agentSocket and more than once.
func (a *agentSocket) close() {
	if a == nil {
		return
	}
	a.once.Do(func() {
		if a.l != nil {
			a.l.Close()
		}
		os.RemoveAll(a.dir)
	})
}

// Close implements io.Closer for the session's closers.
func (a *agentSocket) Close() error {
	a.close()
	return nil
}
