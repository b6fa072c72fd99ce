package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
)

// sshBuilder brings its tunnel up, passes every step and waits; closing
// crash makes it exit (with its link).
func sshBuilder(crash chan struct{}) func(context.Context, *fakeBuilder) {
	return func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		if fb.job.SSH == nil || fb.job.SSH.Alias != fb.hello.Name || fb.hello.SSHHostKey == "" {
			fb.t.Errorf("an SSH build's job and hello lack SSH: %+v", fb.job.SSH)
		}
		fb.ssh("tunnel_up")
		fb.passAll()
		fb.done("")
		select {
		case <-ctx.Done():
		case <-fb.linkDone:
		case <-crash:
		}
	}
}

// inWindow: the steps are done and access waits (the rules moved its end
// off the deadline).
func inWindow(b *build.Build) bool {
	if b.Status != build.Building || b.SSH.ExpiresAt == nil || b.StartedAt == nil {
		return false
	}
	deadline := b.StartedAt.Add(time.Duration(b.MaxDuration) * time.Second)
	return b.SSH.State != build.SSHClosed && !b.SSH.ExpiresAt.Equal(deadline)
}

func TestSSHWindowEnds(t *testing.T) {
	e := newEnv(t, sshBuilder(nil))
	b := e.queue(true, time.Hour)
	fb := <-e.driver.started
	b = e.wait(b.ID, "the SSH window", inWindow)
	if b.SSH.State != build.SSHReady || b.SSH.ExpiresBecause != "20m0s after the steps completed" {
		t.Errorf("window: %+v", b.SSH)
	}
	end := *b.SSH.ExpiresAt
	e.clock.waitTimer(t, end.Add(-5*time.Minute))
	e.clock.AdvanceTo(end.Add(-time.Second))
	if nb, _ := e.st.Build(context.Background(), b.ID); nb.Status.Done() {
		t.Fatalf("the build ended before its window: %s", nb.Status)
	}
	e.clock.AdvanceTo(end)
	b = e.ended(b.ID)
	want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
	reason := fmt.Sprintf("SSH access to build %d ended: 20m0s after the steps completed (%s UTC)", b.ID, end.UTC().Format("15:04"))
	if b.SSH.State != build.SSHClosed || b.SSH.ClosedReason != reason {
		t.Errorf("ssh: %+v", b.SSH)
	}
	fb.waitCommand(t, link.SSHClose, "Hangar: "+reason)
	contains(t, "log", e.logs(b.ID), "hangar: steps done; the machine stays for SSH for 20m0s (20m0s after the steps completed) unless you log out",
		"hangar: SSH access closed: "+reason)
	evs := strings.Join(e.events(b.ID), " ")
	if strings.Count(evs, "ssh_closed") != 1 {
		t.Errorf("events: %s, want one ssh_closed", evs)
	}
}

func TestSSHLogout(t *testing.T) {
	t.Run("after the steps", func(t *testing.T) {
		logout := make(chan struct{})
		e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
			if !fb.link(ctx) {
				return
			}
			fb.ssh("tunnel_up")
			fb.ssh("login_start")
			fb.passAll()
			fb.done("")
			<-logout
			fb.ssh("login_end")
			fb.wait(ctx)
		})
		b := e.queue(true, time.Hour)
		fb := <-e.driver.started
		e.wait(b.ID, "the SSH window", inWindow)
		close(logout)
		b = e.ended(b.ID)
		want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
		reason := fmt.Sprintf("SSH access to build %d ended: you logged out", b.ID)
		if b.SSH.State != build.SSHClosed || b.SSH.ClosedReason != reason {
			t.Errorf("ssh: %+v", b.SSH)
		}
		fb.waitCommand(t, link.SSHClose, "Hangar: "+reason)
		contains(t, "events", strings.Join(e.events(b.ID), " "), "ssh_tunnel_up ssh_login_start ssh_login_end ssh_closed")
	})
	t.Run("during the steps", func(t *testing.T) {
		// Access closes; the steps go on, and the build ends with them.
		logout, finish := make(chan struct{}), make(chan struct{})
		e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
			if !fb.link(ctx) {
				return
			}
			fb.ssh("tunnel_up")
			fb.ssh("login_start")
			fb.step(0, 0)
			fb.send(link.Event{Type: link.StepStart, Step: 1})
			<-logout
			fb.ssh("login_end")
			<-finish
			fb.send(link.Event{Type: link.StepEnd, Step: 1})
			fb.step(2, 0)
			fb.step(3, 0)
			fb.done("")
			fb.wait(ctx)
		})
		b := e.queue(true, time.Hour)
		fb := <-e.driver.started
		e.wait(b.ID, "its first script", running(2))
		close(logout)
		b = e.wait(b.ID, "access closed", func(b *build.Build) bool { return b.SSH.State == build.SSHClosed })
		if b.Status != build.Building || !strings.Contains(b.SSH.ClosedReason, "logged out") {
			t.Errorf("after a logout during the steps: %s %+v", b.Status, b.SSH)
		}
		fb.waitCommand(t, link.SSHClose, "logged out")
		close(finish)
		b = e.ended(b.ID)
		want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
		if strings.Contains(e.logs(b.ID), "steps done; the machine stays") {
			t.Errorf("a window after access closed:\n%s", e.logs(b.ID))
		}
	})
}

func TestSSHGatewayConnections(t *testing.T) {
	e := newEnv(t, sshBuilder(nil))
	b := e.queue(true, time.Hour)
	b = e.wait(b.ID, "the SSH window", inWindow)
	alias := fmt.Sprintf("build-%d", b.ID)
	e.r.GatewayEvent(gateway.Event{Alias: alias, Kind: "connect", Remote: "192.0.2.1:5000", Client: "OpenSSH_9.2"})
	b = e.wait(b.ID, "a connection", func(b *build.Build) bool { return b.SSH.State == build.SSHConnected })
	if b.SSH.Connections != 1 || len(b.SSH.Sessions) != 1 || b.SSH.Sessions[0].Client != "OpenSSH_9.2" {
		t.Errorf("connected: %+v", b.SSH)
	}
	e.r.GatewayEvent(gateway.Event{Alias: alias, Kind: "channel", Remote: "192.0.2.1:5000", Detail: "direct-tcpip"})
	e.r.GatewayEvent(gateway.Event{Alias: alias, Kind: "disconnect", Remote: "192.0.2.1:5000"})
	b = e.wait(b.ID, "the disconnect", func(b *build.Build) bool { return b.SSH.State == build.SSHReady })
	if b.SSH.Connections != 0 || len(b.SSH.Sessions) != 0 {
		t.Errorf("after disconnect: %+v", b.SSH)
	}
	contains(t, "events", strings.Join(e.events(b.ID), " "), "ssh_connect ssh_channel ssh_disconnect")
	// Events of builds the runner does not run are dropped.
	e.r.GatewayEvent(gateway.Event{Alias: "build-999", Kind: "connect"})
	e.cancel(b.ID)
	e.ended(b.ID)
}

// TestSSHTeardownWaitsForBuilder: the machine goes only once the builder
// has closed its sessions (its answer to SSHClose), or after RevokeTimeout.
func TestSSHTeardownWaitsForBuilder(t *testing.T) {
	for _, answers := range []bool{true, false} {
		t.Run(fmt.Sprintf("answers=%v", answers), func(t *testing.T) {
			gate := make(chan struct{})
			e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
				fb.ack, fb.ackGate = answers, gate
				sshBuilder(nil)(ctx, fb)
			})
			b := e.queue(true, time.Hour)
			fb := <-e.driver.started
			e.wait(b.ID, "the SSH window", inWindow)
			e.cancel(b.ID)
			fb.waitCommand(t, link.SSHClose, "ended: the build was canceled")
			// The runner waits, bounded by RevokeTimeout on its clock: two
			// timers, the gateway's disconnect and the wait's own (advancing
			// the clock before the second is set would never fire it).
			e.clock.waitTimers(t, e.clock.Now().Add(5*time.Second), 2)
			if live, _ := e.driver.counts(); live != 1 {
				t.Fatalf("the machine went before the builder answered (%d live)", live)
			}
			if nb, _ := e.st.Build(context.Background(), b.ID); nb.Status.Done() {
				t.Fatalf("the build ended before the builder answered: %s", nb.Status)
			}
			if answers {
				close(gate)
			} else {
				e.clock.Advance(5 * time.Second)
			}
			want(t, e.ended(b.ID), build.Canceled, "canceled", ok, ok, ok, ok, ok)
		})
	}
}

func TestSSHUnavailable(t *testing.T) {
	e := newEnv(t, passing, func(c *Config) { c.SSH = nil })
	b := e.ended(e.queue(true, time.Hour).ID)
	want(t, b, build.Failed, "SSH access is not available on this server", bad, skip, skip, skip, skip)
	if _, created := e.driver.counts(); created != 0 {
		t.Errorf("a machine was started for a build that cannot run")
	}
}

// TestSSHExtend: more time moves the window's end, tells the sessions,
// is recorded with who asked, and stops at max_build_duration.
func TestSSHExtend(t *testing.T) {
	e := newEnv(t, sshBuilder(nil))
	b := e.queue(true, 30*time.Minute)
	fb := <-e.driver.started
	b = e.wait(b.ID, "the SSH window", inWindow)
	end := *b.SSH.ExpiresAt
	if err := e.r.Extend(b.ID, 5*time.Minute, "ann"); err != nil {
		t.Fatal(err)
	}
	b = e.wait(b.ID, "the extension", func(b *build.Build) bool {
		return b.SSH.ExpiresAt != nil && b.SSH.ExpiresAt.Equal(end.Add(5*time.Minute))
	})
	if b.SSH.ExpiresBecause != "extended by ann" {
		t.Errorf("because %q", b.SSH.ExpiresBecause)
	}
	fb.waitCommand(t, link.SSHNotice, "ann extended this machine's time by 5m0s")
	// Far past the deadline: capped there.
	if err := e.r.Extend(b.ID, time.Hour, "bob"); err != nil {
		t.Fatal(err)
	}
	deadline := b.StartedAt.Add(30*time.Minute - 500*time.Millisecond)
	b = e.wait(b.ID, "the capped extension", func(b *build.Build) bool { return b.SSH.ExpiresAt != nil && b.SSH.ExpiresAt.Equal(deadline) })
	evs := strings.Join(e.events(b.ID), " ")
	if strings.Count(evs, "ssh_extended") != 2 {
		t.Errorf("events: %s, want two ssh_extended", evs)
	}
	e.cancel(b.ID)
	e.ended(b.ID)
	contains(t, "log", e.logs(b.ID), "hangar: ann extended this machine's time by 5m0s", "hangar: bob extended this machine's time by 1h0m0s, capped at max_build_duration")
	if err := e.r.Extend(b.ID, time.Minute, "ann"); err != ErrNotRunning {
		t.Errorf("extending an ended build: %v", err)
	}
}

// queueOnFailure stores a queued build of scripts with SSH on failure.
func (e *env) queueOnFailure() *build.Build {
	e.t.Helper()
	spec, _ := json.Marshal(build.Spec{Repo: "https://example.com/o/demo.git", Scripts: scripts, SSHOnFailure: true})
	b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "0123456789abcdef",
		Status: build.Queued, Trigger: build.Manual, MaxDuration: 3600, Steps: build.NewSteps(scripts)}
	if err := e.st.CreateBuild(context.Background(), b, spec); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// TestSSHOnFailure: a passing build finishes at once without a credential;
// a failing one opens SSH access after the failure, for the window.
func TestSSHOnFailure(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		if fb.job.SSH != nil || fb.hello.SSHHostKey == "" {
			t.Errorf("an on-failure build's job: ssh %+v, host key given %v", fb.job.SSH, fb.hello.SSHHostKey != "")
		}
		fb.step(0, 0, "Cloning")
		fb.step(1, 0, "hi")
		fb.step(2, 3, "about to fail")
		fb.done(`step "Broken" failed: exit status 3`)
		cmd := fb.waitCommand(t, link.SSHOpen, "")
		if cmd.SSH == nil || cmd.SSH.Alias != fb.hello.Name {
			t.Errorf("ssh_open: %+v", cmd.SSH)
		}
		fb.ssh("tunnel_up")
		fb.wait(ctx)
	})
	b := e.queueOnFailure()
	b = e.wait(b.ID, "SSH ready after the failure", func(b *build.Build) bool { return inWindow(b) && b.SSH.State == build.SSHReady })
	if !b.SSH.Enabled {
		t.Errorf("ssh after the failure: %+v", b.SSH)
	}
	if _, err := e.st.GetBuildSSH(context.Background(), b.ID); err != nil {
		t.Errorf("no credential after the failure: %v", err)
	}
	e.cancel(b.ID)
	b = e.ended(b.ID)
	contains(t, "log", e.logs(b.ID), "hangar: a step failed: SSH access opens for you to debug it")

	// A passing build: no window, no credential.
	e2 := newEnv(t, passing)
	p := e2.ended(e2.queueOnFailure().ID)
	want(t, p, build.Finished, "", ok, ok, ok, ok, ok)
	if p.SSH.Enabled {
		t.Errorf("a passing on-failure build has SSH: %+v", p.SSH)
	}
	if c, err := e2.st.GetBuildSSH(context.Background(), p.ID); err == nil {
		t.Errorf("a passing on-failure build got a credential: %+v", c)
	}
}
