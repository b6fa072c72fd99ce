package builder

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/link"
)

// banner is what a new login shell of an SSH build shows first (sshd's
// Server.Banner): the build, how access ends, a pause at a breakpoint, and
// hangar-steps. The runner sends the end of access with the job and each
// time it moves (link.SSHExpiry).
type banner struct {
	build  *link.JobBuild // nil from runners that predate it
	alias  string         // "build-12"
	branch string
	commit string

	mu        sync.Mutex
	expires   time.Time // guarded by mu: when access ends at the latest (zero: unknown)
	because   string    // guarded by mu: the rule that sets expires
	stepsDone bool      // guarded by mu: every step has run
}

func newBanner(job *link.Job, alias string) *banner {
	return &banner{build: job.Build, alias: alias, branch: job.Branch, commit: job.Commit}
}

// setExpiry records the end of access.
func (b *banner) setExpiry(at *time.Time, because string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expires, b.because = time.Time{}, because
	if at != nil {
		b.expires = *at
	}
}

// done records that the steps have all run.
func (b *banner) done() {
	b.mu.Lock()
	b.stepsDone = true
	b.mu.Unlock()
}

// paused is a pause at a breakpoint: before step Step (hangar-steps'
// number), named Name.
type paused struct {
	Step int
	Name string
}

// text is the banner at now; p is the pause the build is in, if any.
func (b *banner) text(now time.Time, p *paused) string {
	b.mu.Lock()
	expires, because, stepsDone := b.expires, b.because, b.stepsDone
	b.mu.Unlock()

	var lines []string
	name, id := b.alias, ""
	if b.build != nil {
		name, id = b.build.Name, fmt.Sprintf(" (build %d)", b.build.ID)
	}
	head := "Hangar: " + name + id
	if b.build != nil && b.build.Workflow != "" {
		wf := b.build.Workflow
		if n := b.build.WorkflowName; n != "" && n != wf {
			wf = n + " (" + wf + ")"
		}
		head += ", workflow " + wf
	}
	if b.branch != "" {
		head += ", branch " + b.branch + " at " + short(b.commit)
	}
	lines = append(lines, head+".")

	ends := "SSH access ends when the build ends"
	if !expires.IsZero() {
		rule := because
		if rule == "max_build_duration" || rule == "" {
			rule = "the build's max_build_duration"
		}
		ends = fmt.Sprintf("SSH access ends at %s UTC (%s: %s)", expires.UTC().Format("15:04"), in(expires.Sub(now)), rule)
		if !stepsDone {
			ends += " at the latest"
		}
		ends += ", or when the build ends"
	}
	lines = append(lines, ends+"; the machine is then destroyed, with everything on it.")
	switch {
	case p != nil:
		lines = append(lines, fmt.Sprintf("The build is PAUSED before step %d (%s), a breakpoint: `hangar-steps continue` resumes it (or Continue on the build's page).", p.Step, p.Name),
			"Logging out of the last shell ends SSH access.")
	case stepsDone:
		lines = append(lines, "The steps are done: logging out of the last shell finishes the build.")
	default:
		lines = append(lines, "The steps are running; the machine waits for you a while after them. Logging out of the last shell ends SSH access.")
	}
	lines = append(lines, "`hangar-steps` lists the steps; `hangar-steps run N` reruns step N as the build ran it; `hangar-steps env N` prints its environment.")
	if b.build != nil {
		lines = append(lines, fmt.Sprintf("More time: +10 min on the build's page, or `hangar build ssh-extend %d --by 10m`.", b.build.ID))
	}
	var out strings.Builder
	out.WriteString("\n")
	for _, l := range lines {
		out.WriteString(wrap(l, 78))
	}
	out.WriteString("\n")
	return out.String()
}

// in says how long d is from now, in words: "in 18 min".
func in(d time.Duration) string {
	switch {
	case d <= 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("in %d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %d min", int(d.Round(time.Minute).Minutes()))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("in %d h %d min", int(d.Hours()), int(d.Minutes())%60)
}

// wrap breaks s into lines of at most width columns, each ended by "\n".
// A `command` is not broken; a longer word or command gets a line of its
// own.
func wrap(s string, width int) string {
	var words []string
	open := false
	for _, w := range strings.Fields(s) {
		if open {
			words[len(words)-1] += " " + w
		} else {
			words = append(words, w)
		}
		if strings.Count(w, "`")%2 == 1 {
			open = !open
		}
	}
	var out strings.Builder
	n := 0
	for _, w := range words {
		if n > 0 && n+1+len(w) > width {
			out.WriteString("\n")
			n = 0
		}
		if n > 0 {
			out.WriteString(" ")
			n++
		}
		out.WriteString(w)
		n += len(w)
	}
	out.WriteString("\n")
	return out.String()
}
