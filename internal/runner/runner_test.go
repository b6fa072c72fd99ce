package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gateway"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

const (
	linkTimeout = 7 * time.Minute
	afterSteps  = 20 * time.Minute
)

// env is a runner with a real store, a real link server and gateway, the
// fake driver and a fake clock.
type env struct {
	t      *testing.T
	st     *store.Store
	clock  *fakeClock
	driver *fakeDriver
	r      *Runner
	stop   context.CancelFunc // stops Run
	ran    chan struct{}      // closed when Run has returned
}

type envOption func(*Config)

func maxBuilds(n int) envOption { return func(c *Config) { c.MaxBuilds = n } }

func newEnv(t *testing.T, builder func(context.Context, *fakeBuilder), opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateApp(context.Background(), &store.App{Name: "demo", Repo: "https://example.com/o/demo.git"}); err != nil {
		t.Fatal(err)
	}
	hostKey, _, err := sshca.NewKey("link")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	linkSrv := &link.Server{HostKey: hostKey, Logger: quiet}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = linkSrv.Serve(ln) }()
	t.Cleanup(func() { linkSrv.Close() })

	ca, err := sshca.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := sshca.LoadOrCreateSealer(filepath.Join(dir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	gwKey, _, err := sshca.NewKey("gateway")
	if err != nil {
		t.Fatal(err)
	}
	gw := &gateway.Gateway{HostKey: gwKey, CA: ca.PublicKey(), Logger: quiet}

	e := &env{t: t, st: st, clock: newFakeClock(), driver: newFakeDriver(t), ran: make(chan struct{})}
	e.driver.builder = builder
	cfg := Config{
		Store: st, Driver: e.driver, Mirrors: fakeMirrors{}, Link: linkSrv, LinkAddr: ln.Addr().String(),
		Executable: "/nonexistent/hangar", LinkTimeout: linkTimeout, Logger: quiet, Clock: e.clock,
		SSH: &SSHConfig{Credentials: &LocalCredentials{CA: ca, Sealer: sealer, Store: st}, Gateway: gw, Store: st, AfterSteps: afterSteps},
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.r = New(cfg)
	gw.Events = e.r.GatewayEvent
	ctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	go func() {
		defer close(e.ran)
		if err := e.r.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() {
		e.shutdown()
		if live, _ := e.driver.counts(); live != 0 {
			t.Errorf("%d machines left behind", live)
		}
	})
	return e
}

// shutdown stops Run and waits for it to return.
func (e *env) shutdown() {
	e.t.Helper()
	e.stop()
	select {
	case <-e.ran:
	case <-time.After(waitFor):
		e.t.Fatal("Run did not return after its context ended")
	}
}

type fakeMirrors struct{}

func (fakeMirrors) Path(app string) string { return "/nonexistent/mirrors/" + app }

var scripts = []build.SpecScript{
	{Name: "Greet", File: "01-greet.sh", Script: "echo hi"},
	{Name: "Broken", File: "02-broken.sh", Script: "exit 3"},
	{Name: "After", File: "03-after.sh", Script: "echo after", Condition: `env.GREETING == "hello"`},
}

// queue stores a queued build of scripts.
func (e *env) queue(withSSH bool, maxDuration time.Duration) *build.Build {
	e.t.Helper()
	// The app's URL carries credentials, which must not reach the machine.
	spec, _ := json.Marshal(build.Spec{Repo: "https://bot:" + repoToken + "@example.com/o/demo.git", Scripts: scripts,
		Env: []string{"CM_PULL_REQUEST=false"}, Vars: []string{"GREETING=hello", "OUT=$CM_BUILD_DIR/out"},
		Inputs: map[string]any{"n": 2.0}, Event: json.RawMessage(`{"pull_request":{"draft":false}}`)})
	b := &build.Build{App: "demo", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "0123456789abcdef",
		Status: build.Queued, Trigger: build.Manual, MaxDuration: int64(maxDuration / time.Second), Steps: build.NewSteps(scripts)}
	if withSSH {
		b.SSH = build.SSH{Enabled: true, State: build.SSHPending}
	}
	if err := e.st.CreateBuild(context.Background(), b, spec); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// wait waits until build id satisfies ok, and returns it.
func (e *env) wait(id int64, what string, ok func(*build.Build) bool) *build.Build {
	e.t.Helper()
	ch, unsub := e.st.Subscribe(id)
	defer unsub()
	deadline := time.After(waitFor)
	for {
		b, err := e.st.Build(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if ok(b) {
			return b
		}
		select {
		case <-ch:
		case <-deadline:
			e.t.Fatalf("build %d: waited in vain for %s; it is %s %q steps %v ssh %+v", id, what, b.Status, b.Message, stepStatuses(b), b.SSH)
		}
	}
}

// ended waits for build id to end and checks that its machine is gone.
func (e *env) ended(id int64) *build.Build {
	e.t.Helper()
	b := e.wait(id, "its end", func(b *build.Build) bool { return b.Status.Done() })
	if live, _ := e.driver.counts(); live != 0 {
		e.t.Errorf("build %d ended with %d machines live", id, live)
	}
	return b
}

func (e *env) cancel(id int64) {
	e.t.Helper()
	if ok, err := e.st.CancelBuild(context.Background(), id, "canceled before it started"); !ok || err != nil {
		e.t.Fatalf("cancel build %d: %v %v", id, ok, err)
	}
}

// deadline is build id's hard deadline.
func (e *env) deadline(id int64) time.Time {
	b, err := e.st.Build(context.Background(), id)
	if err != nil || b.StartedAt == nil {
		e.t.Fatalf("build %d has not started: %v", id, err)
	}
	return b.StartedAt.Add(time.Duration(b.MaxDuration) * time.Second)
}

func (e *env) logs(id int64) string {
	e.t.Helper()
	lines, err := e.st.Logs(context.Background(), id, 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(l.Text + "\n")
	}
	return sb.String()
}

func (e *env) events(id int64) []string {
	e.t.Helper()
	evs, err := e.st.Events(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	return kinds
}

func stepStatuses(b *build.Build) []build.StepStatus {
	var st []build.StepStatus
	for _, s := range b.Steps {
		st = append(st, s.Status)
	}
	return st
}

// want checks a build's end.
func want(t *testing.T, b *build.Build, status build.Status, msg string, steps ...build.StepStatus) {
	t.Helper()
	if b.Status != status || !strings.Contains(b.Message, msg) || (msg == "" && b.Message != "") {
		t.Errorf("build %d: %s %q, want %s %q", b.ID, b.Status, b.Message, status, msg)
	}
	if got := stepStatuses(b); strings.Join(statusStrings(got), " ") != strings.Join(statusStrings(steps), " ") {
		t.Errorf("build %d steps: %v, want %v", b.ID, got, steps)
	}
	if b.FinishedAt == nil {
		t.Errorf("build %d has no finished_at", b.ID)
	}
	for i, s := range b.Steps {
		if (s.Status == build.StepSuccess || s.Status == build.StepFailed || s.Status == build.StepCanceled) && s.FinishedAt == nil {
			t.Errorf("build %d step %d is %s without finished_at", b.ID, i, s.Status)
		}
	}
}

func statusStrings(st []build.StepStatus) []string {
	var s []string
	for _, x := range st {
		s = append(s, string(x))
	}
	return s
}

func contains(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// metric reads a counter or gauge of the default registry.
func metric(t *testing.T, name, status string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := status == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// Builders.

func passing(ctx context.Context, fb *fakeBuilder) {
	if !fb.link(ctx) {
		return
	}
	fb.passAll()
	fb.done("")
	fb.wait(ctx)
}

// hanging runs the clone and starts the first script, which never ends.
func hanging(ctx context.Context, fb *fakeBuilder) {
	if !fb.link(ctx) {
		return
	}
	fb.step(0, 0, "Cloning")
	fb.send(link.Event{Type: link.StepStart, Step: 1})
	fb.send(link.Event{Type: link.Output, Step: 1, Data: []byte("waiting\n")})
	fb.wait(ctx)
}

func running(step int) func(*build.Build) bool {
	return func(b *build.Build) bool {
		return b.Steps[step].Status == build.StepRunning && b.Status == build.Building
	}
}

// Step statuses, short.
const (
	ok   = build.StepSuccess
	bad  = build.StepFailed
	cnl  = build.StepCanceled
	skip = build.StepSkipped
)

func TestDone(t *testing.T) {
	e := newEnv(t, passing)
	before := metric(t, "hangar_builds_ended_total", "finished")
	b := e.ended(e.queue(false, time.Hour).ID)
	want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
	contains(t, "log", e.logs(b.ID), "Machine: fake driver, an isolated machine", "Machine ready in", "running Greet", "running After")
	if strings.Contains(e.logs(b.ID), "hangar:") {
		t.Errorf("a finished build's log has runner messages:\n%s", e.logs(b.ID))
	}
	if got := metric(t, "hangar_builds_ended_total", "finished"); got != before+1 {
		t.Errorf("builds ended (finished): %v, want %v", got, before+1)
	}
	if got := metric(t, "hangar_builds_running", ""); got != 0 {
		t.Errorf("builds running after the end: %v", got)
	}
	if len(e.events(b.ID)) != 0 {
		t.Errorf("events of a build without SSH: %v", e.events(b.ID))
	}
}

func TestJob(t *testing.T) {
	// The builder gets the job the runner built from the spec.
	got := make(chan *link.Job, 1)
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		got <- fb.job
		fb.passAll()
		fb.done("")
		fb.wait(ctx)
	})
	b := e.queue(false, time.Hour)
	e.ended(b.ID)
	job := <-got
	if job.Repo != "/hangar/repo.git" || job.Origin != "https://example.com/o/demo.git" || job.Commit != b.Commit || job.SSH != nil {
		t.Errorf("job: %+v", job)
	}
	if len(job.Steps) != 4 || job.Steps[0].Name != build.StepFetch || job.Steps[2].Script != "exit 3" {
		t.Errorf("job steps: %+v", job.Steps)
	}
	env := strings.Join(job.Env, " ")
	contains(t, "env", env, "CI=true", "CM_REPO_SLUG=o/demo", "CM_BUILD_ID=", "CM_PULL_REQUEST=false")
	// The workflow's variables go apart, for the builder to expand after
	// the built-in ones; the steps' conditions with what they read.
	if strings.Join(job.Vars, " ") != "GREETING=hello OUT=$CM_BUILD_DIR/out" || job.Steps[3].Condition != `env.GREETING == "hello"` ||
		job.Inputs["n"] != 2.0 || string(job.Event) != `{"pull_request":{"draft":false}}` {
		t.Errorf("job vars %q, step 3 %+v, inputs %v, event %s", job.Vars, job.Steps[3], job.Inputs, job.Event)
	}
	// Nothing the machine gets holds the repository's credentials.
	if data, _ := json.Marshal(job); strings.Contains(string(data), repoToken) || strings.Contains(string(data), "bot@") {
		t.Errorf("the job holds the repository's credentials: %s", data)
	}
}

// TestStepSkipped: a step the builder skips (its when) is recorded as
// skipped with the reason, in the log too; the steps after it run.
func TestStepSkipped(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "cloned")
		fb.step(1, 0, "hi")
		fb.send(link.Event{Type: link.StepSkipped, Step: 2, Text: "when.condition is false: env.X == \"y\""})
		// A second report for the same step changes nothing.
		fb.send(link.Event{Type: link.StepSkipped, Step: 2, Text: "again"})
		fb.step(3, 0, "after")
		fb.done("")
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	if b.Status != build.Finished {
		t.Fatalf("status %s %s", b.Status, b.Message)
	}
	if st := b.Steps[3]; st.Status != build.StepSkipped || st.Reason != `when.condition is false: env.X == "y"` || st.StartedAt != nil {
		t.Errorf("skipped step: %+v", st)
	}
	if b.Steps[4].Status != build.StepSuccess {
		t.Errorf("step after the skipped one: %+v", b.Steps[4])
	}
	contains(t, "log", e.logs(b.ID), `Skipped: when.condition is false: env.X == "y"`)
}

// repoToken is the secret in the test app's repository URL.
const repoToken = "ghp_SECRET0123456789"

func TestHostileBuilderEvents(t *testing.T) {
	// Events for steps that do not exist, or that move a step backwards,
	// change nothing; the build goes on.
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		for _, step := range []int{-5, -1, 4, 1 << 19} {
			fb.send(link.Event{Type: link.StepStart, Step: step})
			if step >= 0 { // a negative step cannot be framed
				fb.send(link.Event{Type: link.Output, Step: step, Data: []byte("HOSTILE\n")})
			}
			fb.send(link.Event{Type: link.StepEnd, Step: step, Failed: true})
		}
		fb.passAll()
		fb.send(link.Event{Type: link.StepStart, Step: 0}) // a finished step again
		fb.send(link.Event{Type: link.StepEnd, Step: 1, Failed: true, ExitCode: 9})
		fb.done("")
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
	if strings.Contains(e.logs(b.ID), "HOSTILE") {
		t.Errorf("output of a step that does not exist was kept:\n%s", e.logs(b.ID))
	}
}

func TestMalformedMessage(t *testing.T) {
	// A builder that breaks the protocol loses its link; the build says
	// why.
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		fb.send(link.Event{Type: link.Output, Step: 1 << 21, Data: []byte("x")})
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	if b.Status != build.Failed || !strings.Contains(b.Message, "lost the link to the builder") || !strings.Contains(b.Message, "output frame") {
		t.Errorf("build: %s %q", b.Status, b.Message)
	}
}

func TestCompressedOutput(t *testing.T) {
	// Whole lines compressed by the builder are stored as they came; a
	// block after a line begun, or with CRLF, is decoded and cut as usual.
	var many strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&many, "line number %d\n", i)
	}
	send := func(fb *fakeBuilder, step int, lines string) {
		fb.send(link.Event{Type: link.Output, Step: step, Data: []byte(lines), S2: s2.Encode(nil, []byte(lines))})
	}
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		fb.send(link.Event{Type: link.StepStart, Step: 1})
		send(fb, 1, many.String())
		fb.send(link.Event{Type: link.Output, Step: 1, Data: []byte("begun ")})
		send(fb, 1, "and ended\r\nlast\n")
		fb.send(link.Event{Type: link.StepEnd, Step: 1})
		for i := 2; i < len(fb.job.Steps); i++ {
			fb.step(i, 0, "after")
		}
		fb.done("")
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
	logs := e.logs(b.ID)
	if !strings.Contains(logs, "Cloning\n"+many.String()+"begun and ended\nlast\nafter\n") {
		t.Errorf("log:\n%.300s", logs)
	}
}

func TestCorruptCompressedOutput(t *testing.T) {
	// A block that does not decode breaks the protocol: the build says
	// so, it does not end with a shorter log.
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		z := s2.Encode(nil, []byte(strings.Repeat("lost line\n", 100)))
		fb.send(link.Event{Type: link.Output, Step: 1, Data: []byte("x\n"), S2: z[:len(z)-2]})
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	if b.Status != build.Failed || !strings.Contains(b.Message, "lost the link to the builder") || !strings.Contains(b.Message, "compressed output frame") {
		t.Errorf("build: %s %q", b.Status, b.Message)
	}
}

func TestStepFailure(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		fb.step(1, 0, "hi")
		fb.step(2, 3, "about to fail")
		fb.done(`step "Broken" failed: exit status 3`)
		fb.wait(ctx)
	})
	b := e.ended(e.queue(false, time.Hour).ID)
	want(t, b, build.Failed, `step "Broken" failed: exit status 3`, ok, ok, ok, bad, skip)
	if c := b.Steps[3].ExitCode; c == nil || *c != 3 {
		t.Errorf("exit code of the failed step: %v", c)
	}
	contains(t, "log", e.logs(b.ID), "about to fail", `hangar: step "Broken" failed: exit status 3`)
}

// TestOutOfMemory: a build that fails on a machine that had a process
// killed for lack of memory ends with the out-of-memory message; the
// step's own failure stays in the log.
func TestOutOfMemory(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		fb.step(1, 0, "hi")
		fb.step(2, 137, "hogging")
		fb.done(`step "Broken" failed: exit status 137`)
		fb.wait(ctx)
	}, func(c *Config) { c.Driver.(*fakeDriver).oomLimit = 4 << 30 })
	b := e.ended(e.queue(false, time.Hour).ID)
	want(t, b, build.Failed, "the build ran out of memory (limit 4 GiB)", ok, ok, ok, bad, skip)
	contains(t, "log", e.logs(b.ID), `hangar: step "Broken" failed: exit status 137`, "hangar: the build ran out of memory (limit 4 GiB)")
}

func TestCancel(t *testing.T) {
	t.Run("queued", func(t *testing.T) {
		e := newEnv(t, hanging, maxBuilds(1))
		first := e.queue(false, time.Hour)
		e.wait(first.ID, "its first script", running(2))
		second := e.queue(false, time.Hour)
		e.cancel(second.ID)
		b := e.wait(second.ID, "its end", func(b *build.Build) bool { return b.Status.Done() })
		want(t, b, build.Canceled, "canceled before it started", build.StepPending, build.StepPending, build.StepPending, build.StepPending, build.StepPending)
		e.cancel(first.ID)
		e.ended(first.ID)
		if _, created := e.driver.counts(); created != 1 {
			t.Errorf("%d machines started, want 1 (none for the canceled queued build)", created)
		}
	})
	t.Run("provisioning", func(t *testing.T) {
		e := newEnv(t, passing)
		e.driver.block = true
		b := e.queue(false, time.Hour)
		<-e.driver.entered
		e.cancel(b.ID)
		b = e.ended(b.ID)
		want(t, b, build.Canceled, "canceled", cnl, skip, skip, skip, skip)
		contains(t, "log", e.logs(b.ID), "hangar: canceled")
	})
	t.Run("linking", func(t *testing.T) {
		e := newEnv(t, nil)
		b := e.queue(false, time.Hour)
		<-e.driver.started
		e.cancel(b.ID)
		want(t, e.ended(b.ID), build.Canceled, "canceled", cnl, skip, skip, skip, skip)
	})
	t.Run("steps", func(t *testing.T) {
		e := newEnv(t, hanging)
		before := metric(t, "hangar_builds_ended_total", "canceled")
		b := e.queue(false, time.Hour)
		e.wait(b.ID, "its first script", running(2))
		e.cancel(b.ID)
		b = e.ended(b.ID)
		want(t, b, build.Canceled, "canceled", ok, ok, cnl, skip, skip)
		contains(t, "log", e.logs(b.ID), "waiting", "hangar: canceled")
		if got := metric(t, "hangar_builds_ended_total", "canceled"); got != before+1 {
			t.Errorf("builds ended (canceled): %v, want %v", got, before+1)
		}
	})
	t.Run("ssh window", func(t *testing.T) {
		e := newEnv(t, sshBuilder(nil))
		b := e.queue(true, time.Hour)
		e.wait(b.ID, "the SSH window", inWindow)
		e.cancel(b.ID)
		b = e.ended(b.ID)
		want(t, b, build.Canceled, "canceled", ok, ok, ok, ok, ok)
		reason := "ended: the build was canceled"
		if b.SSH.State != build.SSHClosed || !strings.Contains(b.SSH.ClosedReason, reason) {
			t.Errorf("ssh after cancel: %+v", b.SSH)
		}
		contains(t, "log", e.logs(b.ID), "hangar: SSH access closed: SSH access to build", "hangar: canceled")
		contains(t, "events", strings.Join(e.events(b.ID), " "), "ssh_tunnel_up", "ssh_closed")
	})
}

func TestTimeout(t *testing.T) {
	msg := "the build ran past its max_build_duration of 1h0m0s and was stopped"
	t.Run("provisioning", func(t *testing.T) {
		e := newEnv(t, passing)
		e.driver.block = true
		b := e.queue(false, time.Hour)
		<-e.driver.entered
		e.clock.AdvanceTo(e.deadline(b.ID))
		b = e.ended(b.ID)
		want(t, b, build.Timeout, msg, cnl, skip, skip, skip, skip)
		contains(t, "log", e.logs(b.ID), "hangar: "+msg)
	})
	t.Run("linking", func(t *testing.T) {
		// A deadline before the link timeout.
		e := newEnv(t, nil)
		b := e.queue(false, 5*time.Minute)
		<-e.driver.started
		e.clock.AdvanceTo(e.deadline(b.ID))
		want(t, e.ended(b.ID), build.Timeout, "the build ran past its max_build_duration of 5m0s and was stopped", cnl, skip, skip, skip, skip)
	})
	t.Run("steps", func(t *testing.T) {
		e := newEnv(t, hanging)
		b := e.queue(false, time.Hour)
		e.wait(b.ID, "its first script", running(2))
		e.clock.Advance(time.Minute)
		if nb, _ := e.st.Build(context.Background(), b.ID); nb.Status.Done() {
			t.Fatalf("the build ended before its deadline: %s", nb.Status)
		}
		e.clock.AdvanceTo(e.deadline(b.ID))
		want(t, e.ended(b.ID), build.Timeout, msg, ok, ok, cnl, skip, skip)
	})
	t.Run("ssh steps", func(t *testing.T) {
		// The deadline while the steps of an SSH build run: a timeout,
		// which closes access.
		e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
			if !fb.link(ctx) {
				return
			}
			fb.ssh("tunnel_up")
			hanging2(fb)
			fb.wait(ctx)
		})
		b := e.queue(true, time.Hour)
		e.wait(b.ID, "its first script", running(2))
		e.clock.AdvanceTo(e.deadline(b.ID))
		b = e.ended(b.ID)
		want(t, b, build.Timeout, msg, ok, ok, cnl, skip, skip)
		if !strings.Contains(b.SSH.ClosedReason, "ended: the build timed out (max_build_duration reached)") {
			t.Errorf("ssh: %+v", b.SSH)
		}
	})
	t.Run("ssh window", func(t *testing.T) {
		// After the steps, access ends half a second before the deadline:
		// the build finishes by that rule and never times out. Sessions
		// are told 5 minutes and 1 minute before.
		var fb *fakeBuilder
		e := newEnv(t, sshBuilder(nil))
		b := e.queue(true, 10*time.Minute)
		fb = <-e.driver.started
		b = e.wait(b.ID, "the SSH window", inWindow)
		end := e.deadline(b.ID).Add(-500 * time.Millisecond)
		if b.SSH.ExpiresBecause != "max_build_duration" || !b.SSH.ExpiresAt.Equal(end) {
			t.Fatalf("window: %v %q, want %v", b.SSH.ExpiresAt, b.SSH.ExpiresBecause, end)
		}
		fb.waitCommand(t, link.SSHNotice, "the build's steps are done (finished)")
		e.clock.waitTimer(t, end.Add(-5*time.Minute))
		e.clock.AdvanceTo(end.Add(-5 * time.Minute))
		fb.waitCommand(t, link.SSHNotice, "this machine stops in 5m0s (max_build_duration)")
		e.clock.waitTimer(t, end.Add(-time.Minute))
		e.clock.AdvanceTo(end.Add(-time.Minute))
		fb.waitCommand(t, link.SSHNotice, "this machine stops in 1m0s (max_build_duration)")
		e.clock.waitTimer(t, end)
		e.clock.AdvanceTo(end)
		b = e.ended(b.ID)
		want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
		if !strings.Contains(b.SSH.ClosedReason, "ended: max_build_duration reached (") {
			t.Errorf("ssh: %+v", b.SSH)
		}
		fb.waitCommand(t, link.SSHClose, "Hangar: SSH access to build")
	})
}

// hanging2 is hanging after the link is up.
func hanging2(fb *fakeBuilder) {
	fb.step(0, 0, "Cloning")
	fb.send(link.Event{Type: link.StepStart, Step: 1})
}

func TestLinkTimeout(t *testing.T) {
	e := newEnv(t, nil)
	b := e.queue(false, time.Hour)
	<-e.driver.started
	e.clock.waitTimer(t, e.clock.Now().Add(linkTimeout))
	e.clock.Advance(linkTimeout)
	want(t, e.ended(b.ID), build.Failed, "the builder did not link up within 7m0s", bad, skip, skip, skip, skip)
}

func TestBuilderCrash(t *testing.T) {
	t.Run("before the link", func(t *testing.T) {
		e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {})
		b := e.ended(e.queue(false, time.Hour).ID)
		want(t, b, build.Failed, "the builder exited before it linked up (the builder exited)", bad, skip, skip, skip, skip)
	})
	t.Run("during the steps", func(t *testing.T) {
		e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
			if !fb.link(ctx) {
				return
			}
			hanging2(fb)
			// and the builder is gone, with its link
		})
		b := e.ended(e.queue(false, time.Hour).ID)
		want(t, b, build.Failed, "lost the link to the builder before the build ended", ok, ok, bad, skip, skip)
		contains(t, "log", e.logs(b.ID), "hangar: lost the link to the builder")
	})
	t.Run("in the ssh window", func(t *testing.T) {
		// The steps are done: the build keeps their result.
		crash := make(chan struct{})
		e := newEnv(t, sshBuilder(crash))
		b := e.queue(true, time.Hour)
		e.wait(b.ID, "the SSH window", inWindow)
		close(crash)
		b = e.ended(b.ID)
		want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
		if b.SSH.State != build.SSHClosed {
			t.Errorf("ssh: %+v", b.SSH)
		}
	})
}

func TestShutdown(t *testing.T) {
	t.Run("steps", testShutdownSteps)
	t.Run("ssh window", func(t *testing.T) {
		e := newEnv(t, sshBuilder(nil))
		b := e.queue(true, time.Hour)
		fb := <-e.driver.started
		e.wait(b.ID, "the SSH window", inWindow)
		e.shutdown()
		nb, err := e.st.Build(context.Background(), b.ID)
		if err != nil {
			t.Fatal(err)
		}
		want(t, nb, build.Failed, "the server shut down during the build", ok, ok, ok, ok, ok)
		if nb.SSH.State != build.SSHClosed || !strings.Contains(nb.SSH.ClosedReason, "ended: the build failed") {
			t.Errorf("ssh: %+v", nb.SSH)
		}
		fb.waitCommand(t, link.SSHClose, "ended: the build failed")
	})
}

func testShutdownSteps(t *testing.T) {
	e := newEnv(t, hanging)
	b := e.queue(false, time.Hour)
	e.wait(b.ID, "its first script", running(2))
	e.shutdown()
	// Run returned: the build has ended and its machine is gone.
	nb, err := e.st.Build(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	want(t, nb, build.Failed, "the server shut down during the build", ok, ok, cnl, skip, skip)
	if live, _ := e.driver.counts(); live != 0 {
		t.Errorf("%d machines live after Run returned", live)
	}
}

// The store fits what the runner needs.
var (
	_ Store           = (*store.Store)(nil)
	_ SSHStore        = (*store.Store)(nil)
	_ CredentialStore = (*store.Store)(nil)
)

// TestBreakpoint: the builder pauses before a step; the build shows it,
// Continue reaches the builder, and the step goes on.
func TestBreakpoint(t *testing.T) {
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		if !fb.link(ctx) {
			return
		}
		fb.step(0, 0, "Cloning")
		fb.send(link.Event{Type: link.Paused, Step: 1})
		cmd := fb.waitCommand(t, link.Continue, "tester")
		fb.send(link.Event{Type: link.Resumed, Step: 1, Text: cmd.Text})
		for i := 1; i < len(fb.job.Steps); i++ {
			fb.step(i, 0, "running")
		}
		fb.done("")
		fb.wait(ctx)
	})
	b := e.queue(false, time.Hour)
	e.wait(b.ID, "the pause", func(b *build.Build) bool { return b.Steps[2].Status == build.StepPaused })
	if err := e.r.Continue(b.ID, "tester"); err != nil {
		t.Fatal(err)
	}
	b = e.ended(b.ID)
	want(t, b, build.Finished, "", ok, ok, ok, ok, ok)
	contains(t, "log", e.logs(b.ID), "hangar: the build is paused before step 1 (Greet)", "hangar: resumed by tester")
	if err := e.r.Continue(b.ID, "tester"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Continue of an ended build: %v", err)
	}
}

// TestEndedElsewhere: a build that a server ended without its runner (it
// found the runner silent) is stopped by the runner once it sees that:
// its machine is destroyed, and the stored end stays the server's.
func TestEndedElsewhere(t *testing.T) {
	stopped := make(chan struct{})
	e := newEnv(t, func(ctx context.Context, fb *fakeBuilder) {
		defer close(stopped)
		hanging(ctx, fb)
	}, func(c *Config) { c.Store = c.Store.(*store.Store).ForRunner(store.Claim{}) })
	b := e.queue(false, time.Hour)
	e.wait(b.ID, "its first script", running(2))
	const swept = "runner r on host h stopped answering at 2026-01-01T00:00:00Z"
	if n, err := e.st.FailInterrupted(context.Background(), swept); err != nil || n != 1 {
		t.Fatalf("fail the build: %d %v", n, err)
	}
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("the runner did not stop the build that was ended without it")
	}
	got, _ := e.st.Build(context.Background(), b.ID)
	if got.Status != build.Failed || got.Message != swept {
		t.Errorf("the build: %s %q, want the server's end", got.Status, got.Message)
	}
}

// TestNoSSHReason: a runner without SSH fails an SSH build with its reason.
func TestNoSSHReason(t *testing.T) {
	const why = "runner r runs no SSH builds: no gateway"
	e := newEnv(t, passing, func(c *Config) { c.SSH, c.NoSSHReason = nil, why })
	b := e.queue(true, time.Hour)
	if got := e.ended(b.ID); got.Status != build.Failed || got.Message != why {
		t.Errorf("the SSH build: %s %q, want failed %q", got.Status, got.Message, why)
	}
}
