package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/machine"
)

// waitFor bounds every wait of these tests; nothing waits by sleeping.
const waitFor = 15 * time.Second

// fakeClock is a Clock that moves only when Advance is called. It runs due
// timers' funcs in Advance's goroutine (the runner's are short and never
// block), and a func whose time has passed already at once, in its own.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time     // guarded by mu
	timers []*fakeTimer  // guarded by mu; pending
	added  chan struct{} // guarded by mu; closed (and replaced) when a timer is added
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	f  func()
}

// newFakeClock starts at the present, in milliseconds as the store keeps
// times, so that times read back from the store match the clock's.
func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now().Truncate(time.Millisecond), added: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	close(c.added)
	c.added = make(chan struct{})
	return t
}

func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.timers {
		if p == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock by d and runs the timers that are due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due, left []*fakeTimer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
		} else {
			left = append(left, t)
		}
	}
	c.timers = left
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// AdvanceTo moves the clock to at.
func (c *fakeClock) AdvanceTo(at time.Time) { c.Advance(at.Sub(c.Now())) }

// waitTimer waits until a timer due at at is pending.
func (c *fakeClock) waitTimer(t *testing.T, at time.Time) {
	t.Helper()
	c.waitTimers(t, at, 1)
}

// waitTimers waits until n timers at at are set.
func (c *fakeClock) waitTimers(t *testing.T, at time.Time, n int) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		c.mu.Lock()
		found := 0
		for _, tm := range c.timers {
			if tm.at.Equal(at) {
				found++
			}
		}
		if found >= n {
			c.mu.Unlock()
			return
		}
		added := c.added
		c.mu.Unlock()
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("no timer at %s was set", at)
		}
	}
}

// fakeDriver is a machine.Driver whose machines run a scripted fake
// builder in a goroutine. It counts the machines that are live.
type fakeDriver struct {
	t *testing.T
	// builder is what each machine runs; nil: a builder that never links up.
	builder func(ctx context.Context, fb *fakeBuilder)
	// block makes Start wait until its context ends.
	block bool
	// oomLimit, if set, is the memory limit machines report as reached
	// (machine.OOMReporter). Set before the runner starts.
	oomLimit int64

	entered chan struct{}     // a value each time Start is called
	started chan *fakeBuilder // each machine started

	mu      sync.Mutex
	live    int // guarded by mu; started and not destroyed
	created int // guarded by mu; ever started
}

func newFakeDriver(t *testing.T) *fakeDriver {
	return &fakeDriver{t: t, entered: make(chan struct{}, 16), started: make(chan *fakeBuilder, 16)}
}

func (d *fakeDriver) Name() string                  { return "fake" }
func (d *fakeDriver) Isolated() bool                { return true }
func (d *fakeDriver) Listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
func (d *fakeDriver) Close() error                  { return nil }

func (d *fakeDriver) Start(ctx context.Context, spec machine.Spec) (machine.Machine, error) {
	d.entered <- struct{}{}
	if d.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	hello, err := link.ReadHello(spec.Stdin)
	if err != nil {
		d.t.Errorf("fake driver: %v", err)
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.Background())
	fb := &fakeBuilder{t: d.t, hello: hello, ack: true, cmdc: make(chan struct{}, 1), linkDone: make(chan struct{})}
	m := &fakeMachine{d: d, cancel: cancel, exited: make(chan struct{})}
	d.mu.Lock()
	d.live++
	d.created++
	d.mu.Unlock()
	go func() {
		defer close(m.exited)
		defer fb.close()
		if d.builder == nil {
			<-mctx.Done()
			return
		}
		d.builder(mctx, fb)
	}()
	d.started <- fb
	return m, nil
}

func (d *fakeDriver) counts() (live, created int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live, d.created
}

// fakeMachine is one fake machine: its builder's goroutine.
type fakeMachine struct {
	d      *fakeDriver
	cancel context.CancelFunc
	exited chan struct{}
	once   sync.Once
}

// OOMKilled reports what the driver's oomLimit says.
func (m *fakeMachine) OOMKilled() (bool, int64) { return m.d.oomLimit > 0, m.d.oomLimit }

func (m *fakeMachine) Wait() error {
	<-m.exited
	return errors.New("the builder exited")
}

func (m *fakeMachine) Destroy(ctx context.Context) error {
	m.once.Do(func() {
		m.cancel()
		<-m.exited
		m.d.mu.Lock()
		m.d.live--
		m.d.mu.Unlock()
	})
	return nil
}

// fakeBuilder speaks the real link protocol to the runner, scripted by a
// test.
type fakeBuilder struct {
	t     *testing.T
	hello *link.Hello
	c     *link.Client
	job   *link.Job
	// ack: answer SSHClose with SSHRevoked; ackGate, if set, delays that.
	ack     bool
	ackGate chan struct{}

	mu       sync.Mutex
	cmds     []link.Command // guarded by mu; received so far
	cmdc     chan struct{}  // a value when a command arrives
	linkDone chan struct{}  // closed when the runner's side of the link closes
}

// link dials the runner and reads the job.
func (fb *fakeBuilder) link(ctx context.Context) bool {
	c, err := link.Dial(ctx, fb.hello)
	if err != nil {
		fb.t.Errorf("fake builder: %v", err)
		return false
	}
	job, err := c.Job()
	if err != nil {
		c.Close()
		fb.t.Errorf("fake builder: %v", err)
		return false
	}
	fb.mu.Lock()
	fb.c, fb.job = c, job
	fb.mu.Unlock()
	go fb.commands(c)
	return true
}

func (fb *fakeBuilder) commands(c *link.Client) {
	defer close(fb.linkDone)
	for {
		cmd, err := c.Command()
		if err != nil {
			return
		}
		fb.mu.Lock()
		fb.cmds = append(fb.cmds, *cmd)
		fb.mu.Unlock()
		select {
		case fb.cmdc <- struct{}{}:
		default:
		}
		if cmd.Type == link.SSHClose && fb.ack {
			if fb.ackGate != nil {
				<-fb.ackGate
			}
			_ = c.Send(link.Event{Type: link.SSH, Kind: link.SSHRevoked})
		}
	}
}

func (fb *fakeBuilder) close() {
	fb.mu.Lock()
	c := fb.c
	fb.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// send sends an event; errors are expected once the runner has ended the
// build, so they are ignored.
func (fb *fakeBuilder) send(ev link.Event) { _ = fb.c.Send(ev) }

// step runs link step i: its start, lines of output, its end.
func (fb *fakeBuilder) step(i int, failCode int, lines ...string) {
	fb.send(link.Event{Type: link.StepStart, Step: i})
	for _, l := range lines {
		fb.send(link.Event{Type: link.Output, Step: i, Data: []byte(l + "\n")})
	}
	ev := link.Event{Type: link.StepEnd, Step: i}
	if failCode != 0 {
		ev.Failed, ev.ExitCode, ev.Error = true, failCode, fmt.Sprintf("exit status %d", failCode)
	}
	fb.send(ev)
}

// passAll runs every step of the job successfully.
func (fb *fakeBuilder) passAll() {
	for i, s := range fb.job.Steps {
		fb.step(i, 0, "running "+s.Name)
	}
}

func (fb *fakeBuilder) ssh(kind string) { fb.send(link.Event{Type: link.SSH, Kind: kind}) }

func (fb *fakeBuilder) done(errMsg string) {
	fb.send(link.Event{Type: link.Done, Failed: errMsg != "", Error: errMsg})
}

// wait blocks until the machine is destroyed or the link closes, as the
// real builder does after done.
func (fb *fakeBuilder) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-fb.linkDone:
	}
}

// waitCommand waits for a command of type typ whose text contains text.
func (fb *fakeBuilder) waitCommand(t *testing.T, typ, text string) link.Command {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		fb.mu.Lock()
		for _, c := range fb.cmds {
			if c.Type == typ && strings.Contains(c.Text, text) {
				fb.mu.Unlock()
				return c
			}
		}
		fb.mu.Unlock()
		select {
		case <-fb.cmdc:
		case <-deadline:
			t.Fatalf("the builder got no %s command with %q; got %v", typ, text, fb.commandsSoFar())
		}
	}
}

func (fb *fakeBuilder) commandsSoFar() []link.Command {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return append([]link.Command(nil), fb.cmds...)
}
