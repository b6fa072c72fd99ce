package runner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
)

// LogStore keeps build logs.
type LogStore interface {
	AppendLog(ctx context.Context, id int64, chunks []build.LogChunk) error
}

// MaxLogBytes bounds everything a machine writes that reaches the server:
// its steps' output and the builder process's own stdout and stderr. Past
// it one line says so and the rest is dropped (the build goes on).
const MaxLogBytes = 64 << 20

// MaxDiagnosticBytes bounds the part of MaxLogBytes that the builder
// process's own output may take in the service log.
const MaxDiagnosticBytes = 256 << 10

const (
	// maxChunkBytes is the most a stored chunk holds.
	maxChunkBytes = 256 << 10
	// flushBytes is how much the log buffers before it writes to the store
	// on its own (Flush writes the rest).
	flushBytes = 1 << 20
	// maxBuffered is how much it buffers at most: past it, Output waits
	// for the store. A burst of output that fits is taken off the link at
	// once, so the step that wrote it does not wait on the store.
	maxBuffered = 32 << 20
	// chunkOverhead is what a chunk costs besides its bytes (memory, a
	// row), charged to the cap and the buffer.
	chunkOverhead = 64
)

// logBook is one build's log: the runner's own lines (Printf) and what the
// machine writes (Output, Diagnostics), cut into lines, buffered as chunks
// and written to the store by Flush. It is safe for concurrent use.
type logBook struct {
	store LogStore
	id    int64
	log   *slog.Logger
	max   int64 // MaxLogBytes, smaller in tests

	flushMu sync.Mutex // serialises Flush, so chunks reach the store in order

	mu       sync.Mutex       // guards the fields below
	pending  []build.LogChunk // not stored yet
	buffered int              // bytes in pending
	flushing bool             // a Flush started by Output runs
	seq      int64            // the last line number given
	step     int              // the step of the last line
	partial  map[int][]byte   // by step: the start of a line not ended yet
	taken    int64            // bytes the machine wrote, against max
	full     bool             // the machine wrote more than max
	diag     int64            // bytes of diagnostics logged
	diagLine []byte           // the start of a diagnostics line not ended yet
	burst    int              // the step whose last chunk filled up (-1: none)
	now      func() time.Time // time.Now, settable in tests
}

func newLogBook(st LogStore, id int64, log *slog.Logger) *logBook {
	return &logBook{store: st, id: id, log: log, max: MaxLogBytes, partial: make(map[int][]byte), burst: -1, now: time.Now}
}

// Printf adds the runner's own lines to step's log. They are kept even
// past the cap.
func (l *logBook) Printf(step int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines(step, []byte(fmt.Sprintf(format, args...)+"\n"))
}

// OutputBlock adds lines lines of size bytes that the machine wrote as
// step's output, which came compressed as z, one S2 block (link.Recv has
// checked that they need no work: link.WholeLines). Unless a line begun
// earlier must be ended first or the cap is reached, z is stored as it
// came, one chunk; else it is decoded and goes the way of Output. z must
// not change afterwards.
func (l *logBook) OutputBlock(step int, z []byte, size, lines int) {
	l.mu.Lock()
	if len(l.partial[step]) > 0 || l.full || l.taken+chunkOverhead+int64(size) > l.max ||
		lines < 1 || size > maxChunkBytes {
		data, err := s2.Decode(nil, z)
		if err != nil {
			data = []byte(fmt.Sprintf("\nhangar: the builder sent output that does not decode (%v); it is not kept\n", err))
		}
		l.output(step, data)
		return
	}
	l.taken += chunkOverhead + int64(size)
	l.pending = append(l.pending, build.LogChunk{Seq: l.seq + 1, Lines: lines, Step: step, Time: l.now().UTC(),
		Data: z, Encoding: build.LogS2})
	l.seq += int64(lines)
	l.step = step
	l.burst = -1
	l.buffered += chunkOverhead + len(z)
	l.maybeFlush()
}

// Output adds bytes the machine wrote as step's output.
func (l *logBook) Output(step int, data []byte) {
	l.mu.Lock()
	l.output(step, data)
}

// output is Output with l.mu held; it unlocks l.mu.
func (l *logBook) output(step int, data []byte) {
	if n := len(l.pending); n == 0 || l.pending[n-1].Step != step {
		// A new chunk costs more than its bytes: charge it to the cap, so
		// that output switching steps at every line stays bounded too.
		l.taken += chunkOverhead
	}
	data, crossed := l.take(data)
	p := l.partial[step]
	switch {
	case len(data) == 0:
	case bytes.IndexByte(data, '\n') < 0 && len(p)+len(data) < link.MaxLine:
		// More of an unfinished line.
		l.partial[step] = append(p, data...)
	default:
		if len(p) > 0 {
			// End the unfinished line first, without copying the rest.
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				l.lines(step, append(p, data[:i+1]...))
				p, data = p[:0], data[i+1:]
			} else {
				p, data = p[:0], append(p, data...)
			}
		}
		end := bytes.LastIndexByte(data, '\n') + 1
		l.lines(step, data[:end])
		rest := data[end:]
		// A line past MaxLine is kept in pieces.
		for len(rest) >= link.MaxLine {
			l.lines(step, append(bytes.Clone(rest[:link.MaxLine]), '\n'))
			rest = rest[link.MaxLine:]
		}
		l.partial[step] = append(p[:0], rest...)
	}
	if crossed {
		l.endLine(step)
		l.capped(step)
	}
	l.maybeFlush()
}

// maybeFlush writes the buffered chunks to the store when there are enough of
// them. l.mu is held; maybeFlush unlocks it.
func (l *logBook) maybeFlush() {
	// Write to the store beside the link, not in its way (Flush keeps the
	// order, and the runner's own Flush at a step's end waits for it); if
	// the store falls behind, in its way: the link then holds the builder
	// back.
	behind := l.buffered >= maxBuffered
	flush := l.buffered >= flushBytes && !l.flushing && !behind
	l.flushing = l.flushing || flush
	l.mu.Unlock()
	switch {
	case behind:
		l.Flush()
	case flush:
		go func() {
			l.Flush()
			l.mu.Lock()
			l.flushing = false
			l.mu.Unlock()
		}()
	}
}

// StartStep notes that step runs now: the cap's marker goes there.
func (l *logBook) StartStep(step int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.step = step
}

// EndStep ends step's unfinished last line, if any: the step has ended.
func (l *logBook) EndStep(step int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLine(step)
	delete(l.partial, step)
}

// EndAll ends every step's unfinished last line: the build has ended (a
// step's background process may have left one).
func (l *logBook) EndAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, step := range slices.Sorted(maps.Keys(l.partial)) {
		l.endLine(step)
	}
	clear(l.partial)
}

// endLine ends step's unfinished line. l.mu is held.
func (l *logBook) endLine(step int) {
	if p := l.partial[step]; len(p) > 0 {
		l.lines(step, append(p, '\n'))
		l.partial[step] = p[:0]
	}
}

// take counts data, which the machine wrote, against the cap and returns
// the part that is kept, and whether data crossed the cap. l.mu is held.
func (l *logBook) take(data []byte) ([]byte, bool) {
	if l.full {
		return nil, false
	}
	l.taken += int64(len(data))
	if l.taken <= l.max {
		return data, false
	}
	l.full = true
	return data[:max(int64(len(data))-(l.taken-l.max), 0)], true
}

// capped says in step's log that the cap was reached. l.mu is held.
func (l *logBook) capped(step int) {
	l.lines(step, []byte(fmt.Sprintf("hangar: the build machine wrote more than %d MiB; the rest of its output is not kept (the build goes on)\n", l.max>>20)))
}

// lines adds data, whole lines each ended by "\n", to step's log. l.mu is
// held.
func (l *logBook) lines(step int, data []byte) {
	for len(data) > 0 {
		var c *build.LogChunk
		if n := len(l.pending); n > 0 && l.pending[n-1].Step == step && l.pending[n-1].Encoding == "" && len(l.pending[n-1].Data) < maxChunkBytes {
			c = &l.pending[n-1]
		} else {
			// A step that filled its last chunk is in a burst: give the
			// next one its full size at once rather than growing it.
			size := min(len(data), maxChunkBytes)
			if l.burst == step {
				size = maxChunkBytes
			}
			l.pending = append(l.pending, build.LogChunk{Seq: l.seq + 1, Step: step, Time: l.now().UTC(),
				Data: make([]byte, 0, size+link.MaxLine)})
			l.step = step
			l.buffered += chunkOverhead
			c = &l.pending[len(l.pending)-1]
		}
		// The lines that fit in the chunk, at least one.
		block := data
		if room := maxChunkBytes - len(c.Data); len(block) > room {
			end := bytes.LastIndexByte(block[:room], '\n') + 1
			if end == 0 {
				end = bytes.IndexByte(block, '\n') + 1
			}
			if end == 0 {
				end = len(block)
			}
			block = block[:end]
		}
		data = data[len(block):]
		if len(c.Data)+len(block) >= maxChunkBytes {
			l.burst = step
		} else if len(data) == 0 {
			l.burst = -1
		}
		if bytes.IndexByte(block, '\r') < 0 && !link.HasLineOver(block, link.MaxLine) {
			// The common case: the lines as they are.
			n := bytes.Count(block, []byte{'\n'})
			c.Data = append(c.Data, block...)
			if block[len(block)-1] != '\n' {
				n++
				c.Data = append(c.Data, '\n')
			}
			c.Lines += n
			l.seq += int64(n)
			l.buffered += len(block)
			continue
		}
		for len(block) > 0 {
			line := block
			if i := bytes.IndexByte(block, '\n'); i >= 0 {
				line, block = block[:i], block[i+1:]
			} else {
				block = nil
			}
			for {
				part := line[:min(len(line), link.MaxLine)]
				line = line[len(part):]
				c.Data = append(append(c.Data, bytes.TrimSuffix(part, []byte("\r"))...), '\n')
				c.Lines++
				l.seq++
				l.buffered += len(part) + 1
				if len(line) == 0 {
					break
				}
			}
		}
	}
}

// Flush writes buffered lines to the store. What the store refuses stays
// buffered for the next Flush: the log never has a gap.
func (l *logBook) Flush() {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	chunks, buffered := l.pending, l.buffered
	l.pending, l.buffered = nil, 0
	l.mu.Unlock()
	if err := l.store.AppendLog(context.Background(), l.id, chunks); err != nil {
		l.log.Error("store logs", "err", err)
		l.mu.Lock()
		l.pending = append(chunks, l.pending...)
		l.buffered += buffered
		l.mu.Unlock()
	}
}

// Diagnostics is where the builder process's own stdout and stderr go:
// the service log, up to MaxDiagnosticBytes, and against the build's cap.
func (l *logBook) Diagnostics() io.Writer { return diagWriter{l} }

type diagWriter struct{ l *logBook }

func (w diagWriter) Write(p []byte) (int, error) {
	l := w.l
	l.mu.Lock()
	data, crossed := l.take(p)
	if crossed {
		l.capped(l.step)
	}
	var logged []string
	for len(data) > 0 && l.diag < MaxDiagnosticBytes {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			l.diagLine = append(l.diagLine, data[:min(len(data), link.MaxLine-len(l.diagLine))]...)
			break
		}
		line := string(append(l.diagLine, data[:min(i, link.MaxLine-len(l.diagLine))]...))
		l.diagLine = l.diagLine[:0]
		data = data[i+1:]
		l.diag += int64(len(line)) + 1
		logged = append(logged, line)
		if l.diag >= MaxDiagnosticBytes {
			logged = append(logged, fmt.Sprintf("hangar: the builder wrote more than %d KiB of its own output; the rest is not logged", MaxDiagnosticBytes>>10))
		}
	}
	l.mu.Unlock()
	for _, line := range logged {
		l.log.Warn("builder", "output", strings.TrimSuffix(line, "\r"))
	}
	return len(p), nil
}
