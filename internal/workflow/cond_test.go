package workflow

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestConditionEval(t *testing.T) {
	var event any
	if err := json.Unmarshal([]byte(`{"pull_request": {"draft": false, "number": 7, "title": "Fix", "labels": [{"name": "ci"}],
		"base": {"ref": "main"}}, "action": "opened"}`), &event); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"RUN_TEST": "true", "FLAVOR": "prod", "EMPTY": "", "CM_BRANCH": "release/1.0"}
	ctx := Context{
		Env:    func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Event:  event,
		Inputs: map[string]any{"runTests": true, "flavor": "prod", "count": 3.0, "off": false},
	}
	tests := []struct {
		cond string
		want bool
	}{
		// The forms of Codemagic's documentation.
		{`not event.pull_request.draft`, true},
		{`event.pull_request.draft == false`, true},
		{`env.RUN_TEST == "true"`, true},
		{`${{ inputs.runTests }}`, true},
		{`${{ inputs.off }}`, false},
		{`env.FLAVOR == "${{ inputs.flavor }}"`, true},
		// Operators and precedence: not > and > or.
		{`env.RUN_TEST == "true" and env.FLAVOR == 'prod'`, true},
		{`env.RUN_TEST == "false" or env.FLAVOR == "prod"`, true},
		{`env.RUN_TEST == "false" or env.FLAVOR == "dev" and true`, false},
		{`not env.RUN_TEST == "false"`, true},
		{`not (env.RUN_TEST == "true" and env.FLAVOR == "prod")`, false},
		{`not not true`, true},
		{`env.FLAVOR != "dev"`, true},
		{`(((true)))`, true},
		// Unset variables and missing fields are null, which is false.
		{`env.UNSET`, false},
		{`env.UNSET == null`, true},
		{`env.UNSET == ""`, false},
		{`env.EMPTY`, false},
		{`env.EMPTY == ""`, true},
		{`env.RUN_TEST`, true},
		{`event.pull_request.missing.deeper`, false},
		{`event.action == "opened"`, true},
		{`event.pull_request.number == 7`, true},
		{`event.pull_request.number == 7.0`, true},
		{`event.pull_request.number == "7"`, false},
		{`event.pull_request.labels.0.name == "ci"`, true},
		{`event.pull_request.labels.5.name == "ci"`, false},
		{`event.pull_request.base`, true},
		{`inputs.count == 3`, true},
		{`inputs.flavor == "prod"`, true},
		{`inputs.nothing`, false},
		// A non-empty string is true, as in Python: "false" included.
		{`"false"`, true},
		{`0`, false},
		{`null`, false},
		{`True and not False`, true},
	}
	for _, tt := range tests {
		c, err := ParseCondition(tt.cond)
		if err != nil {
			t.Errorf("ParseCondition(%q): %v", tt.cond, err)
			continue
		}
		if got := c.Eval(ctx); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.cond, got, tt.want)
		}
	}
	// A build started by hand has no event.
	c, _ := ParseCondition(`not event.pull_request.draft`)
	if !c.Eval(Context{}) {
		t.Errorf("not event.pull_request.draft without an event: false, want true")
	}
	c, _ = ParseCondition(`event.pull_request.draft == false`)
	if c.Eval(Context{}) {
		t.Errorf("event.pull_request.draft == false without an event: true, want false")
	}
}

func TestConditionErrors(t *testing.T) {
	tests := []struct{ cond, want string }{
		{``, "condition ends where a value is expected"},
		{`env.A ==`, "condition ends where a value is expected"},
		{`env.A > 3`, "operator > (column 7) is not supported"},
		{`env.A >= 3`, "operator >= (column 7) is not supported"},
		{`env.A && env.B`, "operator && (column 7) is not supported"},
		{`env.A || env.B`, "operator || (column 7) is not supported"},
		{`!env.A`, "operator ! (column 1) is not supported"},
		{`env.A in "abc"`, `operator "in" (column 7) is not supported`},
		{`env.A = "x"`, "operator = (column 7) is not supported"},
		{`env.A == "x`, "string starting at column 10 of the condition is not closed"},
		{`(env.A`, "expected ) at column 7"},
		{`${{ inputs.a`, "expected }} at column 13"},
		{`foo == 1`, `unknown name "foo" at column 1`},
		{`env`, "env at column 1 of the condition: write env.NAME"},
		{`env.A.B`, "write env.NAME"},
		{`inputs.a.b`, "write inputs.NAME"},
		{`env.A == "x" env.B`, "unexpected 'env' at column 14"},
		{`and true`, `expected a value before "and"`},
		{`env. == 1`, "expected a name after '.' at column 6"},
		{`1.2.3`, `"1.2.3" at column 1 of the condition is not a number`},
		{`env.A == "${{ env.B }}"`, "${{ env.B }} is not supported"},
		{strings.Repeat("(", 100) + "true" + strings.Repeat(")", 100), "nested more than 64 levels"},
		{strings.Repeat("not ", 100) + "true", "nested more than 64 levels"},
		{strings.Repeat("a", 5000), "longer than 4096 characters"},
	}
	for _, tt := range tests {
		_, err := ParseCondition(tt.cond)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseCondition(%.40q) = %v, want an error with %q", tt.cond, err, tt.want)
		}
	}
}

func TestConditionRefs(t *testing.T) {
	c, err := ParseCondition(`${{ inputs.a }} and env.X == "${{ inputs.b }}-x" or event.pull_request.draft or event.ref == inputs.c`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Inputs(), ","); got != "a,b,c" {
		t.Errorf("Inputs() = %s", got)
	}
	var paths []string
	for _, p := range c.EventPaths() {
		paths = append(paths, strings.Join(p, "."))
	}
	if got := strings.Join(paths, ","); got != "pull_request.draft,ref" {
		t.Errorf("EventPaths() = %s", got)
	}
}

func FuzzCondition(f *testing.F) {
	for _, s := range []string{`not event.pull_request.draft`, `env.A == "x" and (inputs.b or 'y')`, `${{ inputs.a }}`, `((`, `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := ParseCondition(src)
		if err != nil {
			return
		}
		c.Eval(Context{Env: func(string) (string, bool) { return "x", true }, Event: map[string]any{"a": []any{1.0}}})
	})
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"$A/${B}", "pa$$word", "${", "$", "${A}x$1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		none := func(string) (string, bool) { return "", false }
		if got := Expand(s, none); got != s {
			t.Fatalf("Expand(%q) with nothing set = %q", s, got)
		}
		Expand(s, func(string) (string, bool) { return "v", true })
	})
}

func FuzzPathMatch(f *testing.F) {
	f.Add("**/*.md", "docs/a.md")
	f.Add("android/", "android/app")
	f.Fuzz(func(t *testing.T, pattern, file string) {
		PathMatch(pattern, file)
		if len(file) <= maxGlobPattern && !strings.ContainsAny(file, "*?[]\\") && file != "" && !strings.HasPrefix(file, "./") && !PathMatch(file, file) {
			if _, err := validPattern(file); err == nil {
				t.Fatalf("PathMatch(%q, itself) = false", file)
			}
		}
	})
}

func validPattern(p string) (string, error) { return p, validPathPattern(p) }
