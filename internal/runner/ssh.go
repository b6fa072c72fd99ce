package runner

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

// SSHConfig is what SSH builds need. A Runner without it refuses them.
type SSHConfig struct {
	CA      *sshca.CA
	Sealer  *sshca.Sealer
	Gateway *gateway.Gateway
	Store   SSHStore
	// AfterSteps is how long access stays open after the steps complete
	// (bounded by max_build_duration). Default 20 minutes.
	AfterSteps time.Duration
}

// SSHStore keeps SSH credentials and events.
type SSHStore interface {
	PutBuildSSH(ctx context.Context, id int64, c *store.BuildSSH) error
	DestroySSHKey(ctx context.Context, id int64) error
	AddEvent(ctx context.Context, id int64, ev build.Event) error
}

// sshJob is the SSH side of one running build. Its fields are used by the
// build's own goroutine only.
type sshJob struct {
	cfg      *SSHConfig
	alias    string
	key      ssh.PublicKey // the build's user key
	deadline time.Time
	gw       chan gateway.Event // from the gateway, for this build

	tunnelUp bool
	logins   int // open login shells
	users    int // open gateway connections
	closed   bool
	notices  []*time.Timer
}

// GatewayEvent takes the gateway's events and routes them to their build.
func (r *Runner) GatewayEvent(ev gateway.Event) {
	r.mu.Lock()
	j := r.byAlias[ev.Alias]
	r.mu.Unlock()
	if j == nil {
		return
	}
	data := map[string]string{"remote": ev.Remote, "via": "gateway"}
	if ev.Detail != "" {
		data["detail"] = ev.Detail
	}
	if ev.Client != "" {
		data["client"] = ev.Client
	}
	if err := r.cfg.SSH.Store.AddEvent(context.Background(), j.b.ID, build.Event{Kind: "ssh_" + ev.Kind, Data: data}); err != nil {
		j.log.Error("record event", "err", err)
	}
	// The build's goroutine reads these promptly; dropping one would leave
	// the shown state wrong, so wait a little rather than drop.
	select {
	case j.ssh.gw <- ev:
	case <-time.After(5 * time.Second):
		j.log.Warn("gateway event dropped", "kind", ev.Kind)
	}
}

// setupSSH makes the build's credential, admits it at the gateway and
// returns what the builder needs.
func (r *Runner) setupSSH(j *job, hello *link.Hello) (*link.JobSSH, error) {
	cfg := r.cfg.SSH
	b := j.b
	alias := build.Alias(b.ID)
	deadline := b.StartedAt.Add(time.Duration(b.MaxDuration) * time.Second)
	cred, err := cfg.CA.Issue(alias, deadline)
	if err != nil {
		return nil, err
	}
	hostKey, hostPEM, err := sshca.NewKey(alias)
	if err != nil {
		return nil, err
	}
	err = cfg.Store.PutBuildSSH(context.Background(), b.ID, &store.BuildSSH{
		PrivateKey:  cfg.Sealer.Seal(cred.PrivateKey, alias),
		Certificate: string(ssh.MarshalAuthorizedKey(cred.Certificate)),
		PublicKey:   string(ssh.MarshalAuthorizedKey(cred.PublicKey)),
		HostKey:     string(ssh.MarshalAuthorizedKey(hostKey.PublicKey())),
	})
	if err != nil {
		return nil, err
	}
	hello.SSHHostKey = string(hostPEM)
	j.ssh = &sshJob{cfg: cfg, alias: alias, key: cred.PublicKey, deadline: deadline, gw: make(chan gateway.Event, 256)}
	r.mu.Lock()
	r.byAlias[alias] = j
	r.mu.Unlock()
	cfg.Gateway.Open(alias, cred.PublicKey)
	b.SSH.State = build.SSHPending
	b.SSH.ExpiresAt = &deadline
	b.SSH.ExpiresBecause = "max_build_duration"
	return &link.JobSSH{
		Alias:   alias,
		UserCA:  string(ssh.MarshalAuthorizedKey(cfg.CA.PublicKey())),
		UserKey: string(ssh.MarshalAuthorizedKey(cred.PublicKey)),
	}, nil
}

// teardownSSH revokes everything of the build's SSH access.
func (r *Runner) teardownSSH(j *job, conn *link.Conn, status build.Status) {
	s := j.ssh
	if s == nil {
		return
	}
	// No more gateway events for this build: nobody reads them now.
	r.mu.Lock()
	delete(r.byAlias, s.alias)
	r.mu.Unlock()
	msg := fmt.Sprintf("build %d has ended (%s): its SSH access is closed", j.b.ID, status)
	if !s.closed {
		r.closeSSH(j, conn, msg)
	}
	s.cfg.Gateway.Revoke(s.alias, msg)
	// Keep the refusal's message for a while, then forget the build.
	time.AfterFunc(time.Hour, func() { s.cfg.Gateway.Forget(s.alias, s.key) })
	if err := s.cfg.Store.DestroySSHKey(context.Background(), j.b.ID); err != nil {
		j.log.Error("destroy SSH key", "err", err)
	}
	for _, t := range s.notices {
		t.Stop()
	}
}

// closeSSH ends SSH access for good: the gateway refuses the credential,
// sessions get msg and are closed.
func (r *Runner) closeSSH(j *job, conn *link.Conn, msg string) {
	s := j.ssh
	if s.closed {
		return
	}
	s.closed = true
	s.cfg.Gateway.Revoke(s.alias, msg)
	if conn != nil {
		_ = conn.Send(link.Command{Type: link.SSHClose, Text: "Hangar: " + msg})
	}
	j.b.SSH.State = build.SSHClosed
	j.b.SSH.ClosedReason = msg
	j.b.SSH.Connections = 0
	j.b.SSH.Sessions = nil
	now := time.Now().UTC()
	j.b.SSH.ExpiresAt = &now
	j.logs.Printf(lastStarted(j.b), "hangar: SSH access closed: %s", msg)
	_ = s.cfg.Store.AddEvent(context.Background(), j.b.ID, build.Event{Kind: "ssh_closed", Data: map[string]string{"reason": msg}})
	j.save()
}

// sshState recomputes the shown state.
func (j *job) sshState() {
	s := j.ssh
	switch {
	case s.closed:
		j.b.SSH.State = build.SSHClosed
	case s.users > 0:
		j.b.SSH.State = build.SSHConnected
	case s.tunnelUp:
		j.b.SSH.State = build.SSHReady
	default:
		j.b.SSH.State = build.SSHPending
	}
	j.b.SSH.Connections = s.users
}

// onBuilderSSH handles an SSH event from the builder. It reports whether
// the user logged out (the last login shell ended).
func (r *Runner) onBuilderSSH(j *job, ev link.Event) (logout bool) {
	s := j.ssh
	if s == nil {
		return false
	}
	data := map[string]string{"via": "builder"}
	if ev.Text != "" {
		data["detail"] = ev.Text
	}
	if ev.Conn != 0 {
		data["conn"] = strconv.FormatUint(ev.Conn, 10)
	}
	switch ev.Kind {
	case "tunnel_up":
		s.tunnelUp = true
	case "tunnel_down":
		s.tunnelUp = false
	case "login_start":
		s.logins++
	case "login_end":
		if s.logins > 0 {
			s.logins--
			logout = s.logins == 0
		}
	}
	_ = s.cfg.Store.AddEvent(context.Background(), j.b.ID, build.Event{Time: ev.Time, Kind: "ssh_" + ev.Kind, Data: data})
	before := j.b.SSH
	j.sshState()
	if before.State != j.b.SSH.State {
		j.save()
	}
	return logout
}

// onGateway handles a gateway event of the build.
func (j *job) onGateway(ev gateway.Event) {
	s := j.ssh
	switch ev.Kind {
	case "connect":
		s.users++
		j.b.SSH.Sessions = append(j.b.SSH.Sessions, build.SSHSession{Remote: ev.Remote, Client: ev.Client, Since: time.Now().UTC()})
	case "disconnect":
		if s.users > 0 {
			s.users--
		}
		for i, ss := range j.b.SSH.Sessions {
			if ss.Remote == ev.Remote {
				j.b.SSH.Sessions = append(j.b.SSH.Sessions[:i], j.b.SSH.Sessions[i+1:]...)
				break
			}
		}
	default:
		return
	}
	j.sshState()
	j.save()
}

// stepsDone starts the wait after the steps: access stays until
// AfterSteps has passed or the build's deadline, whichever is first. It
// returns when access must close (a zero duration: now).
func (r *Runner) stepsDone(j *job, conn *link.Conn, result build.Status) time.Duration {
	s := j.ssh
	after := s.cfg.AfterSteps
	if after <= 0 {
		after = 20 * time.Minute
	}
	now := time.Now()
	until, because := now.Add(after), fmt.Sprintf("%s after the steps completed", after)
	// End a little before the hard deadline, so that the build finishes by
	// its rule rather than timing out.
	if hard := s.deadline.Add(-500 * time.Millisecond); hard.Before(until) {
		until, because = hard, "max_build_duration"
	}
	u := until.UTC()
	j.b.SSH.ExpiresAt, j.b.SSH.ExpiresBecause = &u, because
	j.save()
	wait := time.Until(until)
	if wait <= 0 {
		return 0
	}
	if conn != nil {
		_ = conn.Send(link.Command{Type: link.SSHNotice, Text: fmt.Sprintf(
			"Hangar: the build's steps are done (%s). This machine stays for %s (until %s UTC, %s); log out to finish the build now.",
			result, wait.Round(time.Second), u.Format("15:04:05"), because)})
	}
	return wait
}

// scheduleNotices warns login sessions 5 minutes and 1 minute before
// access ends at until (replacing earlier warnings).
func (r *Runner) scheduleNotices(j *job, conn *link.Conn, until time.Time, because string) {
	s := j.ssh
	for _, t := range s.notices {
		t.Stop()
	}
	s.notices = nil
	wait := time.Until(until)
	for _, before := range []time.Duration{5 * time.Minute, time.Minute} {
		if wait > before+10*time.Second {
			left := before
			s.notices = append(s.notices, time.AfterFunc(wait-before, func() {
				_ = conn.Send(link.Command{Type: link.SSHNotice, Text: fmt.Sprintf("Hangar: this machine stops in %s (%s).", left, because)})
			}))
		}
	}
}
