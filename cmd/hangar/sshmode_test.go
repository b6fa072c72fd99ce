package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestPrintSSHOnFailure: `build show` says a build has SSH on failure
// before any step failed, and that none was needed once it passed.
func TestPrintSSHOnFailure(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		b    build.Build
		want string
	}{
		{build.Build{Status: build.Building, SSH: build.SSH{Mode: build.SSHOnFailure}}, "SSH:      on failure: opens only if a step fails; no credential exists until then\n"},
		{build.Build{Status: build.Finished, SSH: build.SSH{Mode: build.SSHOnFailure}}, "SSH:      on failure: not opened (no step failed), no credential was ever made\n"},
		{build.Build{Status: build.Building, SSH: build.SSH{Mode: build.SSHOnFailure, Enabled: true, State: build.SSHPending}}, "SSH:      on failure, a step failed: pending\n"},
		{build.Build{Status: build.Finished}, ""},
	} {
		var out strings.Builder
		printSSH(&out, &tc.b, now)
		if got := out.String(); !strings.HasPrefix(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("%s %+v: %q, want %q", tc.b.Status, tc.b.SSH, got, tc.want)
		}
	}
}
