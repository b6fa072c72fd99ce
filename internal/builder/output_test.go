package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/link"
)

// recorder keeps what an outbox sends, as the runner would see it.
type recorder struct {
	mu     sync.Mutex
	events []link.Event
	fail   error
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) send(ev link.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	if ev.S2 != nil {
		// A compressed chunk is whole lines, and decodes to its Data.
		d, err := s2.Decode(nil, ev.S2)
		if err != nil || !bytes.Equal(d, ev.Data) || len(d) > maxChunk || d[len(d)-1] != '\n' {
			return fmt.Errorf("bad compressed chunk (%v): %d bytes, ends %q", err, len(d), d[max(0, len(d)-10):])
		}
		if n := len(r.events); n > 0 && r.events[n-1].Type == link.Output && r.events[n-1].Step == ev.Step {
			if p := r.events[n-1].Data; p[len(p)-1] != '\n' {
				return fmt.Errorf("a compressed chunk after a line begun: %q", p[max(0, len(p)-10):])
			}
		}
	}
	// The outbox reuses its buffers once send returns.
	ev.Data, ev.S2 = bytes.Clone(ev.Data), bytes.Clone(ev.S2)
	r.events = append(r.events, ev)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// output is everything step sent, in order.
func (r *recorder) output(step int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, ev := range r.events {
		if ev.Type == link.Output && ev.Step == step {
			b.Write(ev.Data)
		}
	}
	return b.String()
}

// compressed is how many bytes of step's output came compressed.
func (r *recorder) compressed(step int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Type == link.Output && ev.Step == step && ev.S2 != nil {
			n += len(ev.Data)
		}
	}
	return n
}

// waitOutput waits until step's output contains want.
func (r *recorder) waitOutput(t *testing.T, step int, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(r.output(step), want) {
		select {
		case <-r.wake:
		case <-deadline:
			t.Fatalf("output of step %d never contained %q; got %q", step, want, r.output(step))
		}
	}
}

// runStep runs script with bash as step i writing to a fresh step output,
// the way run.step does, and returns once the step's end could be sent.
func runStep(t *testing.T, box *outbox, i int, script string) {
	t.Helper()
	out, err := newStepOutput(box, i, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Stdout, cmd.Stderr = out.w, out.w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		t.Fatalf("step %d: %v", i, err)
	}
	if !out.finish() {
		t.Fatalf("step %d: finish reported a failed link", i)
	}
}

func TestStepOutputDeliversEverythingBeforeTheEnd(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	// Many short lines from a pipeline (its last writer is not the step's
	// own process) and a child that writes after a delay: all of it comes
	// before the step's end, whatever the machine's load.
	runStep(t, box, 1, `seq 1 200000 | sed 's/^/line number /'; (sleep 0.2; echo child done) & wait`)
	var want strings.Builder
	for i := 1; i <= 200000; i++ {
		fmt.Fprintf(&want, "line number %d\n", i)
	}
	want.WriteString("child done\n")
	if got := rec.output(1); got != want.String() {
		t.Fatalf("step output: %d bytes, want %d; tail %q", len(got), want.Len(), got[max(0, len(got)-80):])
	}
	// sed writes blocks that end anywhere in a line; the sender still
	// sends chunks of whole lines, compressed (how much depends on the
	// machine's load: TestOutboxChunksOfWholeLines checks that).
	if n := rec.compressed(1); n == 0 {
		t.Errorf("none of %d bytes came compressed", want.Len())
	}
	t.Logf("%d of %d bytes compressed, %d events", rec.compressed(1), want.Len(), len(rec.events))
}

func TestOutboxChunksOfWholeLines(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	box.holdFor = time.Hour // whatever the machine's load: only flushes send
	box.holdPartial = time.Hour
	line := func(i int) string { return fmt.Sprintf("line %06d of a step that writes a lot\n", i) }
	var all strings.Builder
	for i := range 20000 {
		all.WriteString(line(i))
	}
	data := []byte(all.String())
	// Written in blocks that end mid-line, as a program's stdio does;
	// then a line begun that only its step's end finishes.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 4096)
		box.add(1, rest[:n])
		rest = rest[n:]
	}
	mark := box.add(1, []byte("no end yet"))
	if !box.flushed(mark) {
		t.Fatal("flushed failed")
	}
	if got := rec.output(1); got != all.String()+"no end yet" {
		t.Fatalf("output: %d bytes, want %d", len(got), len(data)+10)
	}
	if n := rec.compressed(1); n < len(data)*9/10 {
		t.Errorf("%d of %d bytes came compressed", n, len(data))
	}
	// The line goes on: its end goes as it is, then whole lines compressed.
	more := []byte(" and now it ends\n" + strings.Repeat(line(1), 2000))
	if !box.flushed(box.add(1, more)) {
		t.Fatal("flushed failed")
	}
	if got := rec.output(1); got != all.String()+"no end yet"+string(more) {
		t.Fatalf("output after the line's end: %d bytes", len(got))
	}
}

func TestOutboxWholeLinesDoNotWait(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	// A step prints lines, then part of one (a prompt), and waits: its
	// lines are sent without anything more coming; the part stays until
	// the line ends or the step does.
	box.add(1, []byte("line one\nline two\nContinue? "))
	rec.waitOutput(t, 1, "line two\n")
	if got := rec.output(1); got != "line one\nline two\n" {
		t.Fatalf("output = %q", got)
	}
	if !box.flushed(box.add(1, []byte("y\n"))) {
		t.Fatal("flushed failed")
	}
	if got := rec.output(1); got != "line one\nline two\nContinue? y\n" {
		t.Fatalf("output = %q", got)
	}
}

// TestOutboxUnfinishedLineGoesWhenIdle: a line a step has not ended (a
// prompt, a progress bar) is shown while the step waits, not only once it
// ends the line.
func TestOutboxUnfinishedLineGoesWhenIdle(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	box.add(1, []byte("downloading: 50%"))
	rec.waitOutput(t, 1, "downloading: 50%")
	box.add(1, []byte(" 100%\ndone\n"))
	rec.waitOutput(t, 1, "downloading: 50% 100%\ndone\n")
}

func TestOutboxDrainSendsALineNotEnded(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	// A background process's output that ends mid-line is held back
	// until the build's end drains the outbox.
	box.add(2, []byte("a line\nhalf a l"))
	if !box.drain() {
		t.Fatal("drain failed")
	}
	if got := rec.output(2); got != "a line\nhalf a l" {
		t.Fatalf("output = %q", got)
	}
}

func TestStepOutputBackgroundProcessDoesNotHoldTheStep(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "go")
	pidFile := filepath.Join(dir, "pid")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The background process keeps the step's output open, and writes
	// only when the test says so, after the step has ended.
	runStep(t, box, 2, fmt.Sprintf(`echo before; (read x < %s; echo late output) & echo $! > %s; echo after`, fifo, pidFile))
	if got := rec.output(2); got != "before\nafter\n" {
		t.Fatalf("output at the step's end = %q, want before and after", got)
	}
	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec.waitOutput(t, 2, "late output\n")
	if got := rec.output(2); got != "before\nafter\nlate output\n" {
		t.Fatalf("output = %q", got)
	}
}

func TestStepOutputLinkFailure(t *testing.T) {
	rec := newRecorder()
	rec.fail = errors.New("link down")
	box := newOutbox(rec.send, 0)
	out, err := newStepOutput(box, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(out.w, "lost")
	if out.finish() {
		t.Fatal("finish reported delivery over a failed link")
	}
}

func TestOutboxLimit(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 10)
	runStep(t, box, 1, `printf 'hello world, this is more than ten bytes\n'`)
	if got := rec.output(1); got != "hello worl" {
		t.Fatalf("output = %q, want the first 10 bytes", got)
	}
}

func TestMarkerSplitAcrossReads(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	out, err := newStepOutput(box, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Output that ends like the start of the marker is held back, then
	// sent in full once the real marker follows.
	fake := append([]byte("text "), out.marker[:7]...)
	if _, err := out.w.Write(fake); err != nil {
		t.Fatal(err)
	}
	if !out.finish() {
		t.Fatal("finish failed")
	}
	if got := rec.output(3); got != string(fake) {
		t.Fatalf("output = %q, want %q", got, fake)
	}
}

func TestOverlap(t *testing.T) {
	m := []byte{0, 'a', 'b', 'c'}
	for _, tc := range []struct {
		data string
		want int
	}{
		{"xyz", 0},
		{"xy\x00", 1},
		{"xy\x00a", 2},
		{"\x00ab", 3},
		{"\x00abx", 0},
		{"", 0},
	} {
		if got := overlap([]byte(tc.data), m); got != tc.want {
			t.Errorf("overlap(%q) = %d, want %d", tc.data, got, tc.want)
		}
	}
}

func TestStepEventsInOrder(t *testing.T) {
	rec := newRecorder()
	r := &run{send: rec.send, out: newOutbox(rec.send, 0)}
	err := r.step(context.Background(), 4, func(ctx context.Context, out io.Writer) error {
		cmd := exec.CommandContext(ctx, "bash", "-c", "echo hi; exit 3")
		cmd.Stdout, cmd.Stderr = out, out
		return cmd.Run()
	})
	if err == nil {
		t.Fatal("step with exit 3 did not fail")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var kinds []string
	var out bytes.Buffer
	for _, ev := range rec.events {
		if len(kinds) == 0 || kinds[len(kinds)-1] != ev.Type {
			kinds = append(kinds, ev.Type)
		}
		out.Write(ev.Data)
	}
	if got := strings.Join(kinds, ","); got != "step_start,output,step_end" {
		t.Errorf("events = %s", got)
	}
	if out.String() != "hi\nhangar: exit status 3\n" {
		t.Errorf("output = %q", out.String())
	}
	if last := rec.events[len(rec.events)-1]; !last.Failed || last.ExitCode != 3 || last.Step != 4 {
		t.Errorf("step_end = %+v", last)
	}
}
