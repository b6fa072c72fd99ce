package runner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// LogStore keeps build logs.
type LogStore interface {
	AppendLogs(ctx context.Context, id int64, lines []build.LogLine) error
}

// MaxLogBytes bounds what a build's log keeps; later lines are dropped
// (the build goes on) with one line saying so.
const MaxLogBytes = 64 << 20

// logBook is one build's log: the runner's own lines (Printf) and what the
// machine writes (Output, Diagnostics), buffered and written to the store
// by Flush. It is safe for concurrent use.
type logBook struct {
	store LogStore
	id    int64
	log   *slog.Logger

	mu        sync.Mutex // guards the fields below
	lines     []build.LogLine
	seq       int64
	bytes     int64
	truncated bool
}

func newLogBook(st LogStore, id int64, log *slog.Logger) *logBook {
	return &logBook{store: st, id: id, log: log}
}

// Printf adds the runner's own lines to step's log.
func (l *logBook) Printf(step int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		l.add(step, line)
	}
}

// Output adds what the machine wrote for step.
func (l *logBook) Output(step int, data []byte) {
	l.mu.Lock()
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		l.add(step, line)
	}
	n := len(l.lines)
	l.mu.Unlock()
	if n >= 512 {
		l.Flush()
	}
}

func (l *logBook) add(step int, line string) {
	if l.truncated {
		return
	}
	l.bytes += int64(len(line)) + 1
	if l.bytes > MaxLogBytes {
		l.truncated = true
		line = fmt.Sprintf("hangar: the log passed %d MiB; later lines are not kept (the build goes on)", MaxLogBytes>>20)
	}
	l.seq++
	l.lines = append(l.lines, build.LogLine{Seq: l.seq, Step: step, Time: time.Now().UTC(), Text: line})
}

// Flush writes buffered lines to the store.
func (l *logBook) Flush() {
	l.mu.Lock()
	lines := l.lines
	l.lines = nil
	l.mu.Unlock()
	if err := l.store.AppendLogs(context.Background(), l.id, lines); err != nil {
		l.log.Error("store logs", "err", err)
	}
}

// Diagnostics is where the builder process's own stdout and stderr go (the
// service log, not the build log).
func (l *logBook) Diagnostics() io.Writer { return diagWriter{l} }

type diagWriter struct{ l *logBook }

func (w diagWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		w.l.log.Warn("builder", "output", string(line))
	}
	return len(p), nil
}
