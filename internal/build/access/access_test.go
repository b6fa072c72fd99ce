package access

import (
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// step is one event and what must follow from it.
type step struct {
	ev      Event
	want    []string       // the effects, as Effect.String gives them
	state   build.SSHState // the shown state after it ("": not checked)
	expires time.Duration  // ExpiresAt - t0 (0: not checked)
	check   func(build.SSH) string
}

func wake(d time.Duration) string { return Effect{Kind: Wake, At: at(d)}.String() }

const (
	save      = "save"
	wakeNever = "wake(never)"
)

func notify(text string) string     { return Effect{Kind: Notify, Text: text}.String() }
func revoke(text string) string     { return Effect{Kind: Revoke, Text: text}.String() }
func logLine(text string) string    { return Effect{Kind: Log, Text: text}.String() }
func finish(st build.Status) string { return Effect{Kind: Finish, Result: st}.String() }

func ev(k Kind, d time.Duration) Event { return Event{Kind: k, Time: at(d)} }

func TestMachine(t *testing.T) {
	const after = 20 * time.Minute
	const afterWhy = "20m0s after the steps completed"
	logout := "SSH access to build 7 ended: you logged out"
	const detachLog = "the connection of a login shell dropped; the shell keeps running: connect again to re-attach to it"
	tests := []struct {
		name     string
		deadline time.Duration // from t0
		after    time.Duration
		steps    []step
	}{
		{
			name: "open plans both notices before the deadline", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}, state: build.SSHPending, expires: time.Hour,
					check: func(s build.SSH) string {
						if s.ExpiresBecause != "max_build_duration" {
							return "because " + s.ExpiresBecause
						}
						return ""
					}},
				{ev: ev(Open, time.Second), want: nil},
				{ev: ev(Tick, 55*time.Minute), want: []string{notify("Hangar: this machine stops in 5m0s (max_build_duration)."), wake(59 * time.Minute)}},
				{ev: ev(Tick, 59*time.Minute), want: []string{notify("Hangar: this machine stops in 1m0s (max_build_duration).")}, state: build.SSHPending},
				// The deadline itself is the runner's (a timeout), not a rule here.
				{ev: ev(Tick, time.Hour), want: nil, state: build.SSHPending},
			},
		},
		{
			name: "a notice only if more than its lead plus 10s away", deadline: 70 * time.Second, after: after,
			steps: []step{{ev: ev(Open, 0), want: []string{save}, expires: 70 * time.Second}},
		},
		{
			name: "the 1-minute notice alone", deadline: 71 * time.Second, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(11 * time.Second)}},
				// The timer that fired was the last: no wake-up to cancel.
				{ev: ev(Tick, 11*time.Second), want: []string{notify("Hangar: this machine stops in 1m0s (max_build_duration).")}},
			},
		},
		{
			name: "a late tick gives only the last notice due", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(Tick, 59*time.Minute+30*time.Second), want: []string{notify("Hangar: this machine stops in 1m0s (max_build_duration).")}},
			},
		},
		{
			name: "an early tick does nothing", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(Tick, 54*time.Minute), want: nil},
				{ev: ev(Tick, 55*time.Minute), want: []string{notify("Hangar: this machine stops in 5m0s (max_build_duration)."), wake(59 * time.Minute)}},
			},
		},
		{
			name: "tunnel and connections set the shown state", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}, state: build.SSHPending},
				{ev: ev(TunnelUp, time.Second), want: []string{save}, state: build.SSHReady},
				{ev: ev(TunnelDown, 2*time.Second), want: []string{save}, state: build.SSHPending},
				{ev: ev(TunnelUp, 3*time.Second), want: []string{save}, state: build.SSHReady},
				{ev: ev(TunnelUp, 4*time.Second), want: nil, state: build.SSHReady},
				{ev: Event{Kind: Connect, Time: at(5 * time.Second), Remote: "1.2.3.4:5", Client: "OpenSSH_9"}, want: []string{save}, state: build.SSHConnected,
					check: func(s build.SSH) string {
						if s.Connections != 1 || len(s.Sessions) != 1 || s.Sessions[0].Remote != "1.2.3.4:5" || s.Sessions[0].Client != "OpenSSH_9" || !s.Sessions[0].Since.Equal(at(5*time.Second)) {
							return "sessions wrong"
						}
						return ""
					}},
				{ev: Event{Kind: Connect, Time: at(6 * time.Second), Remote: "1.2.3.4:6"}, want: []string{save}, state: build.SSHConnected},
				{ev: Event{Kind: Disconnect, Time: at(7 * time.Second), Remote: "9.9.9.9:1"}, want: nil, state: build.SSHConnected},
				{ev: Event{Kind: Disconnect, Time: at(8 * time.Second), Remote: "1.2.3.4:5"}, want: []string{save}, state: build.SSHConnected,
					check: func(s build.SSH) string {
						if s.Connections != 1 || s.Sessions[0].Remote != "1.2.3.4:6" {
							return "the wrong session went"
						}
						return ""
					}},
				{ev: Event{Kind: Disconnect, Time: at(9 * time.Second), Remote: "1.2.3.4:6"}, want: []string{save}, state: build.SSHReady},
			},
		},
		{
			name: "logout while the steps run closes access; the steps go on", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(TunnelUp, time.Second), want: []string{save}},
				{ev: ev(LoginStart, 2*time.Second), want: nil},
				{ev: ev(LoginStart, 3*time.Second), want: nil},
				{ev: ev(LoginEnd, 4*time.Second), want: nil, state: build.SSHReady},
				{ev: ev(LoginEnd, 5*time.Second), want: []string{revoke(logout), save, wakeNever}, state: build.SSHClosed, expires: 5 * time.Second,
					check: func(s build.SSH) string {
						if s.ClosedReason != logout {
							return "reason " + s.ClosedReason
						}
						return ""
					}},
				// Closed for good: nothing moves it any more.
				{ev: ev(LoginEnd, 6*time.Second), want: nil},
				{ev: ev(LoginStart, 7*time.Second), want: nil},
				{ev: ev(LoginEnd, 8*time.Second), want: nil, state: build.SSHClosed},
				{ev: ev(TunnelUp, 9*time.Second), want: nil, state: build.SSHClosed},
				{ev: Event{Kind: Connect, Time: at(10 * time.Second), Remote: "r"}, want: nil, state: build.SSHClosed},
				{ev: ev(Tick, 55*time.Minute), want: nil},
				{ev: Event{Kind: Close, Time: at(11 * time.Second), Reason: "canceled"}, want: nil},
				// The steps complete: the build ends at once.
				{ev: Event{Kind: StepsDone, Time: at(time.Minute), Result: build.Failed}, want: []string{finish(build.Failed)}, state: build.SSHClosed},
			},
		},
		{
			name: "a login end without a start is no logout", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(LoginEnd, time.Second), want: nil, state: build.SSHPending},
			},
		},
		{
			name: "after the steps: the window, its notices, its end", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: Event{Kind: StepsDone, Time: at(10 * time.Minute), Result: build.Finished}, want: []string{
					notify("Hangar: the build's steps are done (finished). This machine stays for 20m0s (until 10:30:00 UTC, " + afterWhy + "); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 20m0s (" + afterWhy + ") unless you log out"),
					save, wake(25 * time.Minute),
				}, expires: 30 * time.Minute, check: func(s build.SSH) string {
					if s.ExpiresBecause != afterWhy {
						return "because " + s.ExpiresBecause
					}
					return ""
				}},
				{ev: Event{Kind: StepsDone, Time: at(11 * time.Minute), Result: build.Failed}, want: nil},
				{ev: ev(Tick, 25*time.Minute), want: []string{notify("Hangar: this machine stops in 5m0s (" + afterWhy + ")."), wake(29 * time.Minute)}},
				{ev: ev(Tick, 29*time.Minute), want: []string{notify("Hangar: this machine stops in 1m0s (" + afterWhy + ")."), wake(30 * time.Minute)}},
				{ev: ev(Tick, 30*time.Minute), want: []string{
					revoke("SSH access to build 7 ended: " + afterWhy + " (10:30 UTC)"), save, finish(build.Finished),
				}, state: build.SSHClosed, expires: 30 * time.Minute},
				{ev: ev(Tick, 31*time.Minute), want: nil},
			},
		},
		{
			name: "the deadline bounds the window, half a second early", deadline: 15 * time.Minute, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(10 * time.Minute)}},
				{ev: Event{Kind: StepsDone, Time: at(9 * time.Minute), Result: build.Failed}, want: []string{
					notify("Hangar: the build's steps are done (failed). This machine stays for 6m0s (until 10:14:59 UTC, max_build_duration); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 6m0s (max_build_duration) unless you log out"),
					// The end moved: so do the notices.
					save, wake(9*time.Minute + 59500*time.Millisecond),
				}, expires: 15*time.Minute - DeadlineMargin},
				{ev: ev(Tick, 9*time.Minute+59500*time.Millisecond), want: []string{notify("Hangar: this machine stops in 5m0s (max_build_duration)."), wake(13*time.Minute + 59500*time.Millisecond)}},
				{ev: ev(Tick, 13*time.Minute+59500*time.Millisecond), want: []string{notify("Hangar: this machine stops in 1m0s (max_build_duration)."), wake(15*time.Minute - DeadlineMargin)}},
				{ev: ev(Tick, 15*time.Minute-DeadlineMargin), want: []string{
					revoke("SSH access to build 7 ended: max_build_duration reached (10:14 UTC)"), save, finish(build.Failed),
				}, state: build.SSHClosed},
			},
		},
		{
			name: "a short window has no notices", deadline: time.Hour, after: 4 * time.Second,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: Event{Kind: StepsDone, Time: at(time.Minute), Result: build.Finished}, want: []string{
					notify("Hangar: the build's steps are done (finished). This machine stays for 4s (until 10:01:04 UTC, 4s after the steps completed); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 4s (4s after the steps completed) unless you log out"),
					save, wake(time.Minute + 4*time.Second),
				}},
				{ev: ev(Tick, time.Minute+4*time.Second), want: []string{
					revoke("SSH access to build 7 ended: 4s after the steps completed (10:01 UTC)"), save, finish(build.Finished),
				}},
			},
		},
		{
			name: "steps done within the margin end access at once", deadline: 10 * time.Minute, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(5 * time.Minute)}},
				{ev: Event{Kind: StepsDone, Time: at(10*time.Minute - 200*time.Millisecond), Result: build.Finished}, want: []string{
					revoke("SSH access to build 7 ended: max_build_duration reached"), save, wakeNever, finish(build.Finished),
				}, state: build.SSHClosed},
			},
		},
		{
			name: "logout after the steps finishes the build", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(TunnelUp, time.Second), want: []string{save}},
				{ev: Event{Kind: Connect, Time: at(2 * time.Second), Remote: "r"}, want: []string{save}, state: build.SSHConnected},
				{ev: ev(LoginStart, 3*time.Second), want: nil},
				{ev: Event{Kind: StepsDone, Time: at(10 * time.Minute), Result: build.Finished}, want: []string{
					notify("Hangar: the build's steps are done (finished). This machine stays for 20m0s (until 10:30:00 UTC, " + afterWhy + "); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 20m0s (" + afterWhy + ") unless you log out"),
					save, wake(25 * time.Minute),
				}},
				{ev: ev(LoginEnd, 11*time.Minute), want: []string{revoke(logout), save, wakeNever, finish(build.Finished)}, state: build.SSHClosed,
					check: func(s build.SSH) string {
						if s.Connections != 0 || len(s.Sessions) != 0 {
							return "sessions left"
						}
						return ""
					}},
				// The gateway's late disconnect changes nothing.
				{ev: Event{Kind: Disconnect, Time: at(12 * time.Minute), Remote: "r"}, want: nil, state: build.SSHClosed},
			},
		},
		{
			name: "a dropped connection is no logout; the window still ends on time", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(TunnelUp, time.Second), want: []string{save}},
				{ev: Event{Kind: Connect, Time: at(2 * time.Second), Remote: "r"}, want: []string{save}, state: build.SSHConnected},
				{ev: ev(LoginStart, 3*time.Second), want: nil},
				{ev: ev(Detach, 4*time.Second), want: []string{logLine(detachLog)}},
				{ev: Event{Kind: Disconnect, Time: at(5 * time.Second), Remote: "r"}, want: []string{save}, state: build.SSHReady},
				{ev: Event{Kind: StepsDone, Time: at(10 * time.Minute), Result: build.Finished}, want: []string{
					notify("Hangar: the build's steps are done (finished). This machine stays for 20m0s (until 10:30:00 UTC, " + afterWhy + "); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 20m0s (" + afterWhy + ") unless you log out"),
					save, wake(25 * time.Minute),
				}, state: build.SSHReady},
				{ev: Event{Kind: Connect, Time: at(11 * time.Minute), Remote: "r2"}, want: []string{save}, state: build.SSHConnected},
				{ev: ev(Attach, 11*time.Minute), want: nil},
				{ev: ev(Detach, 12*time.Minute), want: []string{logLine(detachLog)}},
				{ev: ev(Tick, 25*time.Minute), want: []string{notify("Hangar: this machine stops in 5m0s (" + afterWhy + ")."), wake(29 * time.Minute)}},
				{ev: ev(Tick, 29*time.Minute), want: []string{notify("Hangar: this machine stops in 1m0s (" + afterWhy + ")."), wake(30 * time.Minute)}},
				{ev: ev(Tick, 30*time.Minute), want: []string{revoke("SSH access to build 7 ended: " + afterWhy + " (10:30 UTC)"), save, finish(build.Finished)}, state: build.SSHClosed},
				// The shell killed at the end is no second logout.
				{ev: ev(LoginEnd, 31*time.Minute), want: nil},
			},
		},
		{
			name: "close (cancel, timeout, failed start, build end)", deadline: time.Hour, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(55 * time.Minute)}},
				{ev: ev(TunnelUp, time.Second), want: []string{save}},
				{ev: Event{Kind: Close, Time: at(2 * time.Minute), Reason: "build 7 has ended (canceled): its SSH access is closed"},
					want: []string{revoke("build 7 has ended (canceled): its SSH access is closed"), save, wakeNever}, state: build.SSHClosed, expires: 2 * time.Minute},
				{ev: Event{Kind: Close, Time: at(3 * time.Minute), Reason: "again"}, want: nil},
				{ev: Event{Kind: StepsDone, Time: at(4 * time.Minute), Result: build.Finished}, want: []string{finish(build.Finished)}},
			},
		},
		{
			name: "more time: after the steps, capped at the deadline", deadline: 40 * time.Minute, after: after,
			steps: []step{
				{ev: ev(Open, 0), want: []string{save, wake(35 * time.Minute)}},
				// Before the steps complete it lengthens the time after them.
				{ev: Event{Kind: Extend, Time: at(time.Minute), By: 5 * time.Minute, Who: "ann"}, want: []string{
					logLine("ann added 5m0s to the time the machine stays after the steps (now 25m0s, within max_build_duration)"),
				}, expires: 40 * time.Minute},
				{ev: Event{Kind: StepsDone, Time: at(10 * time.Minute), Result: build.Failed}, want: []string{
					notify("Hangar: the build's steps are done (failed). This machine stays for 25m0s (until 10:35:00 UTC, 25m0s after the steps completed); log out to finish the build now."),
					logLine("steps done; the machine stays for SSH for 25m0s (25m0s after the steps completed) unless you log out"),
					save, wake(30 * time.Minute),
				}, expires: 35 * time.Minute},
				{ev: Event{Kind: Extend, Time: at(12 * time.Minute), By: 3 * time.Minute, Who: "bob"}, want: []string{
					notify("Hangar: bob extended this machine's time by 3m0s: it now stays until 10:38:00 UTC."),
					logLine("bob extended this machine's time by 3m0s: it now stays until 10:38:00 UTC"),
					save, wake(33 * time.Minute),
				}, expires: 38 * time.Minute, check: func(s build.SSH) string {
					if s.ExpiresBecause != "extended by bob" {
						return "because " + s.ExpiresBecause
					}
					return ""
				}},
				{ev: Event{Kind: Extend, Time: at(13 * time.Minute), By: 10 * time.Minute, Who: "ann"}, want: []string{
					notify("Hangar: ann extended this machine's time by 10m0s, capped at max_build_duration: it now stays until 10:39:59 UTC."),
					logLine("ann extended this machine's time by 10m0s, capped at max_build_duration: it now stays until 10:39:59 UTC"),
					save, wake(35*time.Minute - DeadlineMargin),
				}, expires: 40*time.Minute - DeadlineMargin},
				{ev: Event{Kind: Extend, Time: at(14 * time.Minute), By: time.Minute, Who: "bob"}, want: []string{
					logLine("bob asked for 1m0s more, but the build is at its max_build_duration (10:39:59 UTC)"),
				}},
				{ev: ev(Tick, 35*time.Minute-DeadlineMargin), want: []string{notify("Hangar: this machine stops in 5m0s (extended by ann)."), wake(39*time.Minute - DeadlineMargin)}},
				{ev: ev(Tick, 39*time.Minute-DeadlineMargin), want: []string{notify("Hangar: this machine stops in 1m0s (extended by ann)."), wake(40*time.Minute - DeadlineMargin)}},
				{ev: ev(Tick, 40*time.Minute-DeadlineMargin), want: []string{
					revoke("SSH access to build 7 ended: the time extended by ann is up (10:39 UTC)"), save, finish(build.Failed),
				}, state: build.SSHClosed},
				// Nothing more once closed.
				{ev: Event{Kind: Extend, Time: at(41 * time.Minute), By: time.Minute, Who: "bob"}, want: nil},
			},
		},
		{
			name: "close before open", deadline: time.Hour, after: after,
			steps: []step{
				{ev: Event{Kind: Close, Time: at(time.Second), Reason: "failed"}, want: []string{revoke("failed"), save}, state: build.SSHClosed, expires: time.Second},
				{ev: ev(Open, 2*time.Second), want: nil, state: build.SSHClosed},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(7, at(tt.deadline), tt.after)
			for i, s := range tt.steps {
				got := []string{}
				for _, e := range m.Handle(s.ev) {
					got = append(got, e.String())
				}
				want := s.want
				if want == nil {
					want = []string{}
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("step %d (%s at +%s):\n got %q\nwant %q", i, s.ev.Kind, s.ev.Time.Sub(t0), got, want)
				}
				st := m.State()
				if s.state != "" && st.State != s.state {
					t.Errorf("step %d (%s): state %s, want %s", i, s.ev.Kind, st.State, s.state)
				}
				if s.expires != 0 && (st.ExpiresAt == nil || !st.ExpiresAt.Equal(at(s.expires))) {
					t.Errorf("step %d (%s): expires %v, want +%s", i, s.ev.Kind, st.ExpiresAt, s.expires)
				}
				if s.check != nil {
					if msg := s.check(st); msg != "" {
						t.Errorf("step %d (%s): %s: %+v", i, s.ev.Kind, msg, st)
					}
				}
				if m.Closed() != (st.State == build.SSHClosed) {
					t.Errorf("step %d: Closed() %v with state %s", i, m.Closed(), st.State)
				}
			}
		})
	}
}

func TestDefaultAfterSteps(t *testing.T) {
	m := New(1, at(2*time.Hour), 0)
	m.Handle(ev(Open, 0))
	m.Handle(Event{Kind: StepsDone, Time: at(time.Minute), Result: build.Finished})
	if st := m.State(); !st.ExpiresAt.Equal(at(21*time.Minute)) || st.ExpiresBecause != "20m0s after the steps completed" {
		t.Errorf("default window: %v %q", st.ExpiresAt, st.ExpiresBecause)
	}
}

func TestStateIsACopy(t *testing.T) {
	m := New(1, at(time.Hour), 0)
	m.Handle(Event{Kind: Connect, Time: t0, Remote: "a"})
	s := m.State()
	s.Sessions[0].Remote = "changed"
	if m.State().Sessions[0].Remote != "a" {
		t.Error("State shares its sessions with the machine")
	}
	if s := New(1, at(time.Hour), 0).State(); s.Sessions == nil || s.ExpiresAt != nil || s.State != build.SSHPending {
		t.Errorf("before open: %+v", s)
	}
}
