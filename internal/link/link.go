// Package link is the protocol between a runner and the builder inside a
// machine.
//
// # Transport
//
// The machine has no inbound route, so the builder dials out. The runner
// writes a Hello (one JSON line) to the builder's standard input: the link
// address, the runner's host key and a private key made for this build only.
// The builder dials the address over TCP and opens an SSH connection as user
// Hello.Name (e.g. "build-12"), authenticating with that key and accepting
// only that host key. The server admits a connection only for a name it is
// expecting, with exactly the key it expects for that name.
//
// The builder then opens one channel of type ControlChannel. On it each side
// writes JSON messages, one per line: the runner sends one Job; the builder
// answers with Events (step_start, output, step_end, ssh, done). Output
// events, the bulk of what a builder sends, travel as binary frames on the
// same channel instead (so that they keep their order with the rest): the
// byte OutputFrame (or OutputS2Frame), the step and the length of the data
// as uvarints, then the data. The SSH connection is
// the one link between them: later features (the reverse SSH tunnel for the
// build, session events) are further channels and requests on it.
//
// # Lifecycle
//
// The runner owns the machine: it ends a build by destroying the machine,
// which ends the builder and the link. After sending done the builder keeps
// the link open and waits; it exits when the link closes. If the builder exits
// or the link drops before done, the build fails.
package link

import (
	"bytes"
	"encoding/json"
	"time"
)

// ControlChannel is the SSH channel type that carries Job and Events.
const ControlChannel = "hangar-control"

// Hello is what the runner writes to the builder's standard input.
type Hello struct {
	Name    string `json:"name"`     // SSH user and build alias, e.g. "build-12"
	Addr    string `json:"addr"`     // host:port of the link server
	HostKey string `json:"host_key"` // the link server's host key, authorized_keys format
	Key     string `json:"key"`      // the builder's private key, OpenSSH PEM (a secret)
	// SSHHostKey is the host key the builder's SSH server presents to users
	// of an SSH build (OpenSSH PEM, a secret); empty for other builds.
	SSHHostKey string `json:"ssh_host_key,omitempty"`
	// Gateway, if set, is the address of the SSH gateways (several behind
	// one address): the builder opens its SSH tunnel there instead of on
	// Addr, logging in as its alias with SSHHostKey, and accepts a
	// gateway whose host certificate GatewayCA signed (authorized_keys
	// format). A builder whose gateway goes away dials the address again
	// and reaches another.
	Gateway   string `json:"gateway,omitempty"`
	GatewayCA string `json:"gateway_ca,omitempty"`
}

// Job is what the builder must do.
type Job struct {
	// Repo is the repository to clone, as a path or URL the builder can reach.
	Repo string `json:"repo"`
	// Origin is the URL set as the clone's origin remote afterwards,
	// without credentials (gitrepo.StripCredentials).
	Origin string `json:"origin"`
	Branch string `json:"branch"`
	Commit string `json:"commit"`
	// Env is the environment of every step (KEY=VALUE), before CM_ENV
	// exports: the built-in variables (and the groups' after them).
	Env []string `json:"env"`
	// Vars are the workflow's environment.vars (KEY=VALUE) in file order,
	// set after Env: the builder expands $NAME and ${NAME} in each value
	// (workflow.Expand) against the variables set before it.
	Vars []string `json:"vars,omitempty"`
	// Event is the part of the webhook's payload that the steps'
	// conditions read (a JSON object); empty for a build started by hand.
	Event json.RawMessage `json:"event,omitempty"`
	// Inputs are the build's input values, for the steps' conditions.
	Inputs map[string]any `json:"inputs,omitempty"`
	// Steps are run in order; step 0 is always the clone.
	Steps []Step `json:"steps"`
	// SSH, for an SSH build, says whom the builder's SSH server admits.
	SSH *JobSSH `json:"ssh,omitempty"`
	// MaxOutput is how many bytes of output the runner keeps at most; the
	// builder sends no more (0: no limit). The runner enforces it anyway.
	MaxOutput int64 `json:"max_output,omitempty"`
	// Secure are the values the builder hides in the steps' output (as
	// mask.Replacement) and in what it reports: the environment variable
	// groups' values and the keystores' passwords. Secrets.
	Secure []string `json:"secure,omitempty"`
	// Keystores are the Android keystores of environment.android_signing:
	// the builder writes each into the build's home and exports the
	// first's path and passwords as Codemagic does (CM_KEYSTORE_PATH,
	// CM_KEYSTORE_PASSWORD, CM_KEY_ALIAS, CM_KEY_PASSWORD), before Env.
	Keystores []Keystore `json:"keystores,omitempty"`
	// BreakBefore are the steps (indexes of Steps, past the clone) the
	// builder pauses before: it sends Paused, waits for Continue (or
	// `hangar-steps continue` in the machine), then sends Resumed.
	BreakBefore []int `json:"break_before,omitempty"`
	// Build names the build for people in the machine (the SSH login
	// banner); nil from runners that predate it.
	Build *JobBuild `json:"build,omitempty"`
	// Artifacts are the workflow's artifacts patterns and CachePaths its
	// cache.cache_paths, for the steps of those kinds (see Step.Kind);
	// Limits are the server's bounds on what the builder uploads (see
	// FileChannel).
	Artifacts  []string    `json:"artifacts,omitempty"`
	CachePaths []string    `json:"cache_paths,omitempty"`
	Limits     *FileLimits `json:"limits,omitempty"`
}

// JobBuild is how people call the build: for the SSH login banner.
type JobBuild struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"` // "myapp #2"
	Workflow     string `json:"workflow"`
	WorkflowName string `json:"workflow_name,omitempty"`
}

// Keystore is an Android keystore of a Job (secrets: the file and its
// passwords).
type Keystore struct {
	Ref         string `json:"ref"`
	File        []byte `json:"file"`
	Password    string `json:"password"`
	Alias       string `json:"alias"`
	KeyPassword string `json:"key_password"`
}

// FileLimits are the server's bounds on uploads, in bytes.
type FileLimits struct {
	ArtifactFile  int64 `json:"artifact_file"`
	ArtifactBuild int64 `json:"artifact_build"`
	Cache         int64 `json:"cache"`
}

// JobSSH configures an SSH build's access. The builder opens a second
// connection to the link address (its tunnel), asks for a reverse forward
// of Alias port 22 ("tcpip-forward"), and serves SSH on every
// "forwarded-tcpip" channel it gets, admitting user "builder" with a
// certificate of UserCA for principal Alias, or exactly UserKey.
type JobSSH struct {
	Alias   string `json:"alias"`
	UserCA  string `json:"user_ca"`  // authorized_keys format
	UserKey string `json:"user_key"` // authorized_keys format
	// ExpiresAt is when access ends at the latest as the job is sent, and
	// ExpiresBecause which rule sets it (build.SSH's fields); SSHExpiry
	// commands bring later changes. For the login banner.
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	ExpiresBecause string     `json:"expires_because,omitempty"`
}

// Command types sent by the runner after the Job.
const (
	// SSHNotice asks the builder to show Text in every login session.
	SSHNotice = "ssh_notice"
	// SSHClose revokes SSH access: show Text, close every session and the
	// tunnel, admit no one again. The builder then answers with an SSH
	// event of Kind SSHRevoked; the runner waits for it (bounded) before it
	// destroys the machine.
	SSHClose = "ssh_close"
	// Continue resumes a build paused at a breakpoint; Text says who asked.
	Continue = "continue"
	// SSHOpen opens SSH access late (a build with SSH on failure whose
	// step failed), as Job.SSH does at the start: SSH says whom to admit;
	// the host key came in Hello.SSHHostKey.
	SSHOpen = "ssh_open"
	// SSHExpiry tells the builder that the end of access has moved (the
	// steps completed, an extension): ExpiresAt, Text the rule. For the
	// login banner; the runner enforces the end itself.
	SSHExpiry = "ssh_expiry"
)

// SSHRevoked is the Kind of the SSH event that answers SSHClose.
const SSHRevoked = "revoked"

// Command is a message from the runner after the Job.
type Command struct {
	Type      string     `json:"type"`
	Text      string     `json:"text,omitempty"`
	SSH       *JobSSH    `json:"ssh,omitempty"`        // SSHOpen
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // SSHExpiry
}

// Step is one step of a Job.
type Step struct {
	Name             string `json:"name"`
	File             string `json:"file,omitempty"` // the script's file name in ~/.hangar/steps
	Script           string `json:"script,omitempty"`
	IgnoreFailure    bool   `json:"ignore_failure,omitempty"`
	WorkingDirectory string `json:"working_directory,omitempty"`
	// Skip, when set, is why the step is skipped without running (its
	// when.changeset, decided by the server).
	Skip string `json:"skip,omitempty"`
	// Condition is the step's when.condition (workflow.ParseCondition),
	// evaluated by the builder just before the step with the step's
	// environment: false skips the step.
	Condition string `json:"condition,omitempty"`
	// Kind is empty for a workflow script, else the build.Kind* of one of
	// Hangar's steps: restore or save the cache, upload the artifacts, or
	// a publishing script (run with CM_ARTIFACT_LINKS). Artifacts and
	// publishing steps run also after a failed step; the cache is saved
	// only when no step failed.
	Kind string `json:"kind,omitempty"`
}

// Event types sent by the builder.
//
// Output carries bytes a step wrote, in order, cut anywhere (not at line
// boundaries). A step's step_end comes after every byte that the step and
// the processes it started wrote before it exited; a process that outlives
// its step may send further output of that step later.
const (
	StepStart = "step_start"
	Output    = "output"
	StepEnd   = "step_end"
	// StepSkipped: the step did not run; Text says why. It comes instead
	// of the step's step_start and step_end.
	StepSkipped = "step_skipped"
	Done        = "done"
	// Paused: the build waits before Step (a breakpoint); Resumed: it goes
	// on, Text says who resumed it.
	Paused  = "paused"
	Resumed = "resumed"
	// SSH events: Kind is "tunnel_up", "tunnel_down", "login_start",
	// "login_end", "connect", "disconnect" or "channel"; Text the detail.
	SSH = "ssh"
)

// OutputFrame starts an output frame on the control channel (a JSON
// message starts with '{').
const OutputFrame = 0x01

// OutputS2Frame starts an output frame whose data is one S2 block
// (github.com/klauspost/compress/s2, s2.Encode; Event.S2). The builder
// sends a verbose step's output so, in blocks of whole lines, and the link
// carries a quarter of the bytes; the runner stores such a block as it
// came (build.LogS2) once it has checked what it decodes to. MaxMessage
// bounds the block and what it decodes to.
const OutputS2Frame = 0x02

// Event is a message from the builder. Step indexes Job.Steps.
type Event struct {
	Type string    `json:"type"`
	Step int       `json:"step"`
	Time time.Time `json:"time"`
	Data []byte    `json:"data,omitempty"` // output
	// S2, in an output event, is the output compressed as one S2 block,
	// as it travels (OutputS2Frame); nil for output sent as it is. The
	// builder sets Data too. On the runner's side Recv checks the block:
	// when it decodes to lines that need no work (WholeLines), Lines is
	// their number, Size their length and Data nil; else Data is what
	// the block decodes to.
	S2       []byte `json:"-"`
	Lines    int    `json:"-"`
	Size     int    `json:"-"`
	Text     string `json:"text,omitempty"`      // ssh: the detail
	ExitCode int    `json:"exit_code,omitempty"` // step_end
	Failed   bool   `json:"failed,omitempty"`    // step_end, done
	Error    string `json:"error,omitempty"`     // step_end, done: why, for the build log
	Kind     string `json:"kind,omitempty"`      // ssh
	Conn     uint64 `json:"conn,omitempty"`      // ssh: the session's connection
}

// MaxLine is the longest log line kept; longer lines are split.
const MaxLine = 16 << 10

// WholeLines is the number of lines in data if it is lines that a log
// keeps as they are: each ended by "\n", none longer than MaxLine, no
// "\r"; else 0.
func WholeLines(data []byte) int {
	if len(data) == 0 || data[len(data)-1] != '\n' || bytes.IndexByte(data, '\r') >= 0 || HasLineOver(data, MaxLine) {
		return 0
	}
	return bytes.Count(data, []byte{'\n'})
}

// HasLineOver reports whether a line in data is longer than n bytes. It
// looks at the end of each n+1 bytes, not at every line: a window of n+1
// bytes starting a line must hold a '\n', and the last one is near its end
// when lines are short.
func HasLineOver(data []byte, n int) bool {
	for len(data) > n {
		i := bytes.LastIndexByte(data[:n+1], '\n')
		if i < 0 {
			return true
		}
		data = data[i+1:]
	}
	return false
}
