package builder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshalgo"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/sshd"
)

// sshAccess is an SSH build's access: the builder's SSH server and the
// tunnel that brings users to it.
type sshAccess struct {
	srv    *sshd.Server
	cancel context.CancelFunc

	mu      sync.Mutex
	revoked bool // guarded by mu
}

// startSSH starts the SSH server and keeps the tunnel up until ctx ends or
// access is revoked.
func (r *run) startSSH(ctx context.Context, hello *link.Hello, js *link.JobSSH) (*sshAccess, error) {
	hostKey, err := ssh.ParsePrivateKey([]byte(hello.SSHHostKey))
	if err != nil {
		return nil, errors.New("builder: the SSH host key is not a valid private key")
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(js.UserCA))
	if err != nil {
		return nil, fmt.Errorf("builder: user CA: %w", err)
	}
	userKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(js.UserKey))
	if err != nil {
		return nil, fmt.Errorf("builder: user key: %w", err)
	}
	if r.banner != nil {
		r.banner.setExpiry(js.ExpiresAt, js.ExpiresBecause)
	}
	a := &sshAccess{}
	checker := &sshca.Checker{CA: ca, Principal: js.Alias, Key: userKey}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			a.mu.Lock()
			revoked := a.revoked
			a.mu.Unlock()
			if revoked {
				return nil, errors.New("access revoked")
			}
			if meta.User() != "builder" {
				return nil, errors.New("log in as builder")
			}
			if err := checker.Check(key); err != nil {
				return nil, err
			}
			return &ssh.Permissions{}, nil
		},
		MaxAuthTries:  6,
		ServerVersion: "SSH-2.0-Hangar-builder",
	}
	// The algorithms are Hangar's (sshd.Server fills them in).
	if err := sshalgo.AddHostKey(cfg, hostKey); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	a.srv = &sshd.Server{
		Config:     cfg,
		Credential: r.cred,
		Home:       r.home,
		Env: func() []string {
			return mergeEnv(r.env, readEnvFile(r.cmEnv))
		},
		Dir:         func() string { return r.dir },
		SFTPCommand: []string{"/proc/self/exe", "builder-sftp"},
		Banner:      r.loginBanner,
		Events: func(ev sshd.Event) {
			_ = r.send(link.Event{Type: link.SSH, Kind: ev.Kind, Text: ev.Detail, Conn: ev.Conn, Time: ev.Time})
		},
	}
	tctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	t := &link.Tunnel{
		Hello: hello,
		Alias: js.Alias,
		Serve: a.srv.ServeConn,
		State: func(up bool, err error) {
			kind, text := "tunnel_up", ""
			if !up {
				kind = "tunnel_down"
				if err != nil {
					text = err.Error()
				}
			}
			_ = r.send(link.Event{Type: link.SSH, Kind: kind, Text: text, Time: time.Now()})
		},
	}
	go t.Run(tctx)
	return a, nil
}

// loginBanner is the banner of a new login shell (sshd.Server.Banner).
func (r *run) loginBanner() string {
	if r.banner == nil {
		return ""
	}
	var p *paused
	if r.steps != nil {
		p = r.steps.pausedAt()
	}
	return r.banner.text(time.Now(), p)
}

// revoke closes every session with msg and admits no one again.
func (a *sshAccess) revoke(msg string) {
	a.mu.Lock()
	a.revoked = true
	a.mu.Unlock()
	a.cancel()
	a.srv.CloseAll(msg)
}

// commands serves the runner's commands until the link closes. Access a
// opened at the start is revoked by Run; access opened here (SSHOpen) is
// revoked here when the link closes.
func (r *run) commands(ctx context.Context, c *link.Client, hello *link.Hello, a *sshAccess) {
	var late *sshAccess
	defer func() {
		if late != nil {
			late.revoke("the build has ended")
		}
	}()
	for {
		cmd, err := c.Command()
		if err != nil {
			return
		}
		if cmd.Type == link.SSHOpen && a == nil && cmd.SSH != nil && hello.SSHHostKey != "" {
			if a, err = r.startSSH(ctx, hello, cmd.SSH); err != nil {
				_ = c.Send(link.Event{Type: link.SSH, Kind: "tunnel_down", Text: err.Error()})
				continue
			}
			late = a
			continue
		}
		if cmd.Type == link.SSHExpiry {
			if r.banner != nil {
				r.banner.setExpiry(cmd.ExpiresAt, cmd.Text)
			}
			continue
		}
		if cmd.Type == link.Continue {
			if _, err := r.steps.cont(cmd.Text); err != nil {
				r.log.Info("continue", "err", err)
			}
			continue
		}
		if a == nil {
			continue
		}
		switch cmd.Type {
		case link.SSHNotice:
			a.srv.Notice(cmd.Text)
		case link.SSHClose:
			a.revoke(cmd.Text)
			_ = c.Send(link.Event{Type: link.SSH, Kind: link.SSHRevoked})
		}
	}
}
