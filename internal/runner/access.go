package runner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/build/access"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
)

// SSHConfig is what SSH builds need. A Runner without it refuses them.
type SSHConfig struct {
	// Credentials issues and destroys the builds' credentials.
	Credentials Credentials
	Gateway     Gateway
	// TunnelAddr, if set, is the address of separate gateways (`hangar
	// gateway`, several behind one address), where builders open their
	// tunnels (link.Hello.Gateway) instead of on the runner's link;
	// TunnelCA is the host CA of their host certificates. Empty: the
	// in-process gateway takes tunnels from the link.
	TunnelAddr string
	TunnelCA   ssh.PublicKey
	Store      SSHStore
	// AfterSteps is how long access stays open after the steps complete
	// (bounded by max_build_duration). Default 20 minutes.
	AfterSteps time.Duration
}

// Gateway is what the runner needs of the SSH gateway that users reach a
// build's machine through (*gateway.Gateway in the same process;
// *cluster.Control for separate gateways; runnerapi's client, through
// the servers, for a runner on another host). The runner
// admits a build's key when its access opens, and takes it back in two
// stages at its end; the gateway tells the runner of connections through
// Runner.GatewayEvent. None of the methods blocks for long.
type Gateway interface {
	// Open admits key (the build's user certificate key) for alias.
	Open(alias string, key ssh.PublicKey)
	// Drain refuses new connections to alias, telling them reason; open
	// ones stay.
	Drain(alias, reason string)
	// Disconnect closes every open connection to alias.
	Disconnect(alias string)
	// Forget drops what the gateway keeps of alias and key (the refusal's
	// reason included).
	Forget(alias string, key ssh.PublicKey)
}

var _ Gateway = (*gateway.Gateway)(nil)

// SSHStore records the SSH events of builds.
type SSHStore interface {
	AddEvent(ctx context.Context, id int64, ev build.Event) error
}

// forgetAfter is how long the gateway keeps a closed build's refusal
// message.
const forgetAfter = time.Hour

// sshAccess is the runner's side of one build's SSH access: it carries out
// what the access rules (package build/access) decide. The build's
// goroutine owns it; the gateway's goroutines reach it through gw, timers
// through wake.
type sshAccess struct {
	cfg   *SSHConfig
	alias string
	key   ssh.PublicKey // the build's user key
	rules *access.Machine
	gw    chan gateway.Event // the gateway's events of this build
	wake  chan struct{}      // the rules' wake-up is due (buffered, 1)
	timer Timer              // the pending wake-up; nil if none

	finished  bool // the rules ended the build
	closeSent bool // an SSHClose went to the builder...
	revoked   bool // ...and the builder confirmed it

	// told: the builder has the job's (or SSHOpen's) JobSSH, and the end
	// of access it was last told: toldAt (zero: none), toldWhy.
	told    bool
	toldAt  time.Time
	toldWhy string
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
// opens access.
func (j *job) setupSSH() error {
	cfg := j.r.cfg.SSH
	b := j.b
	cred, err := cfg.Credentials.Issue(context.Background(), b.ID, j.name, j.deadline, j.sshHostKey)
	if err != nil {
		return err
	}
	j.jobSSH = &link.JobSSH{
		Alias:   j.name,
		UserCA:  string(ssh.MarshalAuthorizedKey(cred.UserCA)),
		UserKey: string(ssh.MarshalAuthorizedKey(cred.UserKey)),
	}
	j.ssh = &sshAccess{
		cfg: cfg, alias: j.name, key: cred.UserKey,
		rules: access.New(b.ID, j.deadline, cfg.AfterSteps),
		gw:    make(chan gateway.Event, 256),
		wake:  make(chan struct{}, 1),
	}
	j.r.mu.Lock()
	j.r.byAlias[j.name] = j
	j.r.mu.Unlock()
	cfg.Gateway.Open(j.name, cred.UserKey)
	j.rules(access.Event{Kind: access.Open, Time: j.r.clock.Now()})
	return nil
}

// openOnFailure opens SSH access to a build with SSH on failure whose
// steps failed: its credential is made now, and the builder, still
// linked, starts its SSH server.
func (j *job) openOnFailure() error {
	j.b.SSH = build.SSH{Enabled: true, State: build.SSHPending}
	if err := j.setupSSH(); err != nil {
		j.b.SSH = build.SSH{}
		return err
	}
	j.save()
	j.withExpiry(j.jobSSH)
	if err := j.conn.Send(link.Command{Type: link.SSHOpen, SSH: j.jobSSH}); err != nil {
		return fmt.Errorf("the builder is unreachable: %w", err)
	}
	j.logs.Printf(lastStarted(j.b), "hangar: a step failed: SSH access opens for you to debug it (SSH on failure)")
	return nil
}

// rules hands ev to the access rules and carries out what they decide.
func (j *job) rules(ev access.Event) {
	s := j.ssh
	for _, e := range s.rules.Handle(ev) {
		switch e.Kind {
		case access.Notify:
			if j.conn != nil {
				_ = j.conn.Send(link.Command{Type: link.SSHNotice, Text: e.Text})
			}
		case access.Revoke:
			// Newcomers are refused at once; the open connections stay
			// until the builder has told its sessions why they end and
			// closed them (SSHRevoked), at most RevokeTimeout.
			s.cfg.Gateway.Drain(s.alias, e.Text)
			if j.conn != nil && j.conn.Send(link.Command{Type: link.SSHClose, Text: "Hangar: " + e.Text}) == nil {
				s.closeSent = true
				gw, alias := s.cfg.Gateway, s.alias
				j.r.clock.AfterFunc(j.r.cfg.RevokeTimeout, func() { gw.Disconnect(alias) })
			} else {
				s.cfg.Gateway.Disconnect(s.alias)
			}
			j.logs.Printf(lastStarted(j.b), "hangar: SSH access closed: %s", e.Text)
			if err := s.cfg.Store.AddEvent(context.Background(), j.b.ID, build.Event{Kind: "ssh_closed", Data: map[string]string{"reason": e.Text}}); err != nil {
				j.log.Error("record event", "err", err)
			}
		case access.Log:
			j.logs.Printf(lastStarted(j.b), "hangar: %s", e.Text)
		case access.Save:
			j.b.SSH = s.rules.State()
			j.save()
			j.tellExpiry()
		case access.Wake:
			j.armWake(e.At)
		case access.Finish:
			s.finished = true
		}
	}
}

// withExpiry puts the end of access as it stands into js, about to be sent
// to the builder, which from then on is told when it moves (tellExpiry).
func (j *job) withExpiry(js *link.JobSSH) {
	s := j.ssh
	if js == nil || s == nil {
		return
	}
	st := s.rules.State()
	js.ExpiresAt, js.ExpiresBecause = st.ExpiresAt, st.ExpiresBecause
	s.told, s.toldWhy, s.toldAt = true, st.ExpiresBecause, time.Time{}
	if st.ExpiresAt != nil {
		s.toldAt = *st.ExpiresAt
	}
}

// tellExpiry tells the builder, once it has its JobSSH, that the end of
// access has moved (for its login banner).
func (j *job) tellExpiry() {
	s := j.ssh
	if !s.told || j.conn == nil || s.rules.Closed() {
		return
	}
	st := s.rules.State()
	var at time.Time
	if st.ExpiresAt != nil {
		at = *st.ExpiresAt
	}
	if at.Equal(s.toldAt) && st.ExpiresBecause == s.toldWhy {
		return
	}
	s.toldAt, s.toldWhy = at, st.ExpiresBecause
	_ = j.conn.Send(link.Command{Type: link.SSHExpiry, ExpiresAt: st.ExpiresAt, Text: st.ExpiresBecause})
}

// armWake replaces the pending wake-up with one at at (zero: none).
func (j *job) armWake(at time.Time) {
	s := j.ssh
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if at.IsZero() {
		return
	}
	s.timer = j.r.clock.AfterFunc(at.Sub(j.r.clock.Now()), func() {
		select {
		case s.wake <- struct{}{}:
		default: // one is pending already
		}
	})
}

// builderKinds maps the builder's SSH events to the rules' inputs.
var builderKinds = map[string]access.Kind{
	"tunnel_up":    access.TunnelUp,
	"tunnel_down":  access.TunnelDown,
	"login_start":  access.LoginStart,
	"login_end":    access.LoginEnd,
	"login_detach": access.Detach,
	"login_attach": access.Attach,
}

// onBuilderSSH handles an SSH event from the builder.
func (j *job) onBuilderSSH(ev link.Event) {
	s := j.ssh
	if s == nil {
		return
	}
	if ev.Kind == link.SSHRevoked {
		s.revoked = true
		s.cfg.Gateway.Disconnect(s.alias) // what the builder left open
		return
	}
	data := map[string]string{"via": "builder"}
	if ev.Text != "" {
		data["detail"] = ev.Text
	}
	if ev.Conn != 0 {
		data["conn"] = strconv.FormatUint(ev.Conn, 10)
	}
	if err := s.cfg.Store.AddEvent(context.Background(), j.b.ID, build.Event{Time: ev.Time, Kind: "ssh_" + ev.Kind, Data: data}); err != nil {
		j.log.Error("record event", "err", err)
	}
	if k, ok := builderKinds[ev.Kind]; ok {
		j.rules(access.Event{Kind: k, Time: j.r.clock.Now()})
	}
}

// onGateway handles a gateway event of the build.
func (j *job) onGateway(ev gateway.Event) {
	switch ev.Kind {
	case "connect":
		j.rules(access.Event{Kind: access.Connect, Time: j.r.clock.Now(), Remote: ev.Remote, Client: ev.Client})
	case "disconnect":
		j.rules(access.Event{Kind: access.Disconnect, Time: j.r.clock.Now(), Remote: ev.Remote})
	}
}

// endAccess revokes everything of the build's SSH access at its end (final
// is the build's status) and waits until the builder has closed its
// sessions.
func (j *job) endAccess(final build.Status) {
	s := j.ssh
	// No more gateway events for this build: nobody reads them now.
	j.r.mu.Lock()
	if j.r.byAlias[s.alias] == j {
		delete(j.r.byAlias, s.alias)
	}
	j.r.mu.Unlock()
	msg := fmt.Sprintf("SSH access to build %d ended: %s", j.b.ID, endedBecause(final))
	if s.rules.Closed() {
		// Closed earlier (logout, the window's end): that stays the reason
		// newcomers are given.
		msg = s.rules.State().ClosedReason
	}
	j.rules(access.Event{Kind: access.Close, Time: j.r.clock.Now(), Reason: msg})
	j.armWake(time.Time{})
	s.cfg.Gateway.Drain(s.alias, msg)
	// Keep the refusal's message for a while, then forget the build.
	j.r.clock.AfterFunc(forgetAfter, func() { s.cfg.Gateway.Forget(s.alias, s.key) })
	if err := s.cfg.Credentials.Destroy(context.Background(), j.b.ID); err != nil {
		j.log.Error("destroy SSH key", "err", err)
	}
	// The builder tells the sessions why they end and closes them; then
	// the gateway closes what is left.
	j.awaitRevoked()
	s.cfg.Gateway.Disconnect(s.alias)
}

// endedBecause says why access ends with the build, by its final status.
func endedBecause(final build.Status) string {
	switch final {
	case build.Canceled:
		return "the build was canceled"
	case build.Timeout:
		return "the build timed out (max_build_duration reached)"
	case build.Failed:
		return "the build failed"
	case build.Finished:
		return "the build finished"
	}
	return "the build ended (" + string(final) + ")"
}

// awaitRevoked waits until the builder has confirmed the SSHClose it was
// sent (its sessions are told why and closed) or the link has dropped, at
// most RevokeTimeout: the machine goes after that.
func (j *job) awaitRevoked() {
	s := j.ssh
	if !s.closeSent || s.revoked || j.events == nil {
		return
	}
	timeout := make(chan struct{})
	t := j.r.clock.AfterFunc(j.r.cfg.RevokeTimeout, func() { close(timeout) })
	defer t.Stop()
	for {
		select {
		case ev, ok := <-j.events:
			if !ok {
				return // the link dropped: nothing more can be told
			}
			if ev.Type == link.SSH && ev.Kind == link.SSHRevoked {
				s.revoked = true
				return
			}
		case <-timeout:
			j.log.Warn("the builder did not confirm closing SSH access", "timeout", j.r.cfg.RevokeTimeout)
			return
		}
	}
}

// extend gives the build's SSH access by more time (the rules bound it)
// and records who asked.
func (j *job) extend(by time.Duration, who string) error {
	s := j.ssh
	if s == nil {
		return errors.New("the build has no SSH access")
	}
	if s.rules.Closed() {
		return errors.New("the build's SSH access has ended")
	}
	j.rules(access.Event{Kind: access.Extend, Time: j.r.clock.Now(), By: by, Who: who})
	data := map[string]string{"by": by.String(), "who": who}
	if st := s.rules.State(); st.ExpiresAt != nil {
		data["expires_at"] = st.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if err := s.cfg.Store.AddEvent(context.Background(), j.b.ID, build.Event{Kind: "ssh_extended", Data: data}); err != nil {
		j.log.Error("record event", "err", err)
	}
	return nil
}
