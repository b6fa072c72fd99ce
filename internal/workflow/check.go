package workflow

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Report is what Hangar makes of one workflow before any build: the steps
// it will run, the keys it honours and those it does not support (the
// Ignored paths, each with why).
type Report struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Steps       []string      `json:"steps"`
	Honoured    []string      `json:"honoured"`
	Unsupported []Unsupported `json:"unsupported"`
	// Groups are the environment variable groups the workflow uses.
	Groups []string `json:"groups"`
	// Keystores are the keystore references of its android_signing.
	Keystores []string `json:"keystores"`
}

// Unsupported is a key of the file that Hangar accepts without acting on
// it.
type Unsupported struct {
	Key string `json:"key"`
	Why string `json:"why"`
}

// Report describes w.
func (w *Workflow) Report() Report {
	r := Report{ID: w.ID, Name: w.Name, Steps: []string{}, Honoured: []string{}, Unsupported: []Unsupported{},
		Groups: append([]string{}, w.Groups...), Keystores: append([]string{}, w.AndroidSigning...)}
	machine := orDefault(w.InstanceType, "linux")
	if inputRef.MatchString(w.InstanceType) {
		machine = "given by an input"
		if d := w.defaults; d != nil && !inputRef.MatchString(d.InstanceType) {
			machine = orDefault(d.InstanceType, "linux") + " with the inputs' defaults"
		}
	}
	r.Steps = append(r.Steps, "Preparing build machine ("+machine+")", "Fetching app sources")
	for i, s := range w.Scripts {
		line := fmt.Sprintf("%d. %s", i+1, s.Name)
		var notes []string
		if s.IgnoreFailure {
			notes = append(notes, "its failure is ignored")
		} else if d := w.defaults; d != nil && i < len(d.Scripts) && d.Scripts[i].IgnoreFailure {
			notes = append(notes, "its failure is ignored with the inputs' defaults")
		}
		if s.WorkingDirectory != "" {
			notes = append(notes, "in "+s.WorkingDirectory)
		}
		if s.When != nil {
			notes = append(notes, "only "+describeWhenRule(s.When))
		}
		if len(notes) > 0 {
			line += " (" + strings.Join(notes, "; ") + ")"
		}
		r.Steps = append(r.Steps, line)
	}
	if len(w.Scripts) == 0 {
		r.Steps = append(r.Steps, "no scripts: the build fetches the sources and ends")
	}
	if len(w.CachePaths) > 0 {
		r.Steps = append(r.Steps[:2], append([]string{"Restoring cache"}, r.Steps[2:]...)...)
	}
	if len(w.Artifacts) > 0 {
		r.Steps = append(r.Steps, "Uploading artifacts (also after a failure)")
	}
	for _, s := range w.Publishing.Scripts {
		r.Steps = append(r.Steps, "Publishing: "+s.Name+" (also after a failure)")
	}
	if len(w.CachePaths) > 0 {
		r.Steps = append(r.Steps, "Saving cache (after a successful build)")
	}
	h := func(format string, args ...any) { r.Honoured = append(r.Honoured, fmt.Sprintf(format, args...)) }
	switch d := w.defaults; {
	case w.MaxDurationInput == "":
		h("max_build_duration: %s", formatDuration(w.MaxDuration))
	case d != nil && d.MaxDurationInput == "":
		h("max_build_duration: %s with the inputs' defaults (%s; a build's own value is checked when it starts)", formatDuration(w.MaxDuration), w.MaxDurationInput)
	default:
		h("max_build_duration: %s, depends on an input without default: given when the build starts (1-120 minutes)", w.MaxDurationInput)
	}
	switch instance := orDefault(w.InstanceType, "linux, the default"); {
	case !inputRef.MatchString(w.InstanceType):
		h("instance_type: %s (refused at start if the server has no such type)", instance)
	case w.defaults != nil && !inputRef.MatchString(w.defaults.InstanceType):
		h("instance_type: %s with the inputs' defaults (%s; refused at start if the server has no such type)", orDefault(w.defaults.InstanceType, "linux, the default"), instance)
	default:
		h("instance_type: %s, depends on an input without default: given when the build starts (refused then if the server has no such type)", instance)
	}
	if w.WorkingDirectory != "" {
		h("working_directory: %s", w.WorkingDirectory)
	}
	if len(w.Groups) > 0 {
		h("environment.groups: %s (set before environment.vars; every value masked in the log; a group the app does not have refuses the build at start)", strings.Join(w.Groups, ", "))
	}
	if len(w.AndroidSigning) > 0 {
		h("environment.android_signing: %s (the keystore is written into the machine, CM_KEYSTORE_PATH and the passwords exported; a reference the app does not have refuses the build at start)", strings.Join(w.AndroidSigning, ", "))
	}
	if len(w.Vars) > 0 {
		names := make([]string, len(w.Vars))
		for i, v := range w.Vars {
			names[i] = v.Name
		}
		h("environment.vars: %s ($VAR and ${VAR} expanded)", strings.Join(names, ", "))
	}
	if len(w.Toolchains) > 0 {
		var tcs []string
		for _, k := range []string{"java", "node", "python"} {
			if v, ok := w.Toolchains[k]; ok {
				tcs = append(tcs, k+" "+v)
			}
		}
		h("environment toolchains: %s (checked against the instance type's image when the build starts)", strings.Join(tcs, ", "))
	}
	if len(w.Inputs) > 0 {
		var ins []string
		for _, in := range w.Inputs {
			s := in.ID + " (" + in.Type
			if in.Default != nil {
				s += ", default " + FormatValue(in.Default)
			} else {
				s += ", required"
			}
			ins = append(ins, s+")")
		}
		h("inputs: %s", strings.Join(ins, ", "))
	}
	if w.When != nil {
		h("when: built only %s", describeWhenRule(w.When))
	}
	t := w.Triggering
	if len(t.Events) == 0 {
		h("triggering: none; started by hand only")
	} else {
		s := "triggering.events: " + strings.Join(t.Events, ", ")
		if len(t.BranchPatterns) > 0 {
			s += fmt.Sprintf("; %d branch pattern(s)", len(t.BranchPatterns))
		}
		if len(t.TagPatterns) > 0 {
			s += fmt.Sprintf("; %d tag pattern(s)", len(t.TagPatterns))
		}
		if t.CancelPrevious {
			s += "; cancel_previous_builds"
		}
		h("%s", s)
	}
	if w.IOSSigning {
		r.Unsupported = append(r.Unsupported, Unsupported{Key: "environment.ios_signing", Why: IOSSigningRefused})
	}
	if len(w.Artifacts) > 0 {
		h("artifacts: %s (collected after the steps, relative to the clone or absolute; kept with the build)%s", strings.Join(w.Artifacts, ", "), w.withDefaults(w.Artifacts, func(d *Workflow) []string { return d.Artifacts }))
	}
	if len(w.CachePaths) > 0 {
		h("cache.cache_paths: %s (restored before the steps, saved after a successful build)%s", strings.Join(w.CachePaths, ", "), w.withDefaults(w.CachePaths, func(d *Workflow) []string { return d.CachePaths }))
	}
	if n := len(w.Publishing.Scripts); n > 0 {
		h("publishing.scripts: %d script(s), run after the steps (also after a failure) with CM_ARTIFACT_LINKS", n)
	}
	if e := w.Publishing.Email; e != nil {
		var when []string
		if e.Success {
			when = append(when, "success")
		}
		if e.Failure {
			when = append(when, "failure")
		}
		h("publishing.email: %s, on %s (through the server's SMTP server)%s", strings.Join(e.Recipients, ", "), orDefault(strings.Join(when, " and "), "no outcome"),
			w.withDefaults(e.Recipients, func(d *Workflow) []string { return d.Publishing.Email.Recipients }))
	}
	for _, k := range w.Ignored {
		r.Unsupported = append(r.Unsupported, Unsupported{Key: k, Why: WhyIgnored(k)})
	}
	return r
}

// withDefaults says what list, which may take inputs, is with the inputs'
// defaults (of picks it from the workflow read with them): "" when list
// takes no input, else "; with the inputs' defaults: a, b" or that it
// depends on an input without default.
func (w *Workflow) withDefaults(list []string, of func(*Workflow) []string) string {
	if !slices.ContainsFunc(list, inputRef.MatchString) {
		return ""
	}
	if w.defaults != nil {
		if d := of(w.defaults); !slices.ContainsFunc(d, inputRef.MatchString) {
			return "; with the inputs' defaults: " + strings.Join(d, ", ")
		}
	}
	return "; depends on an input without default, given when the build starts"
}

func describeWhenRule(w *When) string {
	var parts []string
	if w.Changeset != nil {
		parts = append(parts, "if files changed since the last successful build ("+w.Changeset.Describe()+")")
	}
	if w.Condition != nil {
		parts = append(parts, fmt.Sprintf("if %s", w.Condition.String()))
	}
	return strings.Join(parts, " and ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func formatDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%d minutes", int(d/time.Minute))
	}
	return d.String()
}

// IOSSigningRefused is why a workflow with environment.ios_signing is
// refused when a build of it starts.
const IOSSigningRefused = "iOS code signing needs a macOS machine with Xcode; Hangar's machines are Linux: a build of this workflow is refused at start (remove ios_signing, or build it on Codemagic)"

var scriptKey = regexp.MustCompile(`^scripts\[\d+\]\.`)

// toolVersions are environment keys naming tool versions.
var toolVersions = []string{"flutter", "xcode", "cocoapods", "node", "npm", "java", "ruby", "ndk", "gradle", "python", "go", "dotnet"}

// WhyIgnored says why Hangar does not act on the key at path (a Workflow
// Ignored entry).
func WhyIgnored(path string) string {
	if scriptKey.MatchString(path) {
		switch path[strings.Index(path, ".")+1:] {
		case "test_report":
			return "test reports are not read yet: the step runs, its report is not shown"
		}
		return "not a step key Hangar knows; the step runs without it"
	}
	if env, ok := strings.CutPrefix(path, "environment."); ok {
		switch {
		case slices.Contains(toolVersions, env):
			return "tool versions are not installed: the build machine has the versions its image has"
		}
		return "not an environment key Hangar knows"
	}
	if pub, ok := strings.CutPrefix(path, "publishing."); ok {
		if strings.HasPrefix(pub, "email.") {
			return "not an email key Hangar knows (it reads recipients and notify)"
		}
		return "this publisher is NOT run by Hangar (only publishing.scripts and publishing.email are); the build log says so"
	}
	if strings.HasPrefix(path, "cache.") {
		return "not a cache key Hangar knows (it reads cache_paths)"
	}
	switch path {
	case "integrations":
		return "integrations (App Store Connect, ...) are not available"
	case "labels":
		return "labels are not shown on builds yet"
	case "pre_clone_scripts":
		return "pre_clone_scripts are not run"
	case "triggering.events.pull_request_labeled":
		return "labeling a pull request does not start builds; opening or updating it does"
	}
	return "not a key Hangar knows; ignored"
}
