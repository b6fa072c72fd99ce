package builder

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/link"
)

// stepsRun is a run of two script steps in a temporary home, as newRun
// makes it (steps run as ourselves), with its step book.
func newStepsRun(t *testing.T) (*run, *recorder) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HANGAR_HOME", home)
	rec := newRecorder()
	// A repository to clone (step 0), with one commit.
	src := filepath.Join(t.TempDir(), "src")
	for _, args := range [][]string{{"init", "-q", "-b", "main", src}, {"-C", src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	commit, err := exec.Command("git", "-C", src, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	job := &link.Job{Repo: filepath.Join(src, ".git"), Origin: "https://example.invalid/r.git", Branch: "main", Commit: strings.TrimSpace(string(commit)),
		Env: []string{"E2E_VAR=from-job"}, BreakBefore: []int{2}, Steps: []link.Step{
			{Name: "Fetching app sources"},
			{Name: "Export", File: "01-export.sh", Script: "echo EXPORTED=yes >> \"$CM_ENV\"\nmkdir -p sub"},
			{Name: "Fails", File: "02-fails.sh", WorkingDirectory: "sub", Script: "echo \"$E2E_VAR $EXPORTED $(basename \"$PWD\")\"\nexit 4"},
		}}
	r, err := newRun(Config{Home: home}, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send, r.out = rec.send, newOutbox(rec.send, 0)
	if r.steps, err = newStepBook(r, "build-7"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.steps.close)
	return r, rec
}

// steps runs hangar-steps with args and returns its exit status and output.
func steps(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := StepsMain(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHangarSteps(t *testing.T) {
	r, rec := newStepsRun(t)
	ctx := context.Background()
	if code, out, _ := steps("list"); code != 0 || !strings.Contains(out, "1     Export  pending") {
		t.Errorf("list before the build: %d\n%s", code, out)
	}
	// The build pauses before step 2 until hangar-steps continue.
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		if failed, reason := r.all(ctx); !failed || !strings.Contains(reason, "exit status 4") {
			t.Errorf("the build: failed %v, %q", failed, reason)
		}
	}()
	rec.waitFor(t, link.Paused)
	code, out, _ := steps()
	if code != 0 || !strings.Contains(out, "Export  success  0") || !strings.Contains(out, "paused before step 2") {
		t.Errorf("list while paused: %d\n%s", code, out)
	}
	if code, out, errOut := steps("continue"); code != 0 || !strings.Contains(out, "step 2 (Fails)") {
		t.Fatalf("continue: %d %q %q", code, out, errOut)
	}
	<-resumed
	if code, _, errOut := steps("continue"); code != 1 || !strings.Contains(errOut, "not paused") {
		t.Errorf("continue when not paused: %d %q", code, errOut)
	}
	// Step 2 again, as the build ran it.
	var out2, errOut2 bytes.Buffer
	if code := StepsMain([]string{"run", "Fails"}, strings.NewReader(""), &out2, &errOut2); code != 4 || out2.String() != "from-job yes sub\n" {
		t.Errorf("run Fails: exit %d, %q (stderr %q); want 4, the step's output", code, out2.String(), errOut2.String())
	}
	if _, out, _ := steps("env", "2"); !strings.Contains(out, "EXPORTED=yes\n") || !strings.Contains(out, "E2E_VAR=from-job\n") {
		t.Errorf("env 2:\n%s", out)
	}
	for _, bad := range [][]string{{"run", "3"}, {"run", "nope"}, {"env"}, {"frobnicate"}} {
		if code, _, errOut := steps(bad...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", bad, code, errOut)
		}
	}
	// The environment files are the user's alone.
	fi, err := os.Stat(filepath.Join(r.home, ".hangar", "steps", "02.env"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("02.env: %v %v", fi, err)
	}
}

func TestHangarStepsOutsideAMachine(t *testing.T) {
	t.Setenv("HANGAR_HOME", t.TempDir())
	if code, _, errOut := steps(); code != 2 || !strings.Contains(errOut, "inside a Hangar build machine") {
		t.Errorf("%d %q", code, errOut)
	}
	if code, _, errOut := steps("continue"); code != 2 || !strings.Contains(errOut, "cannot reach the builder") {
		t.Errorf("%d %q", code, errOut)
	}
}

// waitFor waits until an event of type typ has been sent.
func (r *recorder) waitFor(t *testing.T, typ string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		found := slices.ContainsFunc(r.events, func(ev link.Event) bool { return ev.Type == typ })
		r.mu.Unlock()
		if found {
			return
		}
		select {
		case <-r.wake:
		case <-deadline:
			t.Fatalf("no %s event", typ)
		}
	}
}
