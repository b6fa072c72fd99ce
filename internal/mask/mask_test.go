package mask

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// reference masks text in one go: at each byte, the longest value that
// starts there is replaced.
func reference(values []string, text string) string {
	s := NewSet(values)
	var b strings.Builder
	for i := 0; i < len(text); {
		n := 0
		for _, v := range s.values {
			if strings.HasPrefix(text[i:], string(v)) {
				n = len(v)
				break
			}
		}
		if n > 0 {
			b.WriteString(Replacement)
			i += n
		} else {
			b.WriteByte(text[i])
			i++
		}
	}
	return b.String()
}

// streamed masks text written in the given pieces.
func streamed(values []string, pieces []string) string {
	m := NewSet(values).Stream()
	var b bytes.Buffer
	for _, p := range pieces {
		b.Write(m.Write([]byte(p)))
	}
	b.Write(m.Flush())
	return b.String()
}

func TestMask(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		pieces []string
		want   string
	}{
		{"whole", []string{"s3cr3t"}, []string{"token=s3cr3t\n"}, "token=*****\n"},
		{"twice", []string{"s3cr3t"}, []string{"s3cr3t s3cr3t\n"}, "***** *****\n"},
		{"split in two", []string{"s3cr3t"}, []string{"token=s3c", "r3t\n"}, "token=*****\n"},
		{"byte by byte", []string{"s3cr3t"}, strings.Split("a s3cr3t b", ""), "a ***** b"},
		{"prefix only, then other", []string{"s3cr3t"}, []string{"s3c", "ret"}, "s3cret"},
		{"prefix at the end", []string{"s3cr3t"}, []string{"x s3cr"}, "x s3cr"},
		{"longest wins", []string{"ab", "abcd"}, []string{"ab", "cd"}, "*****"},
		{"shorter when the longer does not come", []string{"ab", "abcd"}, []string{"ab", "cX"}, "*****cX"},
		{"shorter at the end", []string{"ab", "abcd"}, []string{"xab"}, "x*****"},
		{"overlap", []string{"abc", "bcdeQ", "eQR"}, []string{"abcde", "QR"}, "*****d*****"},
		{"one character", []string{"7"}, []string{"1778"}, "1**********8"},
		{"multi-line value", []string{"line1\nline2"}, []string{"line1\nli", "ne2\n"}, "*****\n"},
		{"empty value ignored", []string{""}, []string{"abc"}, "abc"},
		{"no values", nil, []string{"abc"}, "abc"},
		{"repeated start", []string{"aab"}, []string{"aaaa", "ab"}, "aaa*****"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := streamed(tc.values, tc.pieces); got != tc.want {
				t.Errorf("streamed %q through %q = %q, want %q", tc.pieces, tc.values, got, tc.want)
			}
			if got := NewSet(tc.values).String(strings.Join(tc.pieces, "")); got != tc.want {
				t.Errorf("String = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNilStream: a nil Stream and an empty Set pass output through.
func TestNilStream(t *testing.T) {
	var m *Stream
	if got := string(m.Write([]byte("abc"))); got != "abc" {
		t.Errorf("nil Stream: %q", got)
	}
	if m.Flush() != nil {
		t.Error("nil Stream flushed something")
	}
	var s *Set
	if !s.Empty() || s.String("x") != "x" {
		t.Error("nil Set hides something")
	}
}

// TestRandomSplits compares streams cut at random places with the one-go
// reference, over a small alphabet where values overlap often.
func TestRandomSplits(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abc"[r.IntN(3)]
		}
		return string(b)
	}
	for range 5000 {
		var values []string
		for range 1 + r.IntN(3) {
			values = append(values, word(1+r.IntN(5)))
		}
		text := word(r.IntN(40))
		var pieces []string
		for rest := text; rest != ""; {
			n := min(len(rest), r.IntN(6))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		if got, want := streamed(values, pieces), reference(values, text); got != want {
			t.Fatalf("values %q, pieces %q: got %q, want %q", values, pieces, got, want)
		}
	}
}

func FuzzStream(f *testing.F) {
	f.Add("s3cr3t", "ab", "token=s3cr3t and ab", uint8(3))
	f.Add("aab", "a", "aaaaab", uint8(1))
	f.Fuzz(func(t *testing.T, v1, v2, text string, cut uint8) {
		values := []string{v1, v2}
		var pieces []string
		step := int(cut%16) + 1
		for rest := text; rest != ""; {
			n := min(len(rest), step)
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		got := streamed(values, pieces)
		if want := reference(values, text); got != want {
			t.Fatalf("values %q, pieces %q: got %q, want %q", values, pieces, got, want)
		}
	})
}

// BenchmarkStream masks 64 KiB writes of build-log-like lines holding
// some of the values, with 1 and with 20 values to hide.
func BenchmarkStream(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(strconv.Itoa(n)+"-values", func(b *testing.B) {
			var values []string
			for i := range n {
				values = append(values, strings.Repeat(string(rune('a'+i)), 12)+"-secret")
			}
			line := []byte("compiling module 42 of 1000: ok (0.12s) aaaa-bbbb aaaaaaaaaaaa-secret\n")
			chunk := bytes.Repeat(line, 64<<10/len(line))
			m := NewSet(values).Stream()
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				m.Write(chunk)
			}
		})
	}
}
