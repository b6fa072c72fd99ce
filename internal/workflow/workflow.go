// Package workflow parses and validates a repository's workflow file,
// codemagic.yaml (or hangar.yaml), in Codemagic's format, and decides which
// workflows a webhook event triggers.
//
// Parse turns the file into Workflows: the scripts Hangar runs, their
// variables, inputs and when rules (conditions in Codemagic's expression
// language, ParseCondition, and changesets), the time limit and the
// triggering rules. Sections that Hangar accepts but does not act on
// (publishing, artifacts, cache, ...) never fail a file; they are listed in
// Workflow.Ignored, and Workflow.Report says per workflow what runs, what is
// honoured and what is not supported, so that a user can be told before a
// build. Every validation error is an *Error that names the file, the line
// and column of the offending node, what is wrong and what is expected.
// Inputs (${{ inputs.ID }}) may be used in any key: Parse checks each
// workflow with its inputs' defaults, and Workflow.Resolve reads it again
// with the values a build is given.
package workflow

import (
	"fmt"
	"strings"
	"time"
)

// FileNames are looked up in this order at the root of the repository; the
// first one present is the workflow file.
var FileNames = []string{"codemagic.yaml", "hangar.yaml"}

const (
	// DefaultMaxDuration is a workflow's time limit when it sets no
	// max_build_duration.
	DefaultMaxDuration = 60 * time.Minute
	// MaxMaxDuration is the longest max_build_duration accepted.
	MaxMaxDuration = 120 * time.Minute
)

// Error is a problem in a workflow file. Line and Column are 1-based; they
// are 0 when unknown.
type Error struct {
	File   string
	Line   int
	Column int
	Msg    string
}

// Error formats e as "file:line:column: msg", leaving out unknown parts.
func (e *Error) Error() string {
	switch {
	case e.Line <= 0:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Column <= 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
}

// File is a parsed workflow file.
type File struct {
	// Name is the file name given to Parse, e.g. "codemagic.yaml".
	Name string
	// Workflows are in file order; there is at least one.
	Workflows []*Workflow
}

// Workflow returns the workflow with the given id, or an error that lists
// the ids the file defines.
func (f *File) Workflow(id string) (*Workflow, error) {
	ids := make([]string, 0, len(f.Workflows))
	for _, w := range f.Workflows {
		if w.ID == id {
			return w, nil
		}
		ids = append(ids, w.ID)
	}
	return nil, fmt.Errorf("no workflow %q in %s; known workflows: %s", id, f.Name, strings.Join(ids, ", "))
}

// Workflow is one entry of the file's workflows mapping.
type Workflow struct {
	// ID is the workflow's key in the file: letters, digits, '-' and '_'.
	ID string
	// Name is the display name; it defaults to ID.
	Name string
	// MaxDuration bounds the whole build. In the file, an integer is minutes
	// (1-120, default 60); a Go duration string such as "90s" or "2m" is a
	// Hangar extension (more than 0, at most 120m).
	MaxDuration time.Duration
	// MaxDurationInput is max_build_duration as written when it takes an
	// input (${{ inputs.minutes }}); then MaxDuration is its value with
	// the inputs' defaults (DefaultMaxDuration for an input without one),
	// and Resolve gives the build's.
	MaxDurationInput string
	// WorkingDirectory is the workflow's working_directory: where scripts run
	// unless they set their own, relative to the clone unless absolute.
	// Empty means the clone itself.
	WorkingDirectory string
	// InstanceType is the workflow's instance_type as written, "" if it
	// sets none. Which names exist is the server's business: it refuses a
	// build whose instance type it does not have.
	InstanceType string
	// Toolchains are the versions environment.java, environment.node and
	// environment.python ask for (tool -> version as written); nil if none.
	Toolchains map[string]string
	// Groups are environment.groups in file order: the environment
	// variable groups whose variables the build gets (after the built-in
	// ones, before Vars); nil if none.
	Groups []string
	// AndroidSigning are the keystore references of
	// environment.android_signing; nil if none.
	AndroidSigning []string
	// IOSSigning is whether the workflow has environment.ios_signing,
	// which Linux machines cannot honour.
	IOSSigning bool
	// Vars are environment.vars in file order. Scalar values are kept as
	// written (numbers and booleans too); a null value is "".
	Vars []Var
	// Scripts are run in order. A workflow without scripts (Codemagic's
	// minimal file) fetches the sources and ends.
	Scripts []Script
	// Inputs are the workflow's inputs in file order: values given when a
	// build starts, substituted for ${{ inputs.ID }}; see InputValues.
	Inputs []Input
	// When is the workflow's when: a workflow whose changeset has no
	// changes or whose condition is false is not built. Nil: always built.
	When *When
	// Triggering says which webhook events start the workflow; see Matches.
	Triggering Triggering
	// Artifacts are the artifacts section's glob patterns, as written:
	// files collected after the steps (relative to the clone).
	Artifacts []string
	// CachePaths are cache.cache_paths as written: saved after a
	// successful build, restored before the next one's steps.
	CachePaths []string
	// Publishing is what the publishing section asks Hangar to run.
	Publishing Publishing
	// src is where the workflow was read from (Resolve reads it again);
	// defaults is it read with its inputs' defaults (nil without inputs).
	src      *source
	defaults *Workflow
	// Ignored lists, as paths such as "publishing.slack", "environment.groups" or
	// "scripts[2].when", the sections present in the file that Hangar
	// accepts but does not act on, in file order.
	Ignored []string
}

// Var is one workflow environment variable.
type Var struct {
	Name  string
	Value string
}

// Script is one step of a workflow.
type Script struct {
	// Name is the step's name. For a script given as a plain string, or a
	// mapping without a name, it is the script's first non-empty line that
	// is not a "#!" line, trimmed and shortened to about 60 characters.
	Name string
	// Script is the script text. One starting with "#!" is run with that
	// interpreter; any other with bash.
	Script string
	// IgnoreFailure lets the build go on when the script fails.
	IgnoreFailure bool
	// When is the step's when: a step whose changeset has no changes or
	// whose condition is false is skipped. Nil: the step always runs.
	When *When
	// WorkingDirectory is where the script runs: the step's own
	// working_directory, or else the workflow's. It is relative to the
	// clone unless absolute; empty means the clone itself.
	WorkingDirectory string
}

// FileName is the name under which the n-th step (1-based) is kept on the
// builder machine, in ~/.hangar/steps: "NN-name.sh", e.g. "03-build-for-ios.sh".
func (s *Script) FileName(n int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s.Name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
			if b.Len() >= 40 {
				break
			}
		} else {
			dash = true
		}
	}
	slug := b.String()
	if slug == "" {
		slug = "step"
	}
	return fmt.Sprintf("%02d-%s.sh", n, slug)
}

// Triggering is a workflow's triggering section.
type Triggering struct {
	// Events are the events that start the workflow automatically: "push",
	// "pull_request" and "tag", in file order without repeats. Without
	// events the workflow is started only by hand.
	Events []string
	// BranchPatterns select the branches of push and pull_request events.
	BranchPatterns []Pattern
	// TagPatterns select the tags of tag events.
	TagPatterns []Pattern
	// CancelPrevious is cancel_previous_builds: a webhook build of the
	// workflow cancels the queued and running webhook builds of the same
	// workflow and branch.
	CancelPrevious bool
}

// Pattern is one entry of branch_patterns or tag_patterns.
type Pattern struct {
	// Pattern is a wildcard pattern as Codemagic reads it: * (any run of
	// characters, '/' included), ?, [abc], [!abc], {a,b} and the extended
	// forms ?(a|b), *(a|b), +(a|b), @(a|b) and !(a|b).
	Pattern string
	// Include is whether matching names are added (true, the default) or
	// removed (false).
	Include bool
	// Source says, for pull requests only, whether the pattern applies to
	// the source branch (true, the default) or the target branch (false).
	Source bool
}

// Events that a workflow's triggering.events may list.
const (
	EventPush        = "push"
	EventPullRequest = "pull_request"
	EventTag         = "tag"
)

// eventsIgnored are events that Codemagic knows and Hangar does not act on.
var eventsIgnored = []string{"pull_request_labeled"}
