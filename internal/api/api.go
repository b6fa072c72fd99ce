// Package api is Hangar's HTTP API as Go sees it: the request and response
// bodies of /api/v1, defined once for the server that encodes them and the
// clients that decode them, and Client, a typed client of the API (used by
// the CLI, the benchmark and the end-to-end tests).
//
// Builds, their log lines and events travel as the types of package build;
// docs/api.md describes the JSON.
package api

import (
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// Error is the body of every error answer, {"error": "..."}, and the error
// Client returns for one.
type Error struct {
	// Status is the answer's HTTP status (not sent in the body).
	Status int `json:"-"`
	// Message says what was wrong and what to do; it is meant for users.
	Message string `json:"error"`
	// Field, when set, is the request's field the error is about
	// ("workflow", "branch", "inputs", "ssh_break_before"), for forms that
	// point at it and word it their own way.
	Field string `json:"field,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// AppRequest is the body of POST /api/v1/apps.
type AppRequest struct {
	Name          string `json:"name"`
	Repo          string `json:"repo"`                     // a git URL or a path on the server
	WebhookSecret string `json:"webhook_secret,omitempty"` // empty: the server makes one
	// RefuseUnsupported: refuse to start builds of workflows that use keys
	// Hangar does not support (Workflow.Check.Unsupported).
	RefuseUnsupported bool `json:"refuse_unsupported,omitempty"`
}

// AppSettings is the body of PATCH /api/v1/apps/{name}: the settings to
// change (a missing field is left as it is).
type AppSettings struct {
	RefuseUnsupported *bool `json:"refuse_unsupported,omitempty"`
}

// App is an app as the API shows it.
type App struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	// Repo is the repository, with any password or token hidden.
	Repo       string    `json:"repo"`
	CreatedAt  time.Time `json:"created_at"`
	WebhookURL string    `json:"webhook_url"`
	// RefuseUnsupported: builds of workflows that use keys Hangar does not
	// support are refused at start.
	RefuseUnsupported bool `json:"refuse_unsupported"`
	// WebhookSecret is shown only in the answer that created the app.
	WebhookSecret string `json:"webhook_secret,omitempty"`
}

// Workflows is the answer of GET /api/v1/apps/{name}/workflows: the
// workflows of the workflow file at a branch's commit.
type Workflows struct {
	Branch    string     `json:"branch"`
	Commit    string     `json:"commit"`
	File      string     `json:"file"`
	Workflows []Workflow `json:"workflows"`
}

// Branches is the answer of GET /api/v1/apps/{name}/branches: the
// repository's branches as the server's mirror has them, the default branch
// first, then the most recently committed to.
type Branches struct {
	Default  string   `json:"default"`
	Branches []string `json:"branches"`
	// Truncated: the repository has more branches than the answer lists.
	Truncated bool `json:"truncated,omitempty"`
}

// Workflow is one workflow of a Workflows answer.
type Workflow struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	MaxDuration int64    `json:"max_build_duration_seconds"`
	Scripts     []string `json:"scripts"` // the scripts' names
	Events      []string `json:"events"`  // the events that trigger it
	// Inputs are the values a build of the workflow takes when it starts.
	Inputs []Input `json:"inputs"`
	// Check is what Hangar runs, honours and does not support of the
	// workflow (what `hangar workflow check` shows).
	Check workflow.Report `json:"check"`
}

// Input is one of a workflow's inputs, for a start form.
type Input struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
	// Type is "string", "number", "boolean" or "choice".
	Type string `json:"type"`
	// Default is the value when none is given (a string, number or
	// boolean); absent when a value is required.
	Default any      `json:"default,omitempty"`
	Options []string `json:"options,omitempty"` // a choice's values
}

// StartRequest is the body of POST /api/v1/builds. The answer is the
// queued build, a build.Build.
type StartRequest struct {
	App      string `json:"app"`
	Workflow string `json:"workflow,omitempty"` // empty: the file's only workflow
	Branch   string `json:"branch,omitempty"`   // empty: the repository's default branch
	// SSH asks for SSH access to the build's machine.
	SSH bool `json:"ssh,omitempty"`
	// SSHOnFailure asks for SSH access only if a step fails: a passing
	// build finishes at once and never gets a credential.
	SSHOnFailure bool `json:"ssh_on_failure,omitempty"`
	// SSHBreakBefore are steps (a script's number, 1 for the first, or its
	// name) the build pauses before, with SSH open, until it is continued
	// (POST /api/v1/builds/{id}/continue, or `hangar-steps continue` in the
	// machine). They need SSH.
	SSHBreakBefore []string `json:"ssh_break_before,omitempty"`
	// Trigger may only be "manual" (the default): builds started through
	// the API are manual. It exists to refuse SSH with anything else.
	Trigger string `json:"trigger,omitempty"`
	// Inputs are values for the workflow's inputs, by input id: strings,
	// numbers or booleans as the inputs' types say (strings such as "3" or
	// "true" are read as the type). Inputs left out take their defaults.
	Inputs map[string]any `json:"inputs,omitempty"`
}

// RerunRequest asks for a new build of the same commit, workflow and
// inputs as an ended one; SSH, for SSH access to it.
type RerunRequest struct {
	SSH bool `json:"ssh,omitempty"`
}

// ExtendRequest asks for more SSH time: By is a duration ("10m", "1h").
type ExtendRequest struct {
	By string `json:"by"`
}

// End is the data of the "end" event of a live log: the build has ended
// and every line was sent.
type End struct {
	Status build.Status `json:"status"`
}

// SSHAccess is the answer of GET /api/v1/builds/{id}/ssh/access: what
// `hangar build ssh-config` and `hangar ssh` write to connect.
type SSHAccess struct {
	Alias      string `json:"alias"`   // "build-12", the ssh host name
	Gateway    string `json:"gateway"` // host:port
	Key        string `json:"private_key"`
	Cert       string `json:"certificate"`
	KnownHosts string `json:"known_hosts"`
	// Config is an ssh_config with @DIR@ for the directory of the files.
	Config    string    `json:"config"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TerminalTicket is the answer of POST /api/v1/builds/{id}/terminal.
type TerminalTicket struct {
	// URL is the path of the single-use terminal WebSocket.
	URL string `json:"url"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name  string   `json:"name"`
	Apps  []string `json:"apps"`
	Admin bool     `json:"admin"`
	// NoSSH makes a token that may read and start builds but never gets
	// SSH access to them (no keys, scripts, one-line commands, terminals).
	NoSSH bool `json:"no_ssh,omitempty"`
}

// Token is the answer of POST /api/v1/tokens; Token is the secret, shown
// this once.
type Token struct {
	Name  string   `json:"name"`
	Token string   `json:"token"`
	Apps  []string `json:"apps"`
	Admin bool     `json:"admin"`
	NoSSH bool     `json:"no_ssh,omitempty"`
}

// Info is the answer of GET /api/v1/info: what the server offers.
type Info struct {
	Driver   string  `json:"driver"`
	Isolated bool    `json:"isolated"` // whether machines are isolated from the server
	SSH      SSHInfo `json:"ssh"`
	// HTTP says how the API is served: whether what crosses the network
	// (API tokens, the key in the one-line SSH command's script) is
	// protected.
	HTTP HTTPInfo `json:"http"`
}

// HTTPInfo is how the server's API is served.
type HTTPInfo struct {
	TLS      bool `json:"tls"`      // hangar serves HTTPS itself
	Loopback bool `json:"loopback"` // it listens on loopback addresses only
	// Warning is set when neither holds and --public-url is not https:
	// the one-line SSH command is then not safe to use across a network.
	Warning string `json:"warning,omitempty"`
}

// SSHInfo says whether the server offers SSH builds.
type SSHInfo struct {
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"` // why not
}

// WebhookResult is the answer of POST /api/v1/webhooks/{app} to a push
// or pull request: the builds it started and the workflows it matched but
// did not build (their when is false).
type WebhookResult struct {
	Builds  []*build.Build    `json:"builds"`
	Skipped []SkippedWorkflow `json:"skipped,omitempty"`
	Message string            `json:"message,omitempty"`
}

// SkippedWorkflow is a workflow a webhook event triggered but whose when
// was false.
type SkippedWorkflow struct {
	Workflow string `json:"workflow"`
	Reason   string `json:"reason"`
}
