package runner

import (
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
)

// TestBuilderLearnsExpiry: the job names the build and carries the end of
// access; the builder is told each time the end moves (the steps are done,
// an extension), for its login banner.
func TestBuilderLearnsExpiry(t *testing.T) {
	e := newEnv(t, sshBuilder(nil))
	b := e.queue(true, 30*time.Minute)
	fb := <-e.driver.started
	b = e.wait(b.ID, "the SSH window", inWindow)
	if j := fb.job.Build; j == nil || j.ID != b.ID || j.Name != b.Name() || j.Workflow != "w" || j.WorkflowName != "W" {
		t.Errorf("job's build: %+v, want build %d %q", j, b.ID, b.Name())
	}
	deadline := b.StartedAt.Add(30 * time.Minute)
	if s := fb.job.SSH; s.ExpiresAt == nil || !s.ExpiresAt.Equal(deadline) || s.ExpiresBecause != "max_build_duration" {
		t.Errorf("job's expiry: %v %q, want %v max_build_duration", s.ExpiresAt, s.ExpiresBecause, deadline)
	}
	told := func(because string, at time.Time) {
		t.Helper()
		c := fb.waitCommand(t, link.SSHExpiry, because)
		if c.Text != because || c.ExpiresAt == nil || !c.ExpiresAt.Equal(at) {
			t.Errorf("%s: %+v, want %v", because, c, at)
		}
	}
	told("20m0s after the steps completed", *b.SSH.ExpiresAt)
	if err := e.r.Extend(b.ID, 5*time.Minute, "ann"); err != nil {
		t.Fatal(err)
	}
	end := b.SSH.ExpiresAt.Add(5 * time.Minute)
	e.wait(b.ID, "the extension", func(b *build.Build) bool { return b.SSH.ExpiresAt != nil && b.SSH.ExpiresAt.Equal(end) })
	told("extended by ann", end)
	n := 0
	for _, c := range fb.commandsSoFar() {
		if c.Type == link.SSHExpiry {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d SSHExpiry commands, want 2 (one per move): %v", n, fb.commandsSoFar())
	}
	e.cancel(b.ID)
	e.ended(b.ID)
}
