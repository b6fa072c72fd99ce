// Package mask hides secret values in a stream of output: every occurrence
// of a value is replaced by Replacement, also when the value arrives split
// over several writes. It is how a build's secure variables (environment
// variable groups, keystore passwords) stay out of its log.
//
// A Set is the values to hide; a Stream masks one stream of output (a
// step's), holding back the bytes at the end of a write that may be the
// start of a value until the next write says whether it is. Only exact
// values are recognised: a value encoded (base64), split by the program
// that prints it, or quoted with escapes is not, as on Codemagic.
package mask

import (
	"bytes"
	"slices"
)

// Replacement is what a value is replaced with.
const Replacement = "*****"

// Set is the values to hide. The zero Set and a nil *Set hide nothing.
type Set struct {
	values [][]byte // longest first, no empty ones, no repeats
	maxLen int
}

// NewSet returns the set of values; empty values are left out (they
// cannot be seen). Every other value is hidden, however short: Codemagic
// documents no lower bound for its secret variables, so a one-character
// value hides every occurrence of that character.
func NewSet(values []string) *Set {
	s := &Set{}
	seen := map[string]bool{}
	for _, v := range values {
		if v == "" || seen[v] {
			continue
		}
		seen[v] = true
		s.values = append(s.values, []byte(v))
		s.maxLen = max(s.maxLen, len(v))
	}
	// Longest first: where two values start at the same byte, the longer
	// one is replaced.
	slices.SortStableFunc(s.values, func(a, b []byte) int { return len(b) - len(a) })
	return s
}

// Empty reports whether s hides nothing.
func (s *Set) Empty() bool { return s == nil || len(s.values) == 0 }

// String returns text with every value replaced.
func (s *Set) String(text string) string {
	if s.Empty() {
		return text
	}
	out, _ := s.mask(nil, []byte(text), true)
	return string(out)
}

// Stream returns a masker of one stream of output.
func (s *Set) Stream() *Stream { return &Stream{set: s} }

// Stream masks one stream of output. It is not safe for concurrent use.
// A nil *Stream passes everything through.
type Stream struct {
	set  *Set
	held []byte // the end of the last write: the start of a value, perhaps
}

// Write returns p masked, except for bytes at its end that may be the
// start of a value: those are held back and come out with the next Write
// or Flush. The result may be p itself when nothing needs hiding; it is
// valid until the next call.
func (m *Stream) Write(p []byte) []byte {
	if m == nil || m.set.Empty() {
		return p
	}
	data := p
	if len(m.held) > 0 {
		data = append(m.held, p...)
	}
	var out []byte
	out, m.held = m.set.mask(nil, data, false)
	m.held = bytes.Clone(m.held)
	return out
}

// Flush returns what is held back, masked: the stream has ended (or
// paused, as at a step's end), so a value cut short there is not a value.
func (m *Stream) Flush() []byte {
	if m == nil || len(m.held) == 0 {
		return nil
	}
	out, _ := m.set.mask(nil, m.held, true)
	m.held = nil
	return out
}

// mask appends data to out with every value replaced. Unless final, it
// stops at the first byte from which the rest of data is a proper prefix of
// a value, and returns that rest as held.
func (s *Set) mask(out, data []byte, final bool) (_, held []byte) {
	// next[i] is where values[i] next occurs at or after cur (-1: nowhere);
	// it is looked for again only once cur has passed it.
	next := make([]int, len(s.values))
	for i := range next {
		next[i] = -2
	}
	tail := len(data) // where the held tail starts
	if !final {
		tail = s.tailStart(data, 0)
	}
	cur := 0
	for cur < tail {
		at, n := -1, 0
		for i, v := range s.values {
			if next[i] == -2 || (next[i] >= 0 && next[i] < cur) {
				next[i] = -1
				if j := bytes.Index(data[cur:], v); j >= 0 {
					next[i] = cur + j
				}
			}
			// Values are longest first: at a tie the first found wins.
			if next[i] >= 0 && (at < 0 || next[i] < at) {
				at, n = next[i], len(v)
			}
		}
		if at < 0 || at >= tail {
			break
		}
		out = append(out, data[cur:at]...)
		out = append(out, Replacement...)
		cur = at + n
		if !final && cur > tail {
			// The value replaced ran into the tail: the tail, if any, is
			// further on.
			tail = s.tailStart(data, cur)
		}
	}
	out = append(out, data[cur:tail]...)
	return out, data[tail:]
}

// tailStart is the first byte of data at or after from from which the rest
// is a proper prefix of some value (len(data) if there is none).
func (s *Set) tailStart(data []byte, from int) int {
	start := len(data)
	for _, v := range s.values {
		for i := max(from, len(data)-len(v)+1); i < start; i++ {
			j := bytes.IndexByte(data[i:start], v[0])
			if j < 0 {
				break
			}
			i += j
			if bytes.HasPrefix(v, data[i:]) {
				start = i
				break
			}
		}
	}
	return start
}
