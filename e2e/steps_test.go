package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestSSHBreakpointsAndSteps: a build paused before two steps, resumed once
// through the API and once with hangar-steps in the machine; then its
// failed step is run again with hangar-steps, with the variables an
// earlier step exported and its working directory, and gives the same
// output and exit code.
func TestSSHBreakpointsAndSteps(t *testing.T) {
	f := newSSHFixture(t, "hgstep0", "10.213.84.0/24", "10m")
	// --ssh-break-before implies --ssh.
	b := f.start("--workflow debug --ssh-break-before 1 --ssh-break-before Breaks")
	if !b.SSH.Enabled {
		t.Fatalf("a build with a breakpoint has no SSH: %+v", b.SSH)
	}
	waitLog(t, f.fixture, b.ID, "paused before step 1 (Export)")
	if got := f.show(b.ID).Steps[2].Status; got != build.StepPaused {
		t.Fatalf("step Export is %s while the build waits before it", got)
	}
	if r := f.hangar(fmt.Sprintf("build continue %d", b.ID)); r.Code != 0 {
		t.Fatalf("build continue: %s", r.Stderr)
	}
	waitLog(t, f.fixture, b.ID, "paused before step 2 (Breaks)")
	f.waitSSH(b.ID)
	script := f.script(b.ID)

	r := f.run("bash", script, "hangar-steps")
	if r.Code != 0 || !strings.Contains(r.Stdout, "paused before step 2") || !regexp.MustCompile(`1\s+Export\s+success\s+0`).MatchString(r.Stdout) {
		t.Errorf("hangar-steps list: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// A login shell finds it too (its /etc/profile sets its own PATH).
	if r := f.run("bash", script, "bash -lc 'command -v hangar-steps'"); r.Code != 0 {
		t.Errorf("a login shell has no hangar-steps: %s %s", r.Stdout, r.Stderr)
	}
	if r := f.run("bash", script, "hangar-steps", "continue"); r.Code != 0 || !strings.Contains(r.Stdout, "step 2 (Breaks)") {
		t.Fatalf("hangar-steps continue: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	waitLog(t, f.fixture, b.ID, "hangar: resumed by hangar-steps continue")
	waitLog(t, f.fixture, b.ID, "var=from-step-one dir=sub")
	if r := f.run("bash", script, "hangar-steps", "continue"); r.Code != 1 || !strings.Contains(r.Stderr, "not paused") {
		t.Errorf("hangar-steps continue when not paused: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}

	// The failed step, again, as the build ran it.
	r = f.run("bash", script, "hangar-steps", "run", "2")
	if r.Code != 3 || r.Stdout != "var=from-step-one dir=sub\n" {
		t.Errorf("hangar-steps run 2: exit %d, stdout %q, stderr %q; want 3, the step's own output", r.Code, r.Stdout, r.Stderr)
	}
	if r := f.run("bash", script, "hangar-steps", "env", "Breaks"); !strings.Contains(r.Stdout, "E2E_STEP_VAR=from-step-one\n") {
		t.Errorf("hangar-steps env Breaks: %s %s", r.Stdout, r.Stderr)
	}
	if r := f.run("bash", script, "hangar-steps", "run", "9"); r.Code != 2 || !strings.Contains(r.Stderr, "numbered 1 to 2") {
		t.Errorf("hangar-steps run 9: %d %s", r.Code, r.Stderr)
	}
	got := f.show(b.ID)
	if s := got.Steps[3]; s.Status != build.StepFailed || s.ExitCode == nil || *s.ExitCode != 3 {
		t.Errorf("step Breaks: %+v", s)
	}
	logs := f.hangar(fmt.Sprintf("build logs %d", b.ID)).Stdout
	if !strings.Contains(logs, "resumed by admin (API)") {
		t.Errorf("the log does not say who resumed the first pause:\n%s", logs)
	}
	f.hangar(fmt.Sprintf("build cancel %d", b.ID))
	f.wait(b.ID, 2*time.Minute)

	// A failed build without SSH, rerun with SSH: the same commit and
	// workflow, linked both ways, and a machine to debug it in.
	plain := f.start("--workflow debug")
	if got, _ := f.wait(plain.ID, 2*time.Minute); got.Status != build.Failed {
		t.Fatalf("the plain build: %s %q", got.Status, got.Message)
	}
	r = f.hangar(fmt.Sprintf("build rerun %d --ssh --json", plain.ID))
	var re build.Build
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &re) != nil {
		t.Fatalf("build rerun --ssh: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if re.RerunOf == nil || *re.RerunOf != plain.ID || re.Commit != plain.Commit || re.Workflow != "debug" || !re.SSH.Enabled {
		t.Errorf("the rerun: %+v", re)
	}
	if orig := f.show(plain.ID); len(orig.Reruns) != 1 || orig.Reruns[0] != re.ID {
		t.Errorf("the failed build does not link to its rerun: %v", orig.Reruns)
	}
	f.waitSSH(re.ID)
	waitLog(t, f.fixture, re.ID, "var=from-step-one dir=sub")
	if r := f.run("bash", f.script(re.ID), "hangar-steps", "run", "Breaks"); r.Code != 3 || r.Stdout != "var=from-step-one dir=sub\n" {
		t.Errorf("hangar-steps run in the rerun: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	f.hangar(fmt.Sprintf("build cancel %d", re.ID))
	f.wait(re.ID, 2*time.Minute)
}

// TestSSHOnFailure: with --ssh=on-failure a passing build finishes at once
// and never gets a credential; a failing one opens SSH after the failure,
// where the failed step can be run again.
func TestSSHOnFailure(t *testing.T) {
	f := newSSHFixture(t, "hgstep1", "10.213.83.0/24", "10m")
	pass := f.start("--workflow quick --ssh=on-failure")
	got, _ := f.wait(pass.ID, 2*time.Minute)
	if got.Status != build.Finished || got.SSH.Enabled || got.SSH.Mode != build.SSHOnFailure {
		t.Errorf("a passing on-failure build: %s, ssh %+v", got.Status, got.SSH)
	}
	if r := f.hangar(fmt.Sprintf("build show %d", pass.ID)); !strings.Contains(r.Stdout, "SSH:      on failure: not opened (no step failed)") {
		t.Errorf("build show of a passing on-failure build:\n%s%s", r.Stdout, r.Stderr)
	}
	if r := f.hangar(fmt.Sprintf("build ssh-script %d", pass.ID)); r.Code == 0 {
		t.Errorf("a passing on-failure build has a script:\n%s", r.Stdout)
	}
	fail := f.start("--workflow debug --ssh=on-failure")
	if fail.SSH.Enabled || fail.SSH.Mode != build.SSHOnFailure {
		t.Errorf("before any failure: %+v, want SSH off and mode on-failure", fail.SSH)
	}
	f.waitSSH(fail.ID)
	waitLog(t, f.fixture, fail.ID, "hangar: a step failed: SSH access opens for you to debug it")
	if b := f.show(fail.ID); b.Status != build.WaitingForSSH || b.Steps[3].Status != build.StepFailed || !b.SSH.Enabled || b.SSH.Mode != build.SSHOnFailure {
		t.Errorf("after the failure: %s, step %s, ssh %+v", b.Status, b.Steps[3].Status, b.SSH)
	}
	if r := f.run("bash", f.script(fail.ID), "hangar-steps", "run", "2"); r.Code != 3 || r.Stdout != "var=from-step-one dir=sub\n" {
		t.Errorf("hangar-steps run 2: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	f.hangar(fmt.Sprintf("build cancel %d", fail.ID))
	if b, _ := f.wait(fail.ID, 2*time.Minute); b.Status != build.Canceled {
		t.Errorf("after cancel: %s", b.Status)
	}
}
