package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// featuresFile uses what Codemagic's documentation shows: inputs, variables
// that refer to built-in ones, steps with when conditions (one on a
// variable an earlier step exported), a minimal workflow and a pull
// request trigger.
const featuresFile = `
workflows:
  features:
    name: Features
    inputs:
      flavor:
        description: Which flavor to build
        type: choice
        options: [dev, prod]
        default: dev
      runTests:
        description: Run tests before the build
        type: boolean
        default: true
      count:
        description: How many (also the build's minutes)
        type: number
        default: 2
    max_build_duration: ${{ inputs.count }}
    environment:
      vars:
        E2E_RUN: "{{run}}"
        DOTNET_BIN: $CM_BUILD_DIR/dotnet/dotnet
        TOOLS: ${DOTNET_BIN}-tools
        FLAVOR: ${{ inputs.flavor }}
        KEEP: pa$$word $UNSET_VAR
    scripts:
      - name: Show
        script: echo "bin=$DOTNET_BIN tools=$TOOLS flavor=$FLAVOR count=${{ inputs.count }} keep=$KEEP pr=$CM_PULL_REQUEST dir=$CM_BUILD_DIR"
      - name: Tests
        script: echo tests-ran
        when:
          condition: ${{ inputs.runTests }}
      - name: Export
        script: echo "DEPLOY=yes" >> "$CM_ENV"
      - name: Deploy
        script: echo deploy-ran
        when:
          condition: env.DEPLOY == "yes" and env.FLAVOR == "prod"
    publishing:
      slack:
        channel: "#builds"
  minimal:
    name: Codemagic Sample Workflow
    max_build_duration: 5
  pr:
    triggering:
      events: [pull_request]
      branch_patterns:
        - pattern: main
          source: false
    environment:
      vars:
        E2E_RUN: "{{run}}"
    scripts:
      - echo "pr=$CM_PULL_REQUEST number=$CM_PULL_REQUEST_NUMBER dest=$CM_PULL_REQUEST_DEST branch=$CM_BRANCH"
`

// TestWorkflowFeatures runs builds of featuresFile on the host driver: the
// builder expands variables, substitutes inputs and skips steps whose
// condition is false; a workflow without scripts fetches and finishes; a
// pull request webhook starts the right workflow with its variables.
func TestWorkflowFeatures(t *testing.T) {
	s := harness.StartServer(t, harness.Options{Driver: "host"})
	f := &fixture{t: t, s: s, run: marker(), driver: "host"}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(featuresFile, "{{run}}", f.run)})
	r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path, "--webhook-secret", "s3cret")
	if r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	// app add says, before any build, what Hangar makes of the file.
	for _, want := range []string{"codemagic.yaml (branch main at", "Workflow features (Features)", "    3. Export",
		"inputs: flavor (choice, default dev)", "max_build_duration: 2 minutes with the inputs' defaults (${{ inputs.count }}", "publishing.slack: this publisher is NOT run by Hangar", "no scripts: the build fetches the sources and ends"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("app add does not say %q:\n%s", want, r.Stdout)
		}
	}

	// An input that is not declared, or of the wrong type, is refused.
	for args, want := range map[string]string{
		"--workflow features --input colour=red": "workflow features has no input colour",
		"--workflow features --input count=many": `input count of workflow features: is a number, got "many"`,
		"--workflow features --input flavor=qa":  `must be one of dev, prod, got "qa"`,
		"--workflow features --input flavor":     `--input "flavor": write --input KEY=VALUE`,
		"--workflow features --input count=500":  "codemagic.yaml:19:25: max_build_duration must be 1-120 minutes, got 500 (the value of input count)",
	} {
		if r := f.hangar("build start demo " + args); r.Code == 0 || !strings.Contains(r.Stderr, want) {
			t.Errorf("build start %s: exit %d %q, want %q", args, r.Code, r.Stderr, want)
		}
	}

	b, logs := f.wait(f.start("--workflow features --input flavor=prod --input runTests=false --input count=5").ID, 2*time.Minute)
	if b.Status != build.Finished || b.MaxDuration != 5*60 {
		t.Fatalf("features: %s %s, max duration %ds\n%s", b.Status, b.Message, b.MaxDuration, logs)
	}
	clone := ""
	for _, l := range strings.Split(logs, "\n") {
		if i := strings.Index(l, " dir="); i >= 0 && strings.Contains(l, "bin=") {
			clone = l[i+len(" dir="):]
		}
	}
	want := fmt.Sprintf("bin=%s/dotnet/dotnet tools=%s/dotnet/dotnet-tools flavor=prod count=5 keep=pa$$word $UNSET_VAR pr=false dir=%s", clone, clone, clone)
	if clone == "" || !strings.Contains(logs, want) {
		t.Errorf("features log lacks %q:\n%s", want, logs)
	}
	if !strings.Contains(logs, "Skipped: when.condition is false: ${{ inputs.runTests }}") || strings.Contains(logs, "tests-ran") {
		t.Errorf("the Tests step ran or was not shown skipped:\n%s", logs)
	}
	if !strings.Contains(logs, "deploy-ran") {
		t.Errorf("Deploy (its condition reads a CM_ENV export) did not run:\n%s", logs)
	}
	if st := b.Steps[3]; st.Status != build.StepSkipped || st.Reason != "when.condition is false: ${{ inputs.runTests }}" {
		t.Errorf("Tests step: %+v", st)
	}
	if !strings.Contains(logs, "Ignored: publishing.slack is not run by Hangar yet") {
		t.Errorf("log does not say publishing.slack is ignored:\n%s", logs)
	}
	// The defaults: dev, tests run, deploy skipped.
	b, logs = f.wait(f.start("--workflow features").ID, 2*time.Minute)
	if b.Status != build.Finished || b.MaxDuration != 2*60 || !strings.Contains(logs, "tests-ran") || strings.Contains(logs, "deploy-ran") ||
		b.Steps[5].Status != build.StepSkipped || !strings.Contains(b.Steps[5].Reason, `env.DEPLOY == "yes" and env.FLAVOR == "prod"`) {
		t.Errorf("features with defaults: %s %+v\n%s", b.Status, b.Steps, logs)
	}

	// Codemagic's minimal workflow has nothing to run: it finishes.
	b, logs = f.wait(f.start("--workflow minimal").ID, 2*time.Minute)
	if b.Status != build.Finished || len(b.Steps) != 2 || !strings.Contains(logs, "The workflow has no scripts") {
		t.Errorf("minimal: %s %+v\n%s", b.Status, b.Steps, logs)
	}

	// A pull request into main starts "pr" with its variables.
	head := f.repo.Commit("feature/x", map[string]string{"x.txt": "x"})
	body, _ := json.Marshal(map[string]any{"action": "opened", "number": 9, "pull_request": map[string]any{
		"head": map[string]any{"ref": "feature/x", "sha": head}, "base": map[string]any{"ref": "main"}}})
	req, _ := http.NewRequest("POST", s.URL+"/api/v1/webhooks/demo", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "pull_request")
	req.Header.Set("X-GitHub-Delivery", "e2e-"+f.run)
	m := hmac.New(sha256.New, []byte("s3cret"))
	m.Write(body)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Builds []build.Build }
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted || len(res.Builds) != 1 || res.Builds[0].Workflow != "pr" {
		t.Fatalf("pull request webhook: %d %v %+v", resp.StatusCode, err, res)
	}
	b, logs = f.wait(res.Builds[0].ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(logs, "pr=true number=9 dest=main branch=feature/x") {
		t.Errorf("pull request build: %s\n%s", b.Status, logs)
	}
}

// TestUIInputs drives the Start dialog in Debian's Chromium
// (e2e/ui/inputs.test.mjs): the form built from a workflow's inputs, the
// build it starts, the skipped step's reason, and the app page's list of
// what Hangar does not run.
func TestUIInputs(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("needs node (make deps installs it)")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Skip("needs Debian's chromium (make deps installs it)")
	}
	if _, err := os.Stat("ui/node_modules/playwright-core/package.json"); err != nil {
		t.Skip("needs playwright-core: npm ci in e2e/ui (make test does it)")
	}
	s := harness.StartServer(t, harness.Options{Driver: "host"})
	run := marker()
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(featuresFile, "{{run}}", run)})
	if r := s.Hangar("app", "add", "ui-inputs", "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	shots := os.Getenv("HANGAR_UI_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
	}
	cmd := exec.Command(node, "inputs.test.mjs")
	cmd.Dir = "ui"
	cmd.Env = append(os.Environ(), "HANGAR_URL="+s.URL, "HANGAR_TOKEN="+s.Token, "APP_NAME=ui-inputs", "SCREENSHOT_DIR="+shots)
	out, err := cmd.CombinedOutput()
	t.Logf("node inputs.test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the UI inputs test failed (%v); screenshots in %s", err, shots)
	}
}
