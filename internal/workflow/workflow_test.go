package workflow

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

const validFile = `# A file in the style Codemagic's documentation recommends.
definitions:
  instance: &instance
    instance_type: mac_mini_m2
    max_build_duration: 90
  env_common: &env_common
    COMMON: shared
    OVERRIDDEN: from-anchor
  scripts:
    - &get_deps
      name: Get dependencies
      script: make deps
    - &lint echo lint

workflows:
  android-release:
    name: Android release
    <<: *instance
    working_directory: app
    environment:
      groups:
        - keystore
      vars:
        <<: *env_common
        PLAIN: hello world
        NUMBER: 42
        FLOAT: 1.50
        BOOL: true
        QUOTED: "007"
        EMPTY:
        MULTI: |
          line one
          line two
        OVERRIDDEN: local
      java: 17
    triggering:
      events:
        - push
        - tag
        - push
      branch_patterns:
        - pattern: '*'
        - pattern: 'wip/*'
          include: false
          source: false
      tag_patterns:
        - pattern: 'v*'
          include: true
      cancel_previous_builds: true
    scripts:
      - *get_deps
      - *lint
      - |
        #!/usr/bin/env python3
        print("hello from python")
      - name: Unit tests
        script: make test
        ignore_failure: true
        working_directory: app/core
      - name: Build
        script: ./gradlew assembleRelease
        when:
          changeset:
            includes: ['.']
    artifacts:
      - build/**/*.apk
    publishing:
      email:
        recipients: [a@example.com]

  quick_check:
    max_build_duration: "90s"
    scripts:
      - go vet ./...
      - "\n\n   go test ./...\n"  # a derived name skips blank lines
`

func TestParseValid(t *testing.T) {
	f, err := Parse("codemagic.yaml", []byte(validFile))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &File{
		Name: "codemagic.yaml",
		Workflows: []*Workflow{
			{
				ID:               "android-release",
				Name:             "Android release",
				MaxDuration:      90 * time.Minute,
				InstanceType:     "mac_mini_m2",
				WorkingDirectory: "app",
				Toolchains:       map[string]string{"java": "17"},
				Vars: []Var{
					{"COMMON", "shared"},
					{"PLAIN", "hello world"},
					{"NUMBER", "42"},
					{"FLOAT", "1.50"},
					{"BOOL", "true"},
					{"QUOTED", "007"},
					{"EMPTY", ""},
					{"MULTI", "line one\nline two\n"},
					{"OVERRIDDEN", "local"},
				},
				Scripts: []Script{
					{Name: "Get dependencies", Script: "make deps", WorkingDirectory: "app"},
					{Name: "echo lint", Script: "echo lint", WorkingDirectory: "app"},
					{Name: `print("hello from python")`, Script: "#!/usr/bin/env python3\nprint(\"hello from python\")\n", WorkingDirectory: "app"},
					{Name: "Unit tests", Script: "make test", IgnoreFailure: true, WorkingDirectory: "app/core"},
					{Name: "Build", Script: "./gradlew assembleRelease", WorkingDirectory: "app",
						When: &When{Changeset: &Changeset{Includes: []string{"."}}}},
				},
				Triggering: Triggering{
					Events: []string{"push", "tag"},
					BranchPatterns: []Pattern{
						{Pattern: "*", Include: true, Source: true},
						{Pattern: "wip/*", Include: false, Source: false},
					},
					TagPatterns:    []Pattern{{Pattern: "v*", Include: true, Source: true}},
					CancelPrevious: true,
				},
				Groups:     []string{"keystore"},
				Artifacts:  []string{"build/**/*.apk"},
				Publishing: Publishing{Email: &Email{Recipients: []string{"a@example.com"}, Success: true, Failure: true}},
			},
			{
				ID:          "quick_check",
				Name:        "quick_check",
				MaxDuration: 90 * time.Second,
				Scripts: []Script{
					{Name: "go vet ./...", Script: "go vet ./..."},
					{Name: "go test ./...", Script: "\n\n   go test ./...\n"},
				},
			},
		},
	}
	for _, w := range f.Workflows {
		w.src = nil // where it was read from, for Resolve
	}
	if !reflect.DeepEqual(f, want) {
		for i := range max(len(f.Workflows), len(want.Workflows)) {
			if i < len(f.Workflows) && i < len(want.Workflows) {
				t.Errorf("workflow %d:\n got %+v\nwant %+v", i, *f.Workflows[i], *want.Workflows[i])
			}
		}
		t.Fatalf("Parse mismatch (got %d workflows, want %d)", len(f.Workflows), len(want.Workflows))
	}
}

// TestParseMinimal is Codemagic's hello-world file, also as hangar.yaml.
func TestParseMinimal(t *testing.T) {
	for _, name := range FileNames {
		f, err := Parse(name, []byte("workflows:\n  hello-world:\n    name: Hello world workflow\n    scripts:\n        - echo \"Hello World!\"\n"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w := f.Workflows[0]
		if f.Name != name || w.ID != "hello-world" || w.Name != "Hello world workflow" || w.MaxDuration != DefaultMaxDuration ||
			len(w.Scripts) != 1 || w.Scripts[0].Name != `echo "Hello World!"` || w.Ignored != nil || w.Triggering.Events != nil {
			t.Errorf("%s: got %+v", name, w)
		}
	}
}

func TestMergeKeyLists(t *testing.T) {
	const data = `
a: &a {X: a1, Y: a2}
b: &b {Y: b2, Z: b3}
workflows:
  w:
    environment:
      vars:
        <<: [*a, *b]
        Z: own
    scripts: [make]
`
	f, err := Parse("codemagic.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []Var{{"X", "a1"}, {"Y", "a2"}, {"Z", "own"}}
	if got := f.Workflows[0].Vars; !reflect.DeepEqual(got, want) {
		t.Errorf("vars = %v, want %v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		line, col int
		msg       string // a part of the message
	}{
		{"not yaml", "workflows:\n  w:\n    scripts: [a\n", 3, 0, "not valid YAML"},
		{"not yaml tab", "workflows:\n\tw: 1\n", 2, 0, "not valid YAML"},
		{"unknown anchor", "workflows: *nope\n", 1, 12, "unknown anchor 'nope' referenced"},
		{"unknown anchor later", "a: 1\nworkflows:\n  w:\n    scripts: [*nope]\n", 4, 15, "unknown anchor"},
		{"merge cycle", "workflows:\n  w: &w\n    <<: *w\n    scripts: [a]\n", 3, 9, "merge key << refers to a mapping that contains it"},
		{"merge cycle in list", "workflows:\n  w: &w\n    scripts: [a]\n    <<: [{name: x}, *w]\n", 4, 21, "contains it"},
		{"empty", "", 1, 1, "file is empty"},
		{"only comments", "# nothing\n# here\n", 1, 1, "file is empty"},
		{"null document", "---\n~\n", 1, 1, "file is empty"},
		{"top list", "- a\n- b\n", 1, 1, "top level is a list; expected a mapping"},
		{"top scalar", "hello\n", 1, 1, `top level is "hello"`},
		{"no workflows", "definitions:\n  a: 1\n", 1, 1, "no workflows key"},
		{"workflows null", "x: 1\nworkflows:\n", 2, 1, "workflows is empty"},
		{"workflows empty map", "workflows: {}\n", 1, 12, "workflows is empty"},
		{"workflows list", "workflows:\n  - a\n", 2, 3, "workflows is a list; expected a mapping"},
		{"workflow id", "workflows:\n  my workflow:\n    scripts: [a]\n", 2, 3, `workflow id "my workflow" is not valid`},
		{"workflow id dot", "workflows:\n  a.b:\n    scripts: [a]\n", 2, 3, "expected only letters, digits, '-' and '_'"},
		{"workflow scalar", "workflows:\n  w: build\n", 2, 6, `workflow "w" is "build"; expected a mapping`},
		{"workflow null", "workflows:\n  w:\n", 2, 3, `workflow "w" is empty`},
		{"duplicate workflow", "workflows:\n  w:\n    scripts: [a]\n  w:\n    scripts: [b]\n", 4, 3, `duplicate key "w" (first at line 2)`},
		{"scripts null", "workflows:\n  w:\n    scripts:\n", 3, 5, "scripts is empty"},
		{"scripts empty list", "workflows:\n  w:\n    scripts: []\n", 3, 14, "scripts is empty"},
		{"scripts string", "workflows:\n  w:\n    scripts: make\n", 3, 14, `scripts must be a list of scripts, got "make"`},
		{"script number", "workflows:\n  w:\n    scripts:\n      - 42\n", 4, 9, "scripts[0] must be a script (a string) or a mapping with script, got the number 42"},
		{"script list", "workflows:\n  w:\n    scripts:\n      - make\n      - [a, b]\n", 5, 9, "scripts[1] must be a script"},
		{"script null item", "workflows:\n  w:\n    scripts:\n      -\n      - make\n", 4, 8, "scripts[0] is empty"},
		{"script mapping without script", "workflows:\n  w:\n    scripts:\n      - name: Build\n        run: make\n", 4, 9, "scripts[0] has no script"},
		{"script blank", "workflows:\n  w:\n    scripts:\n      - \"  \\n \"\n", 4, 9, "scripts[0] is an empty script"},
		{"script mapping blank", "workflows:\n  w:\n    scripts:\n      - name: x\n        script: \"\"\n", 4, 9, "scripts[0] is an empty script"},
		{"script not string", "workflows:\n  w:\n    scripts:\n      - script:\n          - a\n", 5, 11, "scripts[0].script must be a string"},
		{"ignore_failure yes", "workflows:\n  w:\n    scripts:\n      - script: make\n        ignore_failure: yes\n", 5, 25, `scripts[0].ignore_failure must be true or false, got "yes"`},
		{"var name", "workflows:\n  w:\n    environment:\n      vars:\n        OK: 1\n        1BAD: 2\n    scripts: [a]\n", 6, 9, `environment variable name "1BAD" is not valid`},
		{"var name dash", "workflows:\n  w:\n    environment:\n      vars:\n        MY-VAR: x\n    scripts: [a]\n", 5, 9, `"MY-VAR" is not valid`},
		{"var value list", "workflows:\n  w:\n    environment:\n      vars:\n        LIST: [a, b]\n    scripts: [a]\n", 5, 15, "environment variable LIST must be a string, number or boolean, got a list"},
		{"var value map", "workflows:\n  w:\n    environment:\n      vars:\n        MAP:\n          a: b\n    scripts: [a]\n", 6, 11, "got a mapping"},
		{"vars list", "workflows:\n  w:\n    environment:\n      vars:\n        - A=1\n    scripts: [a]\n", 5, 9, "environment.vars must be a mapping of NAME: value, got a list"},
		{"environment list", "workflows:\n  w:\n    environment: [a]\n    scripts: [a]\n", 3, 18, "environment must be a mapping"},
		{"duration 500", "workflows:\n  w:\n    max_build_duration: 500\n    scripts: [a]\n", 3, 25, "max_build_duration must be 1-120 minutes, got 500"},
		{"duration list", "workflows:\n  w:\n    max_build_duration: [1]\n    scripts: [a]\n", 3, 25, "max_build_duration must be 1-120 minutes, got a list"},
		{"event", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      events:\n        - push\n        - pr\n", 7, 11, `unknown triggering event "pr"; expected push, pull_request or tag`},
		{"events string", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      events: push\n", 5, 15, "triggering.events must be a list"},
		{"event mapping", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      events:\n        - push: true\n", 6, 11, "triggering event must be push, pull_request or tag, got a mapping"},
		{"triggering list", "workflows:\n  w:\n    scripts: [a]\n    triggering: [push]\n", 4, 17, "triggering must be a mapping"},
		{"patterns strings", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      branch_patterns:\n        - main\n", 6, 11, `triggering.branch_patterns[0] must be a mapping with pattern`},
		{"patterns mapping", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      tag_patterns:\n        pattern: v*\n", 6, 9, "triggering.tag_patterns must be a list of mappings"},
		{"pattern missing", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      branch_patterns:\n        - pattern: '*'\n        - include: false\n", 7, 11, "triggering.branch_patterns[1] has no pattern"},
		{"pattern empty", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      branch_patterns:\n        - pattern: ''\n", 6, 20, "triggering.branch_patterns[0].pattern must be a branch or tag name"},
		{"pattern include", "workflows:\n  w:\n    scripts: [a]\n    triggering:\n      branch_patterns:\n        - pattern: main\n          include: 'no'\n", 7, 20, "triggering.branch_patterns[0].include must be true or false"},
		{"name list", "workflows:\n  w:\n    name: [a]\n    scripts: [a]\n", 3, 11, "name must be a string, got a list"},
		{"merge scalar", "workflows:\n  w:\n    <<: 1\n    scripts: [a]\n", 3, 9, "merge key << takes a mapping or a list of mappings"},
		{"non-string key", "workflows:\n  w:\n    ? [a]\n    : 1\n    scripts: [a]\n", 3, 7, "mapping key is a list; expected a string"},
		{"error in anchor", "d:\n  s: &s\n    name: x\nworkflows:\n  w:\n    scripts: [*s]\n", 2, 6, "scripts[0] has no script"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("codemagic.yaml", []byte(tt.data))
			if err == nil {
				t.Fatalf("Parse succeeded with %d workflows; want an error", len(f.Workflows))
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if pe.File != "codemagic.yaml" || pe.Line != tt.line || pe.Column != tt.col || !strings.Contains(pe.Msg, tt.msg) {
				t.Errorf("got %q (line %d, column %d)\nwant line %d, column %d, message containing %q", err, pe.Line, pe.Column, tt.line, tt.col, tt.msg)
			}
			if pe.Msg != strings.ToLower(pe.Msg[:1])+pe.Msg[1:] {
				t.Errorf("message %q does not start in lower case", pe.Msg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	_, err := Parse("codemagic.yaml", []byte("workflows:\n  w:\n    scripts: [a]\n    max_build_duration: 500\n"))
	if got, want := err.Error(), "codemagic.yaml:4:25: max_build_duration must be 1-120 minutes, got 500"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 3, Msg: "m"}, "f:3: m"},
		{Error{File: "f", Msg: "m"}, "f: m"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration // 0: an error
	}{
		{`"3s"`, 3 * time.Second},
		{"3s", 3 * time.Second},
		{"5", 5 * time.Minute},
		{"1", time.Minute},
		{"120", 120 * time.Minute},
		{`"2h"`, 120 * time.Minute},
		{`"1h30m"`, 90 * time.Minute},
		{"0x10", 16 * time.Minute},
		{"121", 0},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"abc", 0},
		{`"60"`, 0},
		{`"0s"`, 0},
		{`"-1m"`, 0},
		{`"121m"`, 0},
		{"true", 0},
		{"99999999999999999999", 0},
	}
	for _, tt := range tests {
		data := "workflows:\n  w:\n    max_build_duration: " + tt.value + "\n    scripts: [a]\n"
		f, err := Parse("codemagic.yaml", []byte(data))
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("%s: got %v, want an error", tt.value, f.Workflows[0].MaxDuration)
		case tt.want == 0:
			if pe := err.(*Error); pe.Line != 3 || !strings.Contains(pe.Msg, "max_build_duration") {
				t.Errorf("%s: error %q", tt.value, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.value, err)
		case f.Workflows[0].MaxDuration != tt.want:
			t.Errorf("%s: got %v, want %v", tt.value, f.Workflows[0].MaxDuration, tt.want)
		}
	}
}

func TestIgnoredEvent(t *testing.T) {
	f, err := Parse("codemagic.yaml", []byte("workflows:\n  w:\n    scripts: [a]\n    triggering:\n      events: [pull_request_labeled, pull_request]\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := f.Workflows[0]
	if !reflect.DeepEqual(w.Triggering.Events, []string{"pull_request"}) || !reflect.DeepEqual(w.Ignored, []string{"triggering.events.pull_request_labeled"}) {
		t.Errorf("events %v, ignored %v", w.Triggering.Events, w.Ignored)
	}
}

func TestExpansionBound(t *testing.T) {
	// Each level merges the one before it ten times: 10^8 entries if expanded.
	var b strings.Builder
	b.WriteString("l0: &l0 {A: 1, B: 2}\n")
	for i := 1; i <= 8; i++ {
		b.WriteString("l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + "\n  <<: [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*l" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	b.WriteString("workflows:\n  w:\n    environment:\n      vars:\n        <<: *l8\n    scripts: [a]\n")
	start := time.Now()
	_, err := Parse("codemagic.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too many entries") {
		t.Errorf("err = %v, want too many entries", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestWorkflowLookup(t *testing.T) {
	f, err := Parse("hangar.yaml", []byte("workflows:\n  a: {scripts: [x]}\n  b: {scripts: [y]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w, err := f.Workflow("b"); err != nil || w.ID != "b" {
		t.Errorf("Workflow(b) = %v, %v", w, err)
	}
	_, err = f.Workflow("c")
	if err == nil || err.Error() != `no workflow "c" in hangar.yaml; known workflows: a, b` {
		t.Errorf("Workflow(c) error = %v", err)
	}
}

func TestScriptNames(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		script, name, file string
	}{
		{"make test", "make test", "03-make-test.sh"},
		{"\n  \n  echo hi  \nsecond", "echo hi", "03-echo-hi.sh"},
		{"#!/bin/sh\n", "#!/bin/sh", "03-bin-sh.sh"},
		{"#!/usr/bin/env python3\n\nprint(1)", "print(1)", "03-print-1.sh"},
		{long, strings.Repeat("x", 57) + "...", "03-" + strings.Repeat("x", 40) + ".sh"},
		{"ünïcödé ✓ build", "ünïcödé ✓ build", "03-n-c-d-build.sh"},
		{"✓", "✓", "03-step.sh"},
	}
	for _, tt := range tests {
		s := Script{Name: scriptName(tt.script), Script: tt.script}
		if s.Name != tt.name {
			t.Errorf("scriptName(%q) = %q, want %q", tt.script, s.Name, tt.name)
		}
		if got := s.FileName(3); got != tt.file {
			t.Errorf("FileName of %q = %q, want %q", s.Name, got, tt.file)
		}
	}
}

// TestDocExample parses the example of docs/workflow.md, so that the page
// shows a file that works.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/workflow.md")
	if err != nil {
		t.Skip(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml example in docs/workflow.md")
	}
	f, err := Parse("codemagic.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	w := f.Workflows[0]
	for i, want := range map[int]string{3: "04-core-tests.sh", 4: "05-print-a-script-in-another-language.sh"} {
		if got := w.Scripts[i].FileName(i + 1); got != want || !strings.Contains(string(doc), "~/.hangar/steps/"+want) {
			t.Errorf("step %d file is %s; docs/workflow.md should show %s", i+1, got, want)
		}
	}
	if w.Scripts[3].WorkingDirectory != "app/core" || w.Scripts[1].WorkingDirectory != "app" || w.MaxDuration != 30*time.Minute {
		t.Errorf("unexpected workflow %+v", w)
	}
}

// TestCRLF: a file saved on Windows, with a byte order mark, gives the same
// scripts.
func TestCRLF(t *testing.T) {
	f, err := Parse("codemagic.yaml", []byte("\ufeffworkflows:\r\n  w:\r\n    scripts:\r\n      - |\r\n        echo a\r\n        echo b\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Workflows[0].Scripts[0].Script; got != "echo a\necho b\n" {
		t.Errorf("script = %q", got)
	}
}
