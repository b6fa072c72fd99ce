package workflow

import (
	"strings"
	"testing"
	"time"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		yes     []string
		no      []string
	}{
		{"*", []string{"", "main", "feature/login", "a/b/c"}, nil},
		{"main", []string{"main"}, []string{"Main", "main2", "xmain", ""}},
		{"release/*", []string{"release/", "release/1.0", "release/a/b"}, []string{"release", "releases/1"}},
		{"*-dev", []string{"v0.0.42-dev", "-dev"}, []string{"v0.0.42", "dev"}},
		{"!(*-dev)", []string{"v0.0.42", "main", ""}, []string{"v0.0.42-dev", "-dev"}},
		{"{test,qa}/*", []string{"test/popup", "qa/x"}, []string{"prod/x", "test", "testqa/x"}},
		{"v+([0-9]).+([0-9]).+([0-9])", []string{"v0.0.42", "v10.2.3"}, []string{"v0.0", "v1.2.x", "v.1.2", "1.2.3"}},
		{"v?.?", []string{"v1.2", "vé.x"}, []string{"v1.23", "v12"}},
		{"[abc]x", []string{"ax", "cx"}, []string{"dx", "x", "abx"}},
		{"[!abc]x", []string{"dx", "/x"}, []string{"ax", "x"}},
		{"[^a-c]", []string{"d"}, []string{"b", ""}},
		{"[a-c0-9_]", []string{"b", "5", "_"}, []string{"d", "-"}},
		{"[]]", []string{"]"}, []string{"[]]", "a"}},
		{"[!]]", []string{"a"}, []string{"]"}},
		{"[abc", []string{"[abc"}, []string{"a"}},
		{"{a,b", []string{"{a,b"}, []string{"a"}},
		{"{a}", []string{"{a}"}, []string{"a"}},
		{"{,x}y", []string{"y", "xy"}, []string{"xxy"}},
		{"@(a", []string{"@(a"}, []string{"a"}},
		{"\\*", []string{"*"}, []string{"a", "\\*"}},
		{"a\\", []string{"a\\"}, []string{"a"}},
		{"?(a|b)c", []string{"c", "ac", "bc"}, []string{"abc"}},
		{"*(ab)", []string{"", "ab", "abab"}, []string{"aba", "a"}},
		{"@(a|b)", []string{"a", "b"}, []string{"ab", ""}},
		{"+(a|{b,c}d)", []string{"a", "bd", "abdcda"}, []string{"", "b", "ad"}},
		{"!(main|develop)", []string{"feature", "mainx"}, []string{"main", "develop"}},
		{"feature/!(wip-*)", []string{"feature/login"}, []string{"feature/wip-x"}},
		{"**/x", []string{"/x", "a/b/x"}, []string{"x"}},
		{"a*b*c", []string{"abc", "axxbyyc", "abbc"}, []string{"ab", "acb"}},
		{"*(a|b", []string{"*(a|b", "x(a|b"}, []string{"a"}},
	}
	for _, tt := range tests {
		for _, s := range tt.yes {
			if !Glob(tt.pattern, s) {
				t.Errorf("Glob(%q, %q) = false, want true", tt.pattern, s)
			}
		}
		for _, s := range tt.no {
			if Glob(tt.pattern, s) {
				t.Errorf("Glob(%q, %q) = true, want false", tt.pattern, s)
			}
		}
	}
}

func TestGlobBounds(t *testing.T) {
	start := time.Now()
	if Glob("*", strings.Repeat("a", maxGlobName+1)) {
		t.Error("a name past maxGlobName matched")
	}
	if Glob(strings.Repeat("?", maxGlobPattern+1), strings.Repeat("a", maxGlobPattern+1)) {
		t.Error("a pattern past maxGlobPattern matched")
	}
	hard := []struct{ pattern, name string }{
		{strings.Repeat("*(a|aa)", 30) + "b", strings.Repeat("a", 1000)},
		{strings.Repeat("*a", 100) + "b", strings.Repeat("a", 1000)},
		{strings.Repeat("{", 1000), strings.Repeat("{", 1000)},
		{strings.Repeat("@(", 500), "x"},
		{strings.Repeat("+(+(a|b)|c)", 10), strings.Repeat("ab", 400) + "x"},
	}
	for _, h := range hard {
		Glob(h.pattern, h.name)
	}
	if !Glob(strings.Repeat("{", 1000), strings.Repeat("{", 1000)) {
		t.Error("unclosed braces did not match themselves")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hard patterns took %v", d)
	}
}

const matchFile = `
workflows:
  all:
    triggering:
      events: [push, pull_request, tag]
      branch_patterns:
        - pattern: '*'
        - pattern: 'wip/*'
          include: false
        - pattern: 'wip/keep'
        - pattern: main
          source: false
      tag_patterns:
        - pattern: 'v*'
        - pattern: '*-beta'
          include: false
    scripts: [make]
  manual:
    scripts: [make]
  no-events:
    triggering:
      events: []
      branch_patterns:
        - pattern: '*'
    scripts: [make]
  push-only:
    triggering:
      events: [push]
      branch_patterns:
        - pattern: main
          source: false
    scripts: [make]
  any-branch:
    triggering:
      events: [push, tag]
    scripts: [make]
  excludes-only:
    triggering:
      events: [push]
      branch_patterns:
        - pattern: 'wip/*'
          include: false
    scripts: [make]
  tags:
    triggering:
      events: [tag]
      branch_patterns:
        - pattern: main
    scripts: [make]
  prs-into-main:
    triggering:
      events: [pull_request]
      branch_patterns:
        - pattern: main
          source: false
    scripts: [make]
`

func TestMatches(t *testing.T) {
	f, err := Parse("codemagic.yaml", []byte(matchFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		workflow, event, ref string
		want                 bool
	}{
		{"all", "push", "main", true},
		{"all", "push", "feature/login", true},
		{"all", "push", "wip/x", false},    // excluded by the later pattern
		{"all", "push", "wip/keep", true},  // included again by a still later one
		{"all", "tag", "v1.0", true},       // branch patterns play no part for tags
		{"all", "tag", "v1.0-beta", false}, // the later exclude wins
		{"all", "tag", "release-1", false}, // no tag pattern matches
		{"all", "pull_request", "feature/x", true},
		{"all", "pull_request", "wip/x", false},
		{"all", "schedule", "main", false},
		{"all", "", "main", false},
		{"manual", "push", "main", false},
		{"no-events", "push", "main", false},
		{"push-only", "push", "main", true}, // source plays no part for push
		{"push-only", "tag", "main", false},
		{"push-only", "pull_request", "main", false},
		{"any-branch", "push", "anything/at-all", true},
		{"any-branch", "tag", "whatever", true},
		{"excludes-only", "push", "main", false},
		{"excludes-only", "push", "wip/x", false},
		{"tags", "tag", "v2", true},
		{"tags", "push", "main", false},
		{"prs-into-main", "pull_request", "main", true},
		{"prs-into-main", "pull_request", "feature", false},
	}
	for _, tt := range tests {
		w, err := f.Workflow(tt.workflow)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Matches(tt.event, tt.ref); got != tt.want {
			t.Errorf("%s.Matches(%q, %q) = %v, want %v", tt.workflow, tt.event, tt.ref, got, tt.want)
		}
	}

	prs := []struct {
		workflow, source, target string
		want                     bool
	}{
		{"all", "feature/x", "develop", true},
		{"all", "wip/x", "develop", false},
		{"all", "wip/x", "main", true}, // the target pattern comes last and includes
		{"prs-into-main", "feature", "main", true},
		{"prs-into-main", "main", "develop", false},
		{"push-only", "feature", "main", false},
		{"manual", "feature", "main", false},
	}
	for _, tt := range prs {
		w, _ := f.Workflow(tt.workflow)
		if got := w.MatchesPullRequest(tt.source, tt.target); got != tt.want {
			t.Errorf("%s.MatchesPullRequest(%q, %q) = %v, want %v", tt.workflow, tt.source, tt.target, got, tt.want)
		}
	}
}
