// Package build is Hangar's domain: builds, their steps and the states they
// move through. It does no I/O.
package build

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is the state of a build.
type Status string

// Build states. A build moves queued -> preparing -> building and ends in
// exactly one of the final states.
const (
	Queued    Status = "queued"
	Preparing Status = "preparing"
	Building  Status = "building"
	Finished  Status = "finished"
	Failed    Status = "failed"
	Canceled  Status = "canceled"
	Timeout   Status = "timeout"
	// WaitingForSSH is how the API shows a building SSH build whose steps
	// are all done: its machine waits for its user until the SSH window
	// ends. The store keeps it as Building (see ShownStatus).
	WaitingForSSH Status = "waiting_for_ssh"
)

// Done reports whether s is a final state.
func (s Status) Done() bool {
	switch s {
	case Finished, Failed, Canceled, Timeout:
		return true
	}
	return false
}

// StepStatus is the state of one step.
type StepStatus string

// Step states.
const (
	StepPending  StepStatus = "pending"
	StepRunning  StepStatus = "running"
	StepSuccess  StepStatus = "success"
	StepFailed   StepStatus = "failed"
	StepSkipped  StepStatus = "skipped"
	StepCanceled StepStatus = "canceled"
	// StepPaused: the build waits before this step, at a breakpoint.
	StepPaused StepStatus = "paused"
)

// Trigger says what started a build.
type Trigger string

// Triggers.
const (
	Manual  Trigger = "manual"
	Webhook Trigger = "webhook"
)

// Names of the steps every build has before the workflow's scripts.
const (
	StepPrepare = "Preparing build machine"
	StepFetch   = "Fetching app sources"
)

// Build is one run of a workflow at one commit.
type Build struct {
	ID           int64      `json:"id"`
	App          string     `json:"app"`
	Number       int64      `json:"number"`
	Workflow     string     `json:"workflow"`
	WorkflowName string     `json:"workflow_name"`
	Branch       string     `json:"branch"`
	Commit       string     `json:"commit"`
	Status       Status     `json:"status"`
	Trigger      Trigger    `json:"trigger"`
	StartedBy    string     `json:"started_by,omitempty"`
	Message      string     `json:"message,omitempty"`
	MaxDuration  int64      `json:"max_build_duration_seconds"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	Steps        []Step     `json:"steps"`
	SSH          SSH        `json:"ssh"`
	// RerunOf is the build this one reruns; Reruns the builds that rerun
	// this one (in the single-build answer only).
	RerunOf *int64  `json:"rerun_of,omitempty"`
	Reruns  []int64 `json:"reruns,omitempty"`
}

// SSHState is the state of a build's SSH access.
type SSHState string

// SSH access states.
const (
	SSHPending   SSHState = "pending"   // the machine's tunnel is not up yet
	SSHReady     SSHState = "ready"     // the script connects
	SSHConnected SSHState = "connected" // someone is connected
	SSHClosed    SSHState = "closed"    // access has ended for good
)

// SSHMode is the SSH access a build was started with.
type SSHMode string

// SSH modes.
const (
	SSHAlways    SSHMode = "always"     // SSH from the start
	SSHOnFailure SSHMode = "on-failure" // SSH only if a step fails
)

// SSH is the SSH access of a build, as the API shows it.
type SSH struct {
	Enabled bool `json:"enabled"`
	// Mode is what was asked for when the build was started: SSHAlways,
	// SSHOnFailure (Enabled turns true only once a step fails; until then
	// no credential exists), or empty for a build without SSH.
	Mode  SSHMode  `json:"mode,omitempty"`
	State SSHState `json:"state,omitempty"`
	// Command is the one-line command that connects (a signed URL piped to
	// bash); PowerShell the same for Windows. Both only while access is open.
	Command    string `json:"command,omitempty"`
	PowerShell string `json:"powershell,omitempty"`
	// CommandExpiresAt is when Command and PowerShell stop working (a few
	// minutes after they were shown; a fresh look gives fresh ones).
	CommandExpiresAt *time.Time `json:"command_expires_at,omitempty"`
	// ExpiresAt is when access ends at the latest; ExpiresBecause says
	// which rule sets it.
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	ExpiresBecause string     `json:"expires_because,omitempty"`
	ClosedReason   string     `json:"closed_reason,omitempty"`
	Connections    int        `json:"connections"`
	// Sessions are the open connections through the gateway.
	Sessions []SSHSession `json:"sessions"`
}

// SSHSession is one open connection to a build's machine.
type SSHSession struct {
	Remote string    `json:"remote"` // the client's address
	Client string    `json:"client"` // its SSH version, e.g. "OpenSSH_9.2p1 Debian-2"
	User   string    `json:"user,omitempty"`
	Since  time.Time `json:"since"`
}

// Event is something recorded about a build (SSH script fetches,
// connections, channels, logins).
type Event struct {
	Time time.Time         `json:"time"`
	Kind string            `json:"kind"`
	Data map[string]string `json:"data,omitempty"`
}

// Step is one step of a build.
type Step struct {
	Name       string     `json:"name"`
	Status     StepStatus `json:"status"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	// Reason says why a skipped step was skipped by its when (empty for
	// steps skipped because the build ended before them).
	Reason string `json:"reason,omitempty"`
	// Kind is empty for the workflow's scripts, else what the step is:
	// KindCacheRestore, KindArtifacts, KindPublishing (a
	// publishing.scripts entry), KindCacheSave.
	Kind string `json:"kind,omitempty"`
}

// LogLine is one line of a step's output.
type LogLine struct {
	Seq  int64     `json:"seq"`
	Step int       `json:"step"`
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// LogChunk is consecutive lines of one step's log, as stored: Data holds
// Lines lines, each ended by "\n", the first of which is line Seq; with
// an Encoding, Data holds them encoded.
type LogChunk struct {
	Seq   int64
	Lines int
	Step  int
	Time  time.Time
	Data  []byte
	// Encoding is "" (Data holds the lines as they are) or LogS2.
	Encoding string
}

// LogS2 is the Encoding of a LogChunk whose Data is one S2 block
// (github.com/klauspost/compress/s2, s2.Encode) of its lines. The builder
// compresses a step's output so, the link carries it so, and the store
// keeps it so: nothing on the way decompresses and compresses it again.
const LogS2 = "s2"

// Spec is what the runner needs to run a build, fixed when it is created
// (so later changes to the repository's workflow file do not alter it).
type Spec struct {
	Repo string `json:"repo"`
	// Env are built-in variables fixed when the build is created
	// (CM_PULL_REQUEST, CM_TAG, ...), KEY=VALUE, set before Vars.
	Env     []string     `json:"env,omitempty"`
	Vars    []string     `json:"vars"` // KEY=VALUE, the workflow's environment.vars, expanded by the builder
	Scripts []SpecScript `json:"scripts"`
	Ignored []string     `json:"ignored,omitempty"` // workflow sections Hangar does not run
	// InstanceType is the workflow's instance_type (DefaultInstanceType if
	// it names none) and Resources its limits on this server when the
	// build was created. Builds stored before instance types have neither.
	InstanceType string    `json:"instance_type,omitempty"`
	Resources    Resources `json:"resources"`
	// Event is the part of the webhook's payload that the steps'
	// conditions read; empty for a build started by hand.
	Event json.RawMessage `json:"event,omitempty"`
	// Inputs are the build's input values (string, number or boolean).
	Inputs map[string]any `json:"inputs,omitempty"`
	// Toolchains are the versions the workflow's environment asks for
	// (java, node, python: version as written), checked against the
	// labels of the instance type's image when the build starts.
	Toolchains map[string]string `json:"toolchains,omitempty"`
	// BreakBefore are the scripts (1: the first) the build pauses before,
	// with SSH open, until it is continued.
	BreakBefore []int `json:"break_before,omitempty"`
	// SSHOnFailure: SSH access opens only if a step fails (the build's
	// SSH.Enabled turns true then); a passing build never gets a
	// credential.
	SSHOnFailure bool `json:"ssh_on_failure,omitempty"`
	// Groups are the environment variable groups of the workflow's
	// environment.groups and Keystores the references of its
	// android_signing: names only; the runner opens them when the build
	// starts.
	Groups    []string `json:"groups,omitempty"`
	Keystores []string `json:"keystores,omitempty"`
	// Artifacts are the workflow's artifacts patterns, CachePaths its
	// cache.cache_paths, Publish its publishing.scripts and Email its
	// publishing.email (see Plan).
	Artifacts  []string     `json:"artifacts,omitempty"`
	CachePaths []string     `json:"cache_paths,omitempty"`
	Publish    []SpecScript `json:"publish,omitempty"`
	Email      *Email       `json:"email,omitempty"`
}

// SpecScript is one script of a Spec.
type SpecScript struct {
	Name             string `json:"name"`
	File             string `json:"file"` // kept in the machine as ~/.hangar/steps/File
	Script           string `json:"script"`
	IgnoreFailure    bool   `json:"ignore_failure,omitempty"`
	WorkingDirectory string `json:"working_directory,omitempty"`
	// Skip is why the step is skipped (its when.changeset found no
	// change); empty: it runs unless Condition is false.
	Skip string `json:"skip,omitempty"`
	// Condition is the step's when.condition, evaluated before the step.
	Condition string `json:"condition,omitempty"`
}

// NewSteps returns the steps of a build that runs scripts, all pending.
func NewSteps(scripts []SpecScript) []Step {
	steps := []Step{{Name: StepPrepare, Status: StepPending}, {Name: StepFetch, Status: StepPending}}
	for _, s := range scripts {
		steps = append(steps, Step{Name: s.Name, Status: StepPending})
	}
	return steps
}

// ShownStatus is b's status as users see it: WaitingForSSH for a building
// SSH build whose steps are done and whose access is still open.
func (b *Build) ShownStatus() Status {
	if b.Status != Building || !b.SSH.Enabled || b.SSH.State == SSHClosed || len(b.Steps) == 0 {
		return b.Status
	}
	for _, s := range b.Steps {
		switch s.Status {
		case StepPending, StepRunning, StepPaused:
			return b.Status
		}
	}
	return WaitingForSSH
}

// Name is how users call b: its app and its number in that app, as in
// "myapp #2" (the id, global, is for the API and `hangar build ... ID`).
func (b *Build) Name() string { return fmt.Sprintf("%s #%d", b.App, b.Number) }
