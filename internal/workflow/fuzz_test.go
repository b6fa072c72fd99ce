package workflow

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks that Parse never panics, that its errors are *Error, and
// that what it accepts keeps the package's promises.
func FuzzParse(f *testing.F) {
	seeds := []string{
		validFile,
		matchFile,
		"",
		"workflows:\n  w:\n    scripts: [make]\n",
		"workflows: &w\n  w: *w\n",
		"a: &a {<<: *a}\nworkflows: {w: {<<: *a, scripts: [x]}}\n",
		"workflows:\n  w:\n    max_build_duration: \"3s\"\n    scripts:\n      - {name: a, script: b, ignore_failure: true}\n",
		"workflows:\n  w:\n    scripts: [a]\n    triggering: {events: [tag], tag_patterns: [{pattern: 'v+([0-9])'}]}\n",
		"- a\n",
		"workflows:\n  w:\n    scripts: [a\n",
		"x: !!binary aGVsbG8=\nworkflows: {w: {scripts: [!!str 1], environment: {vars: {A: !!binary aGk=}}}}\n",
		"d: &d ${{ inputs.m }}\nworkflows:\n  w:\n    inputs: {m: {type: number, default: 5}, b: {type: boolean, default: true}}\n    max_build_duration: *d\n    scripts: [{script: 'echo ${{ inputs.m }}', ignore_failure: '${{ inputs.b }}'}]\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("codemagic.yaml", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.File != "codemagic.yaml" || pe.Msg == "" || file != nil {
				t.Fatalf("bad error %T %v (file %v)", err, err, file)
			}
			return
		}
		if len(file.Workflows) == 0 {
			t.Fatal("no workflows and no error")
		}
		for _, w := range file.Workflows {
			if !validID(w.ID) || w.Name == "" || w.MaxDuration <= 0 || w.MaxDuration > MaxMaxDuration {
				t.Fatalf("bad workflow %+v", w)
			}
			for _, v := range w.Vars {
				if !validVarName(v.Name) {
					t.Fatalf("bad var %+v", v)
				}
			}
			for i, s := range w.Scripts {
				if s.Name == "" || s.Script == "" || s.FileName(i+1) == "" {
					t.Fatalf("bad script %+v", s)
				}
			}
			for _, ref := range []string{"main", "v1.0", ""} {
				w.Matches(EventPush, ref)
				w.Matches(EventTag, ref)
				w.MatchesPullRequest(ref, "main")
			}
			// A build with the defaults reads the workflow again.
			if values, err := w.InputValues(nil); err == nil {
				r, err := w.Resolve(values)
				var ie *InputError
				if err != nil && !errors.As(err, &ie) {
					t.Fatalf("Resolve: %T %v", err, err)
				}
				if err == nil && (r.ID != w.ID || r.MaxDuration <= 0 || r.MaxDuration > MaxMaxDuration || len(r.Scripts) != len(w.Scripts)) {
					t.Fatalf("resolved %+v from %+v", r, w)
				}
			}
		}
	})
}

// FuzzGlob checks that Glob never panics and that a pattern without special
// characters matches exactly itself.
func FuzzGlob(f *testing.F) {
	f.Add("release/*", "release/1.0")
	f.Add("v+([0-9]).+([0-9])", "v1.2")
	f.Add("{a,!(b|c)}[!x-z]?", "dq")
	f.Add("plain-name", "plain-name")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := Glob(pattern, name)
		plain := !strings.ContainsAny(pattern, `*?[]{}()!+@\`) && utf8.ValidString(pattern) && utf8.ValidString(name)
		if plain && len(name) <= maxGlobName && len(pattern) <= maxGlobPattern && got != (pattern == name) {
			t.Fatalf("Glob(%q, %q) = %v, want %v", pattern, name, got, pattern == name)
		}
	})
}
