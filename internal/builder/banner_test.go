package builder

import (
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/link"
)

func TestBannerText(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 16, 0, 0, time.UTC)
	job := &link.Job{Branch: "main", Commit: "0123456789abcdef", Build: &link.JobBuild{ID: 12, Name: "demo #3", Workflow: "demo", WorkflowName: "Demo"}}
	b := newBanner(job, "build-12")
	deadline := now.Add(58 * time.Minute)
	b.setExpiry(&deadline, "max_build_duration")
	flat := func(s string) string { return strings.Join(strings.Fields(s), " ") }

	running := flat(b.text(now, &paused{Step: 2, Name: "Run tests"}))
	for _, want := range []string{
		"Hangar: demo #3 (build 12), workflow Demo (demo), branch main at 0123456789.",
		"SSH access ends at 13:14 UTC (in 58 min: the build's max_build_duration) at the latest, or when the build ends; the machine is then destroyed",
		"The build is PAUSED before step 2 (Run tests), a breakpoint: `hangar-steps continue` resumes it",
		"`hangar-steps` lists the steps",
		"`hangar build ssh-extend 12 --by 10m`",
	} {
		if !strings.Contains(running, want) {
			t.Errorf("banner lacks %q:\n%s", want, b.text(now, nil))
		}
	}

	// The steps are done and the end moved (an extension).
	b.done()
	ends := now.Add(18*time.Minute + 20*time.Second)
	b.setExpiry(&ends, "extended by ann (API)")
	text := b.text(now, nil)
	done := flat(text)
	for _, want := range []string{
		"SSH access ends at 12:34 UTC (in 18 min: extended by ann (API)), or when the build ends",
		"The steps are done: logging out of the last shell finishes the build.",
	} {
		if !strings.Contains(done, want) {
			t.Errorf("banner lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(done, "PAUSED") || strings.Contains(done, "at the latest") {
		t.Errorf("banner of a build whose steps are done:\n%s", text)
	}
	for _, text := range []string{text, b.text(now, &paused{Step: 2, Name: "Run tests"})} {
		for _, l := range strings.Split(text, "\n") {
			if len(l) > 78 {
				t.Errorf("line longer than 78 columns: %q", l)
			}
			if strings.Count(l, "`")%2 != 0 {
				t.Errorf("a command broken across lines: %q", l)
			}
		}
	}

	// A runner that sends no build or expiry: the alias, and no time.
	old := newBanner(&link.Job{}, "build-7")
	if got := flat(old.text(now, nil)); !strings.HasPrefix(got, "Hangar: build-7.") || !strings.Contains(got, "SSH access ends when the build ends;") {
		t.Errorf("banner without the build's details:\n%s", got)
	}
}
