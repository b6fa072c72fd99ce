package workflow

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func parseTestdata(t *testing.T, name string) *File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "codemagic", name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("codemagic.yaml", data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

func mustWorkflow(t *testing.T, f *File, id string) *Workflow {
	t.Helper()
	w, err := f.Workflow(id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestTestdataParses: every representative file parses, and has a report.
func TestTestdataParses(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "codemagic", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata: %v %v", files, err)
	}
	for _, p := range files {
		f := parseTestdata(t, filepath.Base(p))
		for _, w := range f.Workflows {
			r := w.Report()
			if r.ID != w.ID || len(r.Steps) < 3 || len(r.Honoured) == 0 {
				t.Errorf("%s: report %+v", p, r)
			}
		}
	}
}

// TestMinimalWorkflow: Codemagic's minimal file, without scripts, is
// accepted: it has nothing to run.
func TestMinimalWorkflow(t *testing.T) {
	w := mustWorkflow(t, parseTestdata(t, "minimal.yaml"), "sample-workflow")
	if len(w.Scripts) != 0 || w.Name != "Codemagic Sample Workflow" || w.InstanceType != "mac_mini_m2" {
		t.Errorf("minimal: %+v", w)
	}
	r := w.Report()
	if !slices.Contains(r.Steps, "no scripts: the build fetches the sources and ends") {
		t.Errorf("report steps: %q", r.Steps)
	}
	// An empty scripts list is still a mistake.
	if _, err := Parse("codemagic.yaml", []byte("workflows:\n  w:\n    scripts: []\n")); err == nil || !strings.Contains(err.Error(), "scripts is empty") {
		t.Errorf("scripts: [] = %v", err)
	}
}

func TestInputsFile(t *testing.T) {
	f := parseTestdata(t, "inputs.yaml")
	w := mustWorkflow(t, f, "my-workflow")
	want := []Input{
		{ID: "name", Description: "Who is greeted?", Type: "string", Default: "Codemagic"},
		{ID: "number_input", Description: "Number input", Type: "number", Default: 1.0},
		{ID: "string_input", Description: "String input", Type: "string", Default: "hello"},
		{ID: "boolean_input", Description: "Boolean input", Type: "boolean", Default: true},
		{ID: "choice_input", Description: "Choice input", Type: "choice", Default: "option 2", Options: []string{"option 1", "option 2", "option 3"}},
		{ID: "buildNumber", Description: "Build number for artifact versioning", Type: "number"},
	}
	if !reflect.DeepEqual(w.Inputs, want) {
		t.Errorf("inputs:\n got %+v\nwant %+v", w.Inputs, want)
	}
	// buildNumber has no default: a value is required.
	if _, err := w.InputValues(nil); err == nil || !strings.Contains(err.Error(), "input buildNumber of workflow my-workflow has no default") {
		t.Errorf("no buildNumber: %v", err)
	}
	vals, err := w.InputValues(map[string]any{"buildNumber": "42", "boolean_input": "false", "choice_input": "option 3"})
	if err != nil {
		t.Fatal(err)
	}
	wantVals := map[string]any{"name": "Codemagic", "number_input": 1.0, "string_input": "hello", "boolean_input": false, "choice_input": "option 3", "buildNumber": 42.0}
	if !reflect.DeepEqual(vals, wantVals) {
		t.Errorf("values %v, want %v", vals, wantVals)
	}
	if got := SubstituteInputs(w.Scripts[1].Script, vals); got != `flutter build apk --build-number="42" --release` {
		t.Errorf("script: %s", got)
	}
	if got := SubstituteInputs(w.Scripts[1].Name, vals); got != "Build option 3" {
		t.Errorf("name: %s", got)
	}
	if got := SubstituteInputs(w.Vars[0].Value, vals); got != "Hello, Codemagic" {
		t.Errorf("var: %s", got)
	}
	// The API gives JSON values.
	vals, err = w.InputValues(map[string]any{"buildNumber": 0.25, "boolean_input": true, "name": ""})
	if err != nil || vals["buildNumber"] != 0.25 || vals["name"] != "" || FormatValue(vals["buildNumber"]) != "0.25" {
		t.Errorf("JSON values: %v %v", vals, err)
	}
	for _, tt := range []struct {
		given map[string]any
		want  string
	}{
		{map[string]any{"buildNumber": 1.0, "colour": "red"}, "workflow my-workflow has no input colour; its inputs are name, number_input"},
		{map[string]any{"buildNumber": "many"}, `input buildNumber of workflow my-workflow: is a number, got "many"`},
		{map[string]any{"buildNumber": true}, "is a number, got the boolean true"},
		{map[string]any{"buildNumber": 1.0, "boolean_input": "yes"}, `is a boolean (true or false), got "yes"`},
		{map[string]any{"buildNumber": 1.0, "boolean_input": 1.0}, "is a boolean (true or false), got the number 1"},
		{map[string]any{"buildNumber": 1.0, "choice_input": "option 4"}, `must be one of option 1, option 2, option 3, got "option 4"`},
		{map[string]any{"buildNumber": 1.0, "name": 3.0}, "is a string, got the number 3: give it as text"},
	} {
		_, err := w.InputValues(tt.given)
		if _, ok := err.(*InputError); !ok || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("InputValues(%v) = %v, want %q", tt.given, err, tt.want)
		}
	}

	ios := mustWorkflow(t, f, "ios")
	c := ios.Scripts[0].When.Condition
	vals, _ = ios.InputValues(nil)
	if !c.Eval(Context{Inputs: vals}) {
		t.Errorf("runTests defaults to true")
	}
	vals, _ = ios.InputValues(map[string]any{"runTests": "false"})
	if c.Eval(Context{Inputs: vals}) {
		t.Errorf("runTests false")
	}
	if !slices.Contains(ios.Ignored, "scripts[0].test_report") || !slices.Contains(ios.Ignored, "publishing.app_store_connect") {
		t.Errorf("ignored: %q", ios.Ignored)
	}
	// A workflow without inputs refuses any.
	hello := mustWorkflow(t, parseTestdata(t, "hello-world.yaml"), "hello-world")
	if _, err := hello.InputValues(map[string]any{"x": "1"}); err == nil || !strings.Contains(err.Error(), "it has no inputs") {
		t.Errorf("no inputs: %v", err)
	}
}

func TestInputErrors(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"undeclared in script", "workflows:\n  w:\n    scripts:\n      - echo ${{ inputs.nope }}\n", `4:9: ${{ inputs.nope }}: workflow "w" has no input "nope"`},
		{"undeclared in var", "workflows:\n  w:\n    environment:\n      vars:\n        A: ${{ inputs.x }}\n    scripts: [a]\n", `5:12: ${{ inputs.x }}: workflow "w" has no input "x"`},
		{"undeclared in condition", "workflows:\n  w:\n    when:\n      condition: ${{ inputs.x }}\n    scripts: [a]\n", `4:18: ${{ inputs.x }}: workflow "w" has no input "x"`},
		{"other context", "workflows:\n  w:\n    scripts:\n      - echo ${{ env.HOME }}\n", "${{ env.HOME }} is not supported: only ${{ inputs.ID }}"},
		{"bad type", "workflows:\n  w:\n    inputs:\n      a:\n        type: int\n    scripts: [a]\n", `inputs.a.type "int" is not an input type; expected boolean, choice, number or string`},
		{"choice without options", "workflows:\n  w:\n    inputs:\n      a:\n        type: choice\n    scripts: [a]\n", "inputs.a is of type choice and needs options"},
		{"options on string", "workflows:\n  w:\n    inputs:\n      a:\n        options: [x]\n    scripts: [a]\n", "inputs.a.options is only for inputs of type choice"},
		{"default not an option", "workflows:\n  w:\n    inputs:\n      a:\n        type: choice\n        options: [x, y]\n        default: z\n    scripts: [a]\n", `inputs.a.default "z" is not one of its options ("x", "y")`},
		{"number default", "workflows:\n  w:\n    inputs:\n      a:\n        type: number\n        default: many\n    scripts: [a]\n", "inputs.a.default must be a number (the input's type), got \"many\""},
		{"boolean default", "workflows:\n  w:\n    inputs:\n      a:\n        type: boolean\n        default: 'yes'\n    scripts: [a]\n", "inputs.a.default must be true or false"},
		{"bad id", "workflows:\n  w:\n    inputs:\n      1a: {}\n    scripts: [a]\n", `input id "1a" is not valid`},
		{"inputs list", "workflows:\n  w:\n    inputs: [a]\n    scripts: [a]\n", "inputs must be a mapping of input ids to inputs"},
	}
	for _, tt := range tests {
		_, err := Parse("codemagic.yaml", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// Inputs declared after the scripts that use them are fine.
	if _, err := Parse("codemagic.yaml", []byte("workflows:\n  w:\n    scripts:\n      - echo ${{inputs.a}}\n    inputs:\n      a: {default: x}\n")); err != nil {
		t.Errorf("inputs after scripts: %v", err)
	}
}

func TestWhenFile(t *testing.T) {
	f := parseTestdata(t, "when.yaml")
	app := mustWorkflow(t, f, "build-app")
	if cs := app.When.Changeset; cs == nil || !reflect.DeepEqual(cs.Includes, []string{"."}) || !reflect.DeepEqual(cs.Excludes, []string{"**/*.md"}) {
		t.Fatalf("build-app changeset: %+v", app.When)
	}
	for _, tt := range []struct {
		changed []string
		want    bool
	}{
		{[]string{"README.md", "docs/guide.md"}, false}, // only Markdown: skipped
		{[]string{"README.md", "lib/main.dart"}, true},
		{[]string{"codemagic.yaml"}, true}, // always included
		{nil, false},
	} {
		if got := app.When.Changeset.Selects(tt.changed); got != tt.want {
			t.Errorf("build-app Selects(%q) = %v", tt.changed, got)
		}
	}
	android := mustWorkflow(t, f, "build-android").When.Changeset
	if android.Selects([]string{"ios/Runner/Info.plist", "lib/a.dart"}) || !android.Selects([]string{"android/app/build.gradle"}) {
		t.Errorf("build-android changeset")
	}
	pr := mustWorkflow(t, f, "build")
	if pr.When.Condition.String() != "not event.pull_request.draft" || pr.Scripts[0].When.Condition.String() != `env.RUN_TEST == "true"` {
		t.Errorf("build when: %+v", pr.When)
	}
	if got := pr.EventPaths(); !reflect.DeepEqual(got, [][]string{{"pull_request", "draft"}}) {
		t.Errorf("event paths %q", got)
	}
	if pr.Scripts[1].When.Changeset == nil || pr.Scripts[1].When.Condition != nil {
		t.Errorf("step changeset: %+v", pr.Scripts[1].When)
	}
	for _, tt := range []struct{ name, data, want string }{
		{"bad condition", "workflows:\n  w:\n    when:\n      condition: env.A > 1\n    scripts: [a]\n", "4:18: when.condition: operator > (column 7) is not supported"},
		{"step condition", "workflows:\n  w:\n    scripts:\n      - script: a\n        when:\n          condition: env.A ==\n", "6:22: scripts[0].when.condition: condition ends where a value is expected"},
		{"unknown key", "workflows:\n  w:\n    when:\n      conditions: x\n    scripts: [a]\n", "when.conditions is not known; when takes condition and changeset"},
		{"includes string", "workflows:\n  w:\n    when:\n      changeset:\n        includes: android/\n    scripts: [a]\n", "when.changeset.includes must be a list of paths"},
		{"bad glob", "workflows:\n  w:\n    when:\n      changeset:\n        includes: ['[a']\n    scripts: [a]\n", `"[a" is not a valid path pattern`},
	} {
		_, err := Parse("codemagic.yaml", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestPathMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, file string
		want          bool
	}{
		{".", "a/b/c.txt", true},
		{"./", "x", true},
		{"android/", "android/app/build.gradle", true},
		{"android", "android/app/build.gradle", true},
		{"android", "androidx/a", false},
		{"android/", "ios/android/x", false},
		{"**/*.md", "README.md", true},
		{"**/*.md", "docs/a/b.md", true},
		{"**/*.md", "docs/a/b.mdx", false},
		{"*.md", "docs/a.md", false},
		{"docs/*.md", "docs/a.md", true},
		{"lib/**/test", "lib/a/b/test/x_test.dart", true},
		{"lib/**", "lib/a.dart", true},
		{"lib/?.dart", "lib/a.dart", true},
		{"[ab]/x", "b/x", true},
		{"./lib", "lib/main.dart", true},
	} {
		if got := PathMatch(tt.pattern, tt.file); got != tt.want {
			t.Errorf("PathMatch(%q, %q) = %v", tt.pattern, tt.file, got)
		}
	}
	// A pattern full of ** costs little.
	if PathMatch(strings.Repeat("**/", 40)+"x", strings.Repeat("a/", 200)+"y") {
		t.Errorf("deep ** matched")
	}
}

func TestTriggeringFile(t *testing.T) {
	f := parseTestdata(t, "triggering.yaml")
	all := mustWorkflow(t, f, "all-events")
	if !all.Triggering.CancelPrevious || !reflect.DeepEqual(all.Triggering.Events, []string{"push", "pull_request", "tag"}) {
		t.Errorf("all-events: %+v", all.Triggering)
	}
	if !all.MatchesPullRequest("feature", "main") || all.MatchesPullRequest("feature", "excluded-target") || !all.MatchesPullRequest("included-source", "excluded-target") {
		t.Errorf("all-events pull requests")
	}
	if !all.Matches(EventTag, "v1") || all.Matches(EventTag, "excluded-tag") {
		t.Errorf("all-events tags")
	}
	pr := mustWorkflow(t, f, "pr-into-main")
	if !pr.MatchesPullRequest("feature/x", "main") || pr.MatchesPullRequest("main", "develop") || pr.Matches(EventPush, "main") {
		t.Errorf("pr-into-main")
	}
	tags := mustWorkflow(t, f, "release-tags")
	if !tags.Matches(EventTag, "v1.2.3") || tags.Matches(EventTag, "v1.2") || tags.Matches(EventPush, "v1.2.3") {
		t.Errorf("release-tags")
	}
	if r := all.Report(); !slices.ContainsFunc(r.Unsupported, func(u Unsupported) bool { return u.Key == "triggering.events.pull_request_labeled" }) {
		t.Errorf("report: %+v", r.Unsupported)
	}
}

func TestVarsFile(t *testing.T) {
	w := mustWorkflow(t, parseTestdata(t, "vars.yaml"), "dotnet")
	env := map[string]string{"CM_BUILD_DIR": "/home/builder/clone", "HOME": "/home/builder"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := map[string]string{}
	for _, v := range w.Vars {
		got[v.Name] = Expand(v.Value, lookup)
		env[v.Name] = got[v.Name]
	}
	want := map[string]string{
		"DOTNET_PATH":     "/home/builder/clone/dotnet",
		"DOTNET_BIN":      "/home/builder/clone/dotnet/dotnet",
		"TOOLS":           "/home/builder/clone/dotnet/tools",
		"XCODE_WORKSPACE": "ios/Runner.xcworkspace",
		"PASSWORD":        "pa$$word",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("expanded %v\nwant %v", got, want)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "x", "B_2": "y", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tt := range []struct{ in, want string }{
		{"$A", "x"},
		{"${A}", "x"},
		{"$A/$B_2", "x/y"},
		{"${A}B", "xB"},
		{"$AB", "$AB"}, // AB is not set: kept
		{"$UNSET and ${UNSET}", "$UNSET and ${UNSET}"},
		{"[$EMPTY]", "[]"},
		{"$", "$"},
		{"$$", "$$"},
		{"$1", "$1"},
		{"${A", "${A"},
		{"${}", "${}"},
		{"${A-b}", "${A-b}"},
		{"100$", "100$"},
		{"pa$$A", "pa$x"},
		{"no dollar", "no dollar"},
		{"héllo $A ü", "héllo x ü"},
	} {
		if got := Expand(tt.in, lookup); got != tt.want {
			t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnsupportedReport(t *testing.T) {
	w := mustWorkflow(t, parseTestdata(t, "unsupported.yaml"), "android-workflow")
	r := w.Report()
	keys := map[string]string{}
	for _, u := range r.Unsupported {
		keys[u.Key] = u.Why
	}
	for _, k := range []string{"labels", "environment.flutter", "publishing.google_play", "publishing.slack"} {
		if keys[k] == "" {
			t.Errorf("report does not name %s as unsupported: %+v", k, r.Unsupported)
		}
	}
	if !strings.Contains(keys["environment.flutter"], "tool versions are not installed") || !strings.Contains(keys["publishing.google_play"], "NOT run by Hangar") {
		t.Errorf("reasons: %v", keys)
	}
	for _, k := range []string{"cache", "artifacts", "publishing", "publishing.email", "publishing.scripts"} {
		if keys[k] != "" {
			t.Errorf("report names %s as unsupported: %s", k, keys[k])
		}
	}
	if !reflect.DeepEqual(w.Artifacts, []string{"build/**/outputs/**/*.aab", "build/**/outputs/**/mapping.txt"}) ||
		!reflect.DeepEqual(w.CachePaths, []string{"$HOME/.gradle/caches", "$HOME/.pub-cache"}) {
		t.Errorf("artifacts %q, cache paths %q", w.Artifacts, w.CachePaths)
	}
	e := w.Publishing.Email
	if e == nil || !reflect.DeepEqual(e.Recipients, []string{"user_1@example.com", "user_2@example.com"}) || !e.Success || e.Failure {
		t.Errorf("email: %+v", e)
	}
	if len(w.Publishing.Scripts) != 1 || w.Publishing.Scripts[0].Name != "Report the build" {
		t.Errorf("publishing scripts: %+v", w.Publishing.Scripts)
	}
	for _, want := range []string{"Restoring cache", "Uploading artifacts (also after a failure)", "Publishing: Report the build (also after a failure)", "Saving cache (after a successful build)"} {
		if !slices.Contains(r.Steps, want) {
			t.Errorf("steps %q lack %q", r.Steps, want)
		}
	}
	if !slices.Contains(r.Steps, "1. Set up local.properties") || !slices.Contains(r.Steps, "Preparing build machine (linux_x2)") {
		t.Errorf("steps: %q", r.Steps)
	}
}

func TestProjectEvent(t *testing.T) {
	payload := map[string]any{
		"action":       "opened",
		"pull_request": map[string]any{"draft": true, "title": "x", "head": map[string]any{"ref": "f", "sha": "abc"}, "labels": []any{"a"}},
		"sender":       map[string]any{"login": "me"},
	}
	got := ProjectEvent(payload, [][]string{{"pull_request", "draft"}, {"pull_request", "head", "ref"}, {"pull_request", "labels"}, {"missing", "x"}})
	want := map[string]any{"pull_request": map[string]any{"draft": true, "head": map[string]any{"ref": "f"}, "labels": []any{"a"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ProjectEvent = %v\nwant %v", got, want)
	}
	big := map[string]any{"files": []any{strings.Repeat("x", 70<<10)}}
	if got := ProjectEvent(big, [][]string{{"files"}}); !reflect.DeepEqual(got, map[string]any{"files": map[string]any{"hangar_truncated": true}}) {
		t.Errorf("big value kept: %.80v", got)
	}
	long := map[string]any{"message": strings.Repeat("y", 100<<10)}
	if got := ProjectEvent(long, [][]string{{"message"}}); len(got["message"].(string)) != 64<<10 {
		t.Errorf("long string kept whole: %d", len(got["message"].(string)))
	}
}

// TestDocFiles: every complete file (a yaml block with workflows) that
// docs/workflow.md shows parses.
func TestDocFiles(t *testing.T) {
	doc, err := os.ReadFile("../../docs/workflow.md")
	if err != nil {
		t.Skip(err)
	}
	n := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if !strings.HasPrefix(block, "workflows:") && !strings.Contains(block, "\nworkflows:") {
			continue
		}
		n++
		if _, err := Parse("codemagic.yaml", []byte(block)); err != nil {
			t.Errorf("docs/workflow.md block %d: %v\n%s", n, err, block)
		}
	}
	if n < 4 {
		t.Errorf("only %d complete files in docs/workflow.md", n)
	}
}

// TestGroupsAndSigning: environment.groups and android_signing as
// Codemagic's documentation writes them are read and reported; ios_signing
// is reported as refused.
func TestGroupsAndSigning(t *testing.T) {
	f := parseTestdata(t, "signing.yaml")
	w := mustWorkflow(t, f, "android-release")
	if !slices.Equal(w.Groups, []string{"google_play", "keystore_credentials"}) || !slices.Equal(w.AndroidSigning, []string{"keystore_reference"}) || w.IOSSigning {
		t.Errorf("groups %q, android_signing %q, ios_signing %v", w.Groups, w.AndroidSigning, w.IOSSigning)
	}
	if len(w.Ignored) != 0 {
		t.Errorf("ignored: %q", w.Ignored)
	}
	r := w.Report()
	if !slices.Equal(r.Groups, w.Groups) || !slices.Equal(r.Keystores, w.AndroidSigning) {
		t.Errorf("report: groups %q, keystores %q", r.Groups, r.Keystores)
	}
	if !slices.ContainsFunc(r.Honoured, func(h string) bool {
		return strings.HasPrefix(h, "environment.groups: google_play, keystore_credentials")
	}) {
		t.Errorf("honoured: %q", r.Honoured)
	}
	ios := mustWorkflow(t, f, "ios-release")
	if !ios.IOSSigning || !slices.Equal(ios.Groups, []string{"app_store_credentials"}) {
		t.Errorf("ios: signing %v, groups %q", ios.IOSSigning, ios.Groups)
	}
	r = ios.Report()
	if len(r.Unsupported) != 1 || r.Unsupported[0].Key != "environment.ios_signing" || !strings.Contains(r.Unsupported[0].Why, "refused at start") {
		t.Errorf("ios report: %+v", r.Unsupported)
	}
	for _, bad := range []string{"groups: {a: b}", "groups: [[a]]", "android_signing: [\"\"]"} {
		src := "workflows:\n  w:\n    environment:\n      " + bad + "\n    scripts: [echo]\n"
		if _, err := Parse("codemagic.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "must be a list of names") {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}
