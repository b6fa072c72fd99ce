package workflow

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestInputsEverywhere: ${{ inputs.ID }} is substituted in every key, as
// Codemagic does; a value that is the reference alone keeps the input's
// type, and the keys are checked after substitution.
func TestInputsEverywhere(t *testing.T) {
	f := parseTestdata(t, "inputs-everywhere.yaml")
	w := mustWorkflow(t, f, "release")
	// Parse reads the typed keys with the defaults; triggering (read when
	// a webhook arrives) takes them.
	if w.MaxDuration != 30*time.Minute || w.MaxDurationInput != "${{ inputs.minutes }}" || w.Triggering.BranchPatterns[0].Pattern != "dev/*" {
		t.Errorf("parsed: %v %q %+v", w.MaxDuration, w.MaxDurationInput, w.Triggering.BranchPatterns)
	}
	if !w.Matches(EventPush, "dev/x") || w.Matches(EventPush, "prod/x") {
		t.Error("triggering does not take the inputs' defaults")
	}
	r := w.Report()
	for _, want := range []string{
		"max_build_duration: 30 minutes with the inputs' defaults (${{ inputs.minutes }}; a build's own value is checked when it starts)",
		"instance_type: linux_x2 with the inputs' defaults (${{ inputs.machine }}; refused at start if the server has no such type)",
		"cache.cache_paths: $CM_BUILD_DIR/.cache/${{ inputs.flavor }} (restored before the steps, saved after a successful build); with the inputs' defaults: $CM_BUILD_DIR/.cache/dev",
		"publishing.email: ${{ inputs.notify }}, on success and failure (through the server's SMTP server); with the inputs' defaults: team@example.com",
	} {
		if !slices.Contains(r.Honoured, want) {
			t.Errorf("report lacks %q:\n%q", want, r.Honoured)
		}
	}
	if !slices.Contains(r.Steps, "1. Test ${{ inputs.flavor }} (its failure is ignored with the inputs' defaults)") ||
		!slices.Contains(r.Steps, "Preparing build machine (linux_x2 with the inputs' defaults)") {
		t.Errorf("report steps: %q", r.Steps)
	}
	if r := mustWorkflow(t, f, "nightly").Report(); !slices.Contains(r.Honoured, "max_build_duration: ${{ inputs.minutes }}, depends on an input without default: given when the build starts (1-120 minutes)") {
		t.Errorf("nightly's report: %q", r.Honoured)
	}

	resolve := func(given map[string]any) (*Workflow, error) {
		t.Helper()
		values, err := w.InputValues(given)
		if err != nil {
			t.Fatal(err)
		}
		return w.Resolve(values)
	}
	d, err := resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(d *Workflow, minutes time.Duration, machine, flavor, email string, lenient bool) {
		t.Helper()
		got := []string{d.Name, d.InstanceType, d.Vars[0].Value, d.CachePaths[0], d.Scripts[0].Name, d.Scripts[0].Script, d.Scripts[1].Script,
			d.Artifacts[0], d.Publishing.Email.Recipients[0], d.Publishing.Scripts[0].Script, d.Triggering.BranchPatterns[0].Pattern}
		want := []string{"Release " + flavor, machine, flavor, "$CM_BUILD_DIR/.cache/" + flavor, "Test " + flavor, "./gradlew test" + flavor,
			"flutter build apk --flavor " + flavor + " --release", "build/app/outputs/flutter-apk/app-" + flavor + "-release.apk",
			email, `echo "built ` + flavor + `"`, flavor + "/*"}
		if !slices.Equal(got, want) || d.MaxDuration != minutes || d.Scripts[0].IgnoreFailure != lenient {
			t.Errorf("resolved:\n got %q %v %v\nwant %q %v %v", got, d.MaxDuration, d.Scripts[0].IgnoreFailure, want, minutes, lenient)
		}
	}
	check(d, 30*time.Minute, "linux_x2", "dev", "team@example.com", true)
	// From the command line (strings) and from JSON alike.
	d, err = resolve(map[string]any{"minutes": "90", "machine": "linux_x4", "flavor": "prod", "notify": "qa@example.com", "lenient": "false"})
	if err != nil {
		t.Fatal(err)
	}
	check(d, 90*time.Minute, "linux_x4", "prod", "qa@example.com", false)
	// A value is substituted once: text that looks like a reference stays.
	if d, err := resolve(map[string]any{"notify": "${{ inputs.flavor }}@example.com"}); err == nil {
		t.Errorf("a recipient %q was accepted", d.Publishing.Email.Recipients[0])
	}

	// The nightly workflow shares the email anchor, with its own default.
	n := mustWorkflow(t, f, "nightly")
	values, err := n.InputValues(map[string]any{"minutes": 5.0})
	if err != nil {
		t.Fatal(err)
	}
	nd, err := n.Resolve(values)
	if err != nil || nd.MaxDuration != 5*time.Minute || nd.Publishing.Email.Recipients[0] != "nightly@example.com" {
		t.Errorf("nightly resolved: %v %+v", err, nd)
	}
}

// TestInputsTypeChecked: a value that makes a key invalid once substituted
// is refused when the build starts, naming the file, line, key and input;
// a default that does so is an error of the file.
func TestInputsTypeChecked(t *testing.T) {
	w := mustWorkflow(t, parseTestdata(t, "inputs-everywhere.yaml"), "release")
	for given, want := range map[string]string{
		"minutes=500":   "codemagic.yaml:40:25: max_build_duration must be 1-120 minutes, got 500 (the value of input minutes)",
		"minutes=1.5":   "codemagic.yaml:40:25: max_build_duration must be 1-120 minutes, got the number 1.5 (the value of input minutes)",
		"notify=nobody": `codemagic.yaml:10:11: publishing.email.recipients: "nobody" is not an email address (the value of input notify)`,
		"flavor=":       "",
		"minutes=0":     "max_build_duration must be 1-120 minutes, got 0 (the value of input minutes)",
	} {
		id, v, _ := strings.Cut(given, "=")
		values, err := w.InputValues(map[string]any{id: v})
		if err != nil {
			if want != "" {
				t.Errorf("%s: %v", given, err)
			}
			continue
		}
		_, err = w.Resolve(values)
		var ie *InputError
		if want == "" {
			continue
		}
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", given, err, want)
		}
	}

	for _, tt := range []struct{ file, want string }{
		{"workflows:\n  w:\n    inputs:\n      m:\n        type: number\n        default: 500\n    max_build_duration: ${{ inputs.m }}\n",
			"codemagic.yaml:7:25: max_build_duration must be 1-120 minutes, got 500 (the default of input m)"},
		{"workflows:\n  w:\n    inputs:\n      b:\n        type: boolean\n        default: true\n    max_build_duration: ${{ inputs.b }}\n",
			"codemagic.yaml:7:25: max_build_duration must be 1-120 minutes, got the boolean true (the default of input b)"},
		{"workflows:\n  w:\n    inputs:\n      m:\n        type: number\n    max_build_duration: ${{ inputs.minutes }}\n",
			`${{ inputs.minutes }}: workflow "w" has no input "minutes"`},
		{"workflows:\n  w:\n    inputs:\n      s:\n        default: \"true\"\n    scripts:\n      - name: a\n        script: b\n        ignore_failure: ${{ inputs.s }}\n    triggering:\n      cancel_previous_builds: ${{ inputs.s }} x\n",
			`codemagic.yaml:11:31: triggering.cancel_previous_builds must be true or false, got "true x" (with the default of input s)`},
		{"workflows:\n  w:\n    inputs:\n      s:\n        default: x\n    scripts:\n      - name: a\n        script: b\n        ignore_failure: ${{ inputs.s }}\n",
			`codemagic.yaml:9:25: scripts[0].ignore_failure must be true or false, got "x" (the default of input s)`},
		{"workflows:\n  w:\n    inputs:\n      br:\n        description: branch\n    triggering:\n      events: [push]\n      branch_patterns:\n        - pattern: ${{ inputs.br }}\n",
			"codemagic.yaml:9:20: triggering.branch_patterns[0].pattern uses an input without default"},
	} {
		_, err := Parse("codemagic.yaml", []byte(tt.file))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s\n= %v\nwant %s", tt.file, err, tt.want)
		}
	}
}
