package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
)

// uiWorkflows is the repository the UI test adds as an app: a build whose
// steps end at once and whose SSH window then holds it (hold); demo comes
// first, as the workflow a Start dialog shows before any choice; paused
// has a step to set a breakpoint before. Branch feature/late has one
// workflow more (uiFeatureWorkflow).
const uiWorkflows = `
workflows:
  demo:
    name: Demo
    max_build_duration: 10
    scripts:
      - name: Say demo
        script: echo demo-ran
  paused:
    name: Breakpoints
    max_build_duration: 10
    scripts:
      - name: Before
        script: echo before-ran
      - name: After the breakpoint
        script: echo after-ran
  hold:
    name: Hold for SSH
    max_build_duration: 10
    scripts:
      - name: Say hello
        script: |
          printf '\033[32mready\033[0m for SSH\n'
          for i in $(seq 1 50); do echo "line $i"; done
`

// uiFeatureWorkflow is the workflow only branch feature/late has.
const uiFeatureWorkflow = `
  feature-only:
    name: Feature only
    max_build_duration: 10
    scripts:
      - echo feature-ran
`

// TestUI drives the web UI in Debian's Chromium (e2e/ui/ui.test.mjs, with
// playwright-core): sign in, add an app, start a build with SSH access,
// run the page's one-line command with the real ssh client, use the browser
// terminal, detach it and continue its shell from a terminal (the one-line
// command on a pty), re-attach in the browser, log out with its close button
// and see the build finish; then the Start dialog: a workflow list that
// arrives late (held back by the test) and the request that carries the
// workflow shown, SSH on failure, the branch picker and an error in the
// UI's words, and a breakpoint resumed with the Continue button; the page
// must contact no other host. Screenshots of each stage go to $HANGAR_UI_SCREENSHOTS, or
// to the test's temporary directory.
func TestUI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("needs node (make deps installs it)")
	}
	for _, bin := range []string{"runc", "ssh", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (make deps installs it)", bin)
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Skip("needs Debian's chromium (make deps installs it)")
	}
	if _, err := os.Stat("ui/node_modules/playwright-core/package.json"); err != nil {
		t.Skip("needs playwright-core: npm ci in e2e/ui (make test does it)")
	}

	s := harness.StartServer(t, harness.Options{Driver: "sandbox", Args: []string{
		"--sandbox-bridge", "hgui1", "--sandbox-subnet", "10.213.91.0/24",
		"--ssh", "127.0.0.1:0", "--ssh-after-steps", "10m",
	}})
	// The binary serves the UI it embeds.
	resp, err := http.Get(s.URL + "/builds/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`<div id="app">`)) {
		t.Fatalf("GET /builds/1: %d, not the UI's index.html:\n%s", resp.StatusCode, body)
	}
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": uiWorkflows})
	repo.Commit("feature/late", map[string]string{"codemagic.yaml": uiWorkflows + uiFeatureWorkflow})

	shots := os.Getenv("HANGAR_UI_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "ui.test.mjs")
	cmd.Dir = "ui"
	cmd.Env = append(os.Environ(),
		"HANGAR_URL="+s.URL, "HANGAR_TOKEN="+s.Token, "REPO_PATH="+repo.Path, "SCREENSHOT_DIR="+shots)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("node ui.test.mjs:\n%s", out.String())
	if err != nil {
		t.Fatalf("the UI test failed (%v); screenshots in %s", err, shots)
	}
	t.Logf("screenshots in %s", shots)
}
