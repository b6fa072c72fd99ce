package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

const bannerWorkflows = `
workflows:
  banner:
    name: Banner test
    max_build_duration: 10
    scripts:
      - name: First
        script: echo first
      - name: Second
        script: echo second
`

// TestSSHLoginBanner: a login shell through the generated script and the
// real OpenSSH client (on a terminal) starts with the banner: the build's
// name, id, workflow and branch, when and how access ends, the pause at a
// breakpoint and how to resume it, and hangar-steps. After the steps and
// an extension, a new login shell's banner says the new end and its rule.
// A command gets no banner.
func TestSSHLoginBanner(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script (util-linux)")
	}
	f := newHostSSHFixtureWith(t, "5m", bannerWorkflows)
	b := f.start("--workflow banner --ssh-break-before Second")
	t.Cleanup(func() { f.hangar(fmt.Sprintf("build cancel %d", b.ID)) })
	waitLog(t, f.fixture, b.ID, "paused before step 2 (Second)")
	f.waitSSH(b.ID)
	script := f.script(b.ID)

	if r := f.run("bash", script, "echo", "plain"); r.Code != 0 || r.Stdout != "plain\n" {
		t.Errorf("a command: %d %q %q, want its output alone", r.Code, r.Stdout, r.Stderr)
	}

	flat := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	has := func(what, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if re := regexp.MustCompile(w); !re.MatchString(flat(out)) {
				t.Errorf("%s lacks %q:\n%s", what, w, out)
			}
		}
	}
	first := startLive(t, f, "script", "-qfec", "bash "+script, "/dev/null")
	first.typeLine("echo shell-$((6*7))")
	first.waitOut("shell-42")
	before := first.out.String()
	if i, j := strings.Index(before, "Hangar: "), strings.Index(before, "shell-42"); i < 0 || i > j {
		t.Fatalf("no banner before the shell's output:\n%s", before)
	}
	has("the first banner", before,
		regexp.QuoteMeta(fmt.Sprintf("Hangar: demo #%d (build %d), workflow Banner test (banner), branch main at ", b.Number, b.ID)),
		`SSH access ends at \d\d:\d\d UTC \(in (9|10) min: the build's max_build_duration\) at the latest, or when the build ends; the machine is then destroyed`,
		regexp.QuoteMeta("The build is PAUSED before step 2 (Second), a breakpoint: `hangar-steps continue` resumes it"),
		regexp.QuoteMeta("`hangar-steps` lists the steps"),
		regexp.QuoteMeta(fmt.Sprintf("`hangar build ssh-extend %d --by 10m`", b.ID)))

	first.typeLine("hangar-steps continue")
	first.waitOut("step 2 (Second)")
	deadline := time.Now().Add(time.Minute)
	for f.show(b.ID).Status != build.WaitingForSSH {
		if time.Now().After(deadline) {
			t.Fatalf("the build does not wait for SSH after its steps: %s", f.show(b.ID).Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	window := *f.show(b.ID).SSH.ExpiresAt
	if r := f.hangar(fmt.Sprintf("build ssh-extend %d --by 2m", b.ID)); r.Code != 0 {
		t.Fatalf("ssh-extend: %s", r.Stderr)
	}
	extended := f.show(b.ID).SSH
	if extended.ExpiresAt == nil || !extended.ExpiresAt.Equal(window.Add(2*time.Minute)) {
		t.Fatalf("after the extension: %+v, want %s", extended, window.Add(2*time.Minute))
	}
	// The first shell is attached: this login gets a new one, and a new
	// banner.
	second := startLive(t, f, "script", "-qfec", "bash "+script, "/dev/null")
	second.typeLine("echo second-$((6*8))")
	second.waitOut("second-48")
	has("the banner after the steps and an extension", second.out.String(),
		regexp.QuoteMeta(fmt.Sprintf("SSH access ends at %s UTC (in ", extended.ExpiresAt.UTC().Format("15:04")))+`\d+ min: extended by admin\), or when the build ends`,
		regexp.QuoteMeta("The steps are done: logging out of the last shell finishes the build."))
	if strings.Contains(flat(second.out.String()), "PAUSED") {
		t.Errorf("the banner after the steps says the build is paused:\n%s", second.out.String())
	}
}
