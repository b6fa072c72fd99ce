// Package access holds the rules of a build's SSH access as a pure state
// machine: events with their time go in (Machine.Handle), the new state
// (Machine.State) and a list of effects come out, which the runner carries
// out (tell sessions, revoke access, write the state, arm a timer, end the
// build). It does no I/O and never reads the clock.
//
// The rules (docs/ssh.md, DESIGN.md):
//
//   - Access opens with the build (state pending); it is ready while the
//     builder's tunnel is up and connected while someone is connected
//     through the gateway.
//   - While the steps run, access lasts at most until the build's hard
//     deadline (max_build_duration); the runner times the build out there.
//   - When the steps complete, access stays for AfterSteps (default 20
//     minutes), bounded by the deadline: it then ends DeadlineMargin before
//     the deadline, so that the build finishes by this rule rather than
//     timing out. When it ends, the build finishes with the steps' result.
//   - The end of the last login shell is a logout: access closes; if the
//     steps are done the build finishes now, else the steps go on. Only a
//     shell's own end counts (exit, logout, Ctrl-D, the browser terminal's
//     close button): a shell whose connection dropped is detached, still a
//     live login shell, and the next connection re-attaches to it; a
//     detached shell ends only with access (its time limits, cancel, the
//     build's end).
//   - Close (cancel, timeout, failed start, any end of the build) closes it.
//   - Extend (a user asking for more time) moves the end after the steps
//     later by By, never past the deadline's margin; before the steps
//     complete it lengthens the time that will follow them.
//   - Login sessions are told 5 minutes and 1 minute before access ends, if
//     that is more than the notice plus NoticeSlack away; when the end moves,
//     the notices move with it.
package access

import (
	"fmt"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// Defaults of the rules.
const (
	// DefaultAfterSteps is how long access stays after the steps complete.
	DefaultAfterSteps = 20 * time.Minute
	// DeadlineMargin is how long before the hard deadline access ends
	// after the steps, so the build finishes rather than times out.
	DeadlineMargin = 500 * time.Millisecond
	// NoticeSlack: a notice is given only if access ends more than the
	// notice's lead plus NoticeSlack from now.
	NoticeSlack = 10 * time.Second
)

// Notices are the leads of the warnings given before access ends.
var Notices = []time.Duration{5 * time.Minute, time.Minute}

// Kind is the kind of an Event.
type Kind int

// Events that move access.
const (
	// Open: access is set up (its credential admitted at the gateway).
	Open Kind = iota + 1
	// TunnelUp and TunnelDown: the builder's tunnel came up, went down.
	TunnelUp
	TunnelDown
	// LoginStart and LoginEnd: a login shell started, ended.
	LoginStart
	LoginEnd
	// Detach and Attach: a login shell's connection dropped (it runs on),
	// a client re-attached to it.
	Detach
	Attach
	// Connect and Disconnect: a user's connection through the gateway
	// (Remote, Client).
	Connect
	Disconnect
	// StepsDone: the builder completed the steps with Result.
	StepsDone
	// Tick: the time asked for by the last Wake effect has come.
	Tick
	// Close: access ends for Reason (cancel, timeout, the build ended).
	Close
	// Extend: Who asked for By more time.
	Extend
)

var kindNames = map[Kind]string{
	Open: "open", TunnelUp: "tunnel_up", TunnelDown: "tunnel_down", LoginStart: "login_start",
	LoginEnd: "login_end", Detach: "detach", Attach: "attach", Connect: "connect", Disconnect: "disconnect", StepsDone: "steps_done",
	Tick: "tick", Close: "close", Extend: "extend",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is something that happened to a build's access at Time.
type Event struct {
	Kind   Kind
	Time   time.Time
	Remote string        // Connect, Disconnect: the client's address
	Client string        // Connect: the client's SSH version
	Result build.Status  // StepsDone
	Reason string        // Close
	By     time.Duration // Extend
	Who    string        // Extend
}

// EffectKind is the kind of an Effect.
type EffectKind int

// Effects, in the order Handle lists them: Notify, Revoke and Log as they
// arise, then Save, Wake and Finish.
const (
	// Notify: show Text in every login session.
	Notify EffectKind = iota + 1
	// Revoke: access is closed for good, Text says why: the gateway refuses
	// the credential and drops connections, the builder closes its sessions
	// and admits no one again, the build's log and events record it.
	Revoke
	// Log: write Text in the build's log.
	Log
	// Save: the shown state (State) changed; write it.
	Save
	// Wake: send a Tick at At (replacing any earlier Wake); a zero At
	// cancels the wake-up. A Tick at or after At uses the wake-up up: the
	// machine asks again if it needs another.
	Wake
	// Finish: the build ends now, with the steps' result Result.
	Finish
)

var effectNames = map[EffectKind]string{
	Notify: "notify", Revoke: "revoke", Log: "log", Save: "save", Wake: "wake", Finish: "finish",
}

func (k EffectKind) String() string {
	if s, ok := effectNames[k]; ok {
		return s
	}
	return fmt.Sprintf("EffectKind(%d)", int(k))
}

// Effect is something the runner must do.
type Effect struct {
	Kind   EffectKind
	Text   string
	At     time.Time
	Result build.Status
}

func (e Effect) String() string {
	switch e.Kind {
	case Wake:
		if e.At.IsZero() {
			return "wake(never)"
		}
		return "wake(" + e.At.UTC().Format(time.RFC3339Nano) + ")"
	case Finish:
		return "finish(" + string(e.Result) + ")"
	case Save:
		return "save"
	}
	return fmt.Sprintf("%s(%q)", e.Kind, e.Text)
}

// notice is a warning due at at.
type notice struct {
	at   time.Time
	lead time.Duration
}

// Machine is one build's access. Create it with New; it is not safe for
// concurrent use (one goroutine, the build's, drives it).
type Machine struct {
	id         int64
	deadline   time.Time
	afterSteps time.Duration

	tunnelUp  bool
	logins    int                // open login shells, detached ones included
	detached  int                // login shells whose connection dropped
	sessions  []build.SSHSession // open connections through the gateway
	closed    bool               // access has ended for good
	reason    string             // why it closed
	stepsDone bool               // the builder completed the steps...
	result    build.Status       // ...with this result
	ends      time.Time          // when access ends at the latest (zero before Open)
	because   string             // the rule that sets ends
	notices   []notice           // warnings still due, earliest first
	wake      time.Time          // the last Wake asked for (zero: none)
	out       []Effect           // effects of the event being handled
	finish    bool               // the event ends the build
	shown     build.SSH          // State before the event
}

// New returns the access of build id whose hard deadline is deadline;
// access stays afterSteps after the steps complete (0: DefaultAfterSteps).
func New(id int64, deadline time.Time, afterSteps time.Duration) *Machine {
	if afterSteps <= 0 {
		afterSteps = DefaultAfterSteps
	}
	return &Machine{id: id, deadline: deadline, afterSteps: afterSteps}
}

// Shells returns how many login shells are open, and how many of them are
// detached.
func (m *Machine) Shells() (open, detached int) { return m.logins, m.detached }

// Closed reports whether access has ended.
func (m *Machine) Closed() bool { return m.closed }

// State is access as the API shows it.
func (m *Machine) State() build.SSH {
	s := build.SSH{
		Enabled:        true,
		ExpiresBecause: m.because,
		ClosedReason:   m.reason,
		Connections:    len(m.sessions),
		Sessions:       append([]build.SSHSession{}, m.sessions...),
	}
	switch {
	case m.closed:
		s.State = build.SSHClosed
	case len(m.sessions) > 0:
		s.State = build.SSHConnected
	case m.tunnelUp:
		s.State = build.SSHReady
	default:
		s.State = build.SSHPending
	}
	if !m.ends.IsZero() {
		t := m.ends.UTC()
		s.ExpiresAt = &t
	}
	return s
}

// Handle applies ev and returns what the runner must do.
func (m *Machine) Handle(ev Event) []Effect {
	m.out, m.finish = nil, false
	m.shown = m.State()
	now := ev.Time
	switch ev.Kind {
	case Open:
		if !m.closed && m.ends.IsZero() {
			m.setEnd(now, m.deadline, "max_build_duration")
		}
	case TunnelUp:
		m.tunnelUp = true
	case TunnelDown:
		m.tunnelUp = false
	case LoginStart:
		m.logins++
	case Detach:
		if m.detached < m.logins {
			m.detached++
		}
		if !m.closed {
			m.emit(Effect{Kind: Log, Text: "the connection of a login shell dropped; the shell keeps running: connect again to re-attach to it"})
		}
	case Attach:
		if m.detached > 0 {
			m.detached--
		}
	case LoginEnd:
		if m.logins > 0 {
			m.logins--
			m.detached = min(m.detached, m.logins)
			if m.logins == 0 && !m.closed {
				m.close(now, fmt.Sprintf("SSH access to build %d ended: you logged out", m.id))
				m.finish = m.stepsDone
			}
		}
	case Connect:
		if !m.closed {
			m.sessions = append(m.sessions, build.SSHSession{Remote: ev.Remote, Client: ev.Client, Since: now.UTC()})
		}
	case Disconnect:
		for i, s := range m.sessions {
			if s.Remote == ev.Remote {
				m.sessions = append(m.sessions[:i:i], m.sessions[i+1:]...)
				break
			}
		}
	case StepsDone:
		m.onStepsDone(now, ev.Result)
	case Tick:
		m.onTick(now)
	case Close:
		if !m.closed {
			m.close(now, ev.Reason)
		}
	case Extend:
		m.onExtend(now, ev.By, ev.Who)
	}
	return m.effects()
}

// onExtend gives more time, bounded by the deadline.
func (m *Machine) onExtend(now time.Time, by time.Duration, who string) {
	if m.closed || by <= 0 {
		return
	}
	if !m.stepsDone {
		// Access lasts until the deadline while the steps run: what can
		// grow is the time after them.
		m.afterSteps += by
		m.emit(Effect{Kind: Log, Text: fmt.Sprintf("%s added %s to the time the machine stays after the steps (now %s, within max_build_duration)", who, by, m.afterSteps)})
		return
	}
	hard := m.deadline.Add(-DeadlineMargin)
	if !m.ends.Before(hard) {
		m.emit(Effect{Kind: Log, Text: fmt.Sprintf("%s asked for %s more, but the build is at its max_build_duration (%s UTC)", who, by, hard.UTC().Format("15:04:05"))})
		return
	}
	until, because, capped := m.ends.Add(by), fmt.Sprintf("extended by %s", who), ""
	if hard.Before(until) {
		until, capped = hard, ", capped at max_build_duration"
	}
	m.setEnd(now, until, because)
	text := fmt.Sprintf("%s extended this machine's time by %s%s: it now stays until %s UTC", who, by, capped, until.UTC().Format("15:04:05"))
	m.emit(Effect{Kind: Notify, Text: "Hangar: " + text + "."})
	m.emit(Effect{Kind: Log, Text: text})
}

// onStepsDone starts the wait after the steps.
func (m *Machine) onStepsDone(now time.Time, result build.Status) {
	if m.stepsDone {
		return
	}
	m.stepsDone, m.result = true, result
	if m.closed {
		m.finish = true
		return
	}
	until, because := now.Add(m.afterSteps), fmt.Sprintf("%s after the steps completed", m.afterSteps)
	if hard := m.deadline.Add(-DeadlineMargin); hard.Before(until) {
		until, because = hard, "max_build_duration"
	}
	wait := until.Sub(now)
	if wait <= 0 {
		m.close(now, fmt.Sprintf("SSH access to build %d ended: max_build_duration reached", m.id))
		m.finish = true
		return
	}
	m.emit(Effect{Kind: Notify, Text: fmt.Sprintf(
		"Hangar: the build's steps are done (%s). This machine stays for %s (until %s UTC, %s); log out to finish the build now.",
		result, wait.Round(time.Second), until.UTC().Format("15:04:05"), because)})
	m.emit(Effect{Kind: Log, Text: fmt.Sprintf("steps done; the machine stays for SSH for %s (%s) unless you log out", wait.Round(time.Second), because)})
	m.setEnd(now, until, because)
}

// onTick gives the notices that are due and ends the window when its time
// has come.
func (m *Machine) onTick(now time.Time) {
	if !m.wake.IsZero() && !now.Before(m.wake) {
		m.wake = time.Time{} // consumed: effects() asks for the next one
	}
	var due *notice
	for len(m.notices) > 0 && !now.Before(m.notices[0].at) {
		due = &m.notices[0]
		m.notices = m.notices[1:]
	}
	if due != nil && !m.closed {
		m.emit(Effect{Kind: Notify, Text: fmt.Sprintf("Hangar: this machine stops in %s (%s).", due.lead, m.because)})
	}
	if m.stepsDone && !m.closed && !now.Before(m.ends) {
		why := m.because
		switch {
		case why == "max_build_duration":
			why += " reached"
		case strings.HasPrefix(why, "extended by "):
			why = "the time " + why + " is up"
		}
		m.close(now, fmt.Sprintf("SSH access to build %d ended: %s (%s UTC)", m.id, why, m.ends.UTC().Format("15:04")))
		m.finish = true
	}
}

// setEnd makes until (because) the end of access and plans its notices.
func (m *Machine) setEnd(now, until time.Time, because string) {
	m.ends, m.because = until, because
	m.notices = nil
	for _, lead := range Notices {
		if until.Sub(now) > lead+NoticeSlack {
			m.notices = append(m.notices, notice{at: until.Add(-lead), lead: lead})
		}
	}
}

// close ends access for good.
func (m *Machine) close(now time.Time, reason string) {
	m.closed, m.reason = true, reason
	m.ends = now
	m.sessions = nil
	m.notices = nil
	m.emit(Effect{Kind: Revoke, Text: reason})
}

func (m *Machine) emit(e Effect) { m.out = append(m.out, e) }

// next is when the machine needs a Tick (zero: never).
func (m *Machine) next() time.Time {
	var at time.Time
	if len(m.notices) > 0 {
		at = m.notices[0].at
	}
	if m.stepsDone && !m.closed && (at.IsZero() || m.ends.Before(at)) {
		at = m.ends
	}
	return at
}

// effects completes the event's effects with Save, Wake and Finish.
func (m *Machine) effects() []Effect {
	if !sameState(m.shown, m.State()) {
		m.emit(Effect{Kind: Save})
	}
	if next := m.next(); !next.Equal(m.wake) {
		m.wake = next
		m.emit(Effect{Kind: Wake, At: next})
	}
	if m.finish {
		m.emit(Effect{Kind: Finish, Result: m.result})
	}
	out := m.out
	m.out = nil
	return out
}

func sameState(a, b build.SSH) bool {
	if a.State != b.State || a.ExpiresBecause != b.ExpiresBecause || a.ClosedReason != b.ClosedReason ||
		a.Connections != b.Connections || len(a.Sessions) != len(b.Sessions) {
		return false
	}
	if (a.ExpiresAt == nil) != (b.ExpiresAt == nil) || a.ExpiresAt != nil && !a.ExpiresAt.Equal(*b.ExpiresAt) {
		return false
	}
	for i := range a.Sessions {
		if a.Sessions[i] != b.Sessions[i] {
			return false
		}
	}
	return true
}
