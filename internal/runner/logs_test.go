package runner

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/store"
)

// newTestLog returns a log book of a new build in a real store, and the
// store.
func newTestLog(t testing.TB, logOut *bytes.Buffer) (*logBook, *store.Store) {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.CreateApp(ctx, &store.App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
	if err := st.CreateBuild(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	if logOut == nil {
		logOut = new(bytes.Buffer)
	}
	return newLogBook(st, b.ID, slog.New(slog.NewTextHandler(logOut, nil))), st
}

// stored is the build's whole log as "step:text" lines, checking that
// line numbers run from 1 without a gap.
func stored(t *testing.T, l *logBook, st *store.Store) []string {
	t.Helper()
	l.Flush()
	lines, err := st.Logs(context.Background(), l.id, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, line := range lines {
		if line.Seq != int64(i+1) {
			t.Fatalf("line %d has number %d", i+1, line.Seq)
		}
		out = append(out, fmt.Sprintf("%d:%s", line.Step, line.Text))
	}
	return out
}

func TestLogBookCutsChunksIntoLines(t *testing.T) {
	l, st := newTestLog(t, nil)
	l.Printf(0, "Machine ready\nsecond line")
	// Output cut anywhere, a CRLF line, an empty line, a line without an
	// end until its step ends, and a late line of an earlier step.
	for _, part := range []string{"hel", "lo\nwor", "ld\r\n\nno end"} {
		l.Output(2, []byte(part))
	}
	l.Output(3, []byte("other step\n"))
	l.EndStep(2)
	l.Output(2, []byte("late\n"))
	l.Output(3, []byte("unfinished at the build's end"))
	l.EndAll()
	got := strings.Join(stored(t, l, st), "|")
	want := "0:Machine ready|0:second line|2:hello|2:world|2:|3:other step|2:no end|2:late|3:unfinished at the build's end"
	if got != want {
		t.Fatalf("log:\n got %s\nwant %s", got, want)
	}
}

func TestLogBookSplitsLongLines(t *testing.T) {
	l, st := newTestLog(t, nil)
	long := strings.Repeat("x", 2*link.MaxLine+5)
	l.Output(1, []byte(long[:100]))
	l.Output(1, []byte(long[100:]+"\nshort\n"))
	got := stored(t, l, st)
	want := []string{"1:" + long[:link.MaxLine], "1:" + long[link.MaxLine:2*link.MaxLine], "1:xxxxx", "1:short"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %d lines %v", len(got), lens(got))
	}
}

func lens(lines []string) []int {
	var n []int
	for _, l := range lines {
		n = append(n, len(l))
	}
	return n
}

func TestLogBookManyLinesInFewChunks(t *testing.T) {
	l, st := newTestLog(t, nil)
	var data []byte
	for i := 1; i <= 100000; i++ {
		data = fmt.Appendf(data, "line number %d\n", i)
	}
	for len(data) > 0 {
		n := min(len(data), 65536)
		l.Output(2, data[:n])
		data = data[n:]
	}
	got := stored(t, l, st)
	if len(got) != 100000 || got[0] != "2:line number 1" || got[99999] != "2:line number 100000" {
		t.Fatalf("%d lines, first %q", len(got), got[0])
	}
	for i, line := range got {
		if line != fmt.Sprintf("2:line number %d", i+1) {
			t.Fatalf("line %d = %q", i+1, line)
		}
	}
}

// block is lines as the builder sends them compressed, and as the link
// passes them on: the block, their length and their number.
func block(lines string) ([]byte, int, int) {
	return s2.Encode(nil, []byte(lines)), len(lines), link.WholeLines([]byte(lines))
}

func TestLogBookStoresBlocksAsTheyCame(t *testing.T) {
	l, st := newTestLog(t, nil)
	l.Printf(2, "runner's line")
	z, size, n := block("one\ntwo\nthree\n")
	l.OutputBlock(2, z, size, n)
	l.Output(2, []byte("raw\n"))
	l.mu.Lock()
	var encs []string
	for _, c := range l.pending {
		encs = append(encs, fmt.Sprintf("%d+%d:%q", c.Seq, c.Lines, c.Encoding))
		if c.Encoding == build.LogS2 && !bytes.Equal(c.Data, z) {
			t.Error("the block was not kept as it came")
		}
	}
	l.mu.Unlock()
	if got := strings.Join(encs, " "); got != `1+1:"" 2+3:"s2" 5+1:""` {
		t.Errorf("chunks %s", got)
	}
	got := strings.Join(stored(t, l, st), "|")
	if want := "2:runner's line|2:one|2:two|2:three|2:raw"; got != want {
		t.Fatalf("log:\n got %s\nwant %s", got, want)
	}
}

func TestLogBookBlockAfterALineBegun(t *testing.T) {
	// The block's first line ends a line begun earlier: it is decoded and
	// goes the way of output sent as it is.
	l, st := newTestLog(t, nil)
	l.Output(2, []byte("begun "))
	z, size, n := block("ended\nnext\n")
	l.OutputBlock(2, z, size, n)
	got := strings.Join(stored(t, l, st), "|")
	if want := "2:begun ended|2:next"; got != want {
		t.Fatalf("log:\n got %s\nwant %s", got, want)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.pending {
		if c.Encoding != "" {
			t.Errorf("chunk at line %d kept as it came", c.Seq)
		}
	}
}

func TestLogBookBlockCrossingTheCap(t *testing.T) {
	l, st := newTestLog(t, nil)
	l.max = 1 << 20
	line := strings.Repeat("b", 99) + "\n"
	for range 50 { // 50 blocks of 25,000 bytes: the cap falls in the 42nd
		z, size, n := block(strings.Repeat(line, 250))
		l.OutputBlock(2, z, size, n)
	}
	got := stored(t, l, st)
	kept := 0
	for i, g := range got[:len(got)-1] {
		// The line that crossed the cap is kept up to it.
		if g != "2:"+line[:99] && !(i == len(got)-2 && strings.HasPrefix(line, g[2:])) {
			t.Fatalf("line %d: %q", i+1, g)
		}
		kept += len(g) - 2 + 1
	}
	if last := got[len(got)-1]; !strings.Contains(last, "wrote more than 1 MiB") || kept > 1<<20 || kept < 1<<20-8000 { // each chunk costs 64 bytes of it
		t.Fatalf("%d bytes kept, last line %q", kept, last)
	}
}

func TestLogBookCap(t *testing.T) {
	var service bytes.Buffer
	l, st := newTestLog(t, &service)
	l.max = 1 << 20 // the marker says "1 MiB"
	line := strings.Repeat("y", 1023) + "\n"
	for i := 0; i < 2000; i++ { // about 2 MiB
		l.Output(2, []byte(line))
	}
	_, _ = l.Diagnostics().Write([]byte("diagnostics past the cap\n"))
	l.Printf(2, "hangar: the build failed")
	got := stored(t, l, st)
	markers := 0
	var kept int
	for _, g := range got {
		switch {
		case strings.Contains(g, "wrote more than 1 MiB"):
			markers++
		case strings.HasPrefix(g, "2:y"):
			kept += len(g) - 2 + 1
		}
	}
	if markers != 1 || kept > 1<<20 || kept < 1<<20-1024 {
		t.Fatalf("%d markers, %d bytes of output kept", markers, kept)
	}
	if got[len(got)-1] != "2:hangar: the build failed" {
		t.Errorf("the runner's own line past the cap is missing: last line %q", got[len(got)-1])
	}
	if strings.Contains(service.String(), "diagnostics past the cap") {
		t.Error("diagnostics past the cap reached the service log")
	}
}

func TestLogBookCapReachedByOutputAlone(t *testing.T) {
	// The builder sends at most one byte past the cap: enough for the
	// marker.
	l, st := newTestLog(t, nil)
	l.max = 1 << 20
	data := []byte(strings.Repeat(strings.Repeat("w", 99)+"\n", (1<<20)/100+1))[:1<<20+1]
	l.Output(2, data)
	got := stored(t, l, st)
	if last := got[len(got)-1]; !strings.Contains(last, "wrote more than 1 MiB") {
		t.Fatalf("no marker; last line %q", last)
	}
}

func TestLogBookDiagnosticsBounded(t *testing.T) {
	var service bytes.Buffer
	l, st := newTestLog(t, &service)
	w := l.Diagnostics()
	line := []byte(strings.Repeat("z", 99) + "\n")
	for i := 0; i < 10000; i++ { // 1 MB, four times what is logged
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if n := service.Len(); n > 2*MaxDiagnosticBytes {
		t.Fatalf("the service log grew by %d bytes for 1 MB of builder output", n)
	}
	if !strings.Contains(service.String(), "the rest is not logged") {
		t.Error("no marker in the service log")
	}
	// Diagnostics count against the build's cap but are not build log.
	if got := stored(t, l, st); len(got) != 0 {
		t.Errorf("diagnostics reached the build log: %v", got[:1])
	}
	if l.taken != 1000000 {
		t.Errorf("taken = %d, want 1000000", l.taken)
	}
}

// verboseOutput is what the log benchmark's step prints: 1,000,000 short
// lines (about 18 MB).
func verboseOutput() []byte {
	var data []byte
	for i := 1; i <= 1000000; i++ {
		data = fmt.Appendf(data, "line number %d\n", i)
	}
	return data
}

// BenchmarkLogBookOutput cuts a verbose step's output, arriving in 32 KiB
// frames as from the link, into chunks and stores them in a real store:
// the server's share of `go run ./bench -mode logs`.
func BenchmarkLogBookOutput(b *testing.B) {
	data := verboseOutput()
	b.SetBytes(int64(len(data)))
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		l, _ := newTestLog(b, nil)
		b.StartTimer()
		cpu0 := cpuTime()
		l.StartStep(1)
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 32<<10)
			l.Output(1, rest[:n])
			rest = rest[n:]
		}
		l.EndStep(1)
		l.Flush()
		cpu += cpuTime() - cpu0
	}
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkLogBookOutputBlock is BenchmarkLogBookOutput with the output
// as the builder sends it now: compressed blocks of whole lines, up to
// 256 KiB, which the log book checks and stores as they came.
func BenchmarkLogBookOutputBlock(b *testing.B) {
	data := verboseOutput()
	type blk struct {
		z           []byte
		size, lines int
	}
	var blocks []blk
	for rest := data; len(rest) > 0; {
		n := len(rest)
		if n > maxChunkBytes {
			n = bytes.LastIndexByte(rest[:maxChunkBytes], '\n') + 1
		}
		z, size, lines := block(string(rest[:n]))
		blocks = append(blocks, blk{z, size, lines})
		rest = rest[n:]
	}
	b.SetBytes(int64(len(data)))
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		l, _ := newTestLog(b, nil)
		b.StartTimer()
		cpu0 := cpuTime()
		l.StartStep(1)
		for _, bl := range blocks {
			l.OutputBlock(1, bl.z, bl.size, bl.lines)
		}
		l.EndStep(1)
		l.Flush()
		cpu += cpuTime() - cpu0
	}
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// cpuTime is the CPU time this process has used, user and system: wall
// time says little on a busy machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
