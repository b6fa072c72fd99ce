package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// secretsFile imports groups and a keystore the way Codemagic's
// documentation shows, and echoes every secret: whole, in two writes, inside
// a variable that expands a group's, and the keystore's passwords.
const secretsFile = `
workflows:
  signed:
    environment:
      groups:
        - play
        - shared
      android_signing:
        - upload
      vars:
        E2E_RUN: "{{run}}"
        URL: https://api.example.invalid/$PLAY_TOKEN/x
    scripts:
      - name: Echo secrets
        script: |
          echo "token=$PLAY_TOKEN"
          printf 'split=%s' "${PLAY_TOKEN:0:7}"; printf '%s\n' "${PLAY_TOKEN:7}"
          echo "url=$URL shared=$SHARED"
          echo "store=$CM_KEYSTORE_PASSWORD key=$CM_KEY_PASSWORD alias=$CM_KEY_ALIAS"
          echo "mode=$(stat -c %a "$CM_KEYSTORE_PATH") owner=$(stat -c %U "$CM_KEYSTORE_PATH") sha=$(sha256sum < "$CM_KEYSTORE_PATH" | cut -c1-16)"
          case "$CM_KEYSTORE_PATH" in "$HOME"/*) echo "under-home=yes";; esac
  missing:
    environment:
      groups: [nope]
    scripts: [echo never]
  ios:
    environment:
      ios_signing:
        distribution_type: app_store
        bundle_identifier: io.example.app
    scripts: [echo never]
`

// TestSecrets: groups set with the CLI (one from a dotenv file, global) and
// a keystore reach a build on the host and sandbox drivers; its log shows
// every secret as *****, the keystore is readable at $CM_KEYSTORE_PATH (0600,
// under the build's home, the build user's); a missing group and
// ios_signing refuse the build at start; no value shows in the CLI's
// answers or the server's log.
func TestSecrets(t *testing.T) {
	for _, driver := range []string{"host", "sandbox"} {
		t.Run(driver, func(t *testing.T) { testSecrets(t, driver) })
	}
}

func testSecrets(t *testing.T, driver string) {
	var args []string
	if driver == "sandbox" {
		if os.Geteuid() != 0 {
			t.Skip("the sandbox driver needs root")
		}
		if _, err := exec.LookPath("runc"); err != nil {
			t.Skip("the sandbox driver needs runc (apt-get install runc)")
		}
		args = []string{"--sandbox-bridge", testBridge, "--sandbox-subnet", testSubnet}
	}
	s := harness.StartServer(t, harness.Options{Driver: driver, Args: args})
	f := &fixture{t: t, s: s, run: marker(), driver: driver, bridge: testBridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(secretsFile, "{{run}}", f.run)})
	r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path)
	if r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	if !strings.Contains(r.Stdout, "environment.groups: play, shared") || !strings.Contains(r.Stdout, "environment.ios_signing: iOS code signing needs a macOS machine") {
		t.Errorf("app add does not report the groups and ios_signing:\n%s", r.Stdout)
	}

	token := "tok-" + f.run + "-SECRET"
	shared := "shared " + f.run + " value"
	storePass, keyPass := "store-"+f.run, "key-"+f.run
	dir := t.TempDir()
	env := filepath.Join(dir, "shared.env")
	if err := os.WriteFile(env, []byte("# global\nexport SHARED=\""+shared+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks := make([]byte, 2048)
	_, _ = rand.Read(ks)
	ksPath := filepath.Join(dir, "upload.jks")
	if err := os.WriteFile(ksPath, ks, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ks)

	// The build is refused while the group is missing, with what to do.
	if r := f.hangar("build start demo --workflow signed"); r.Code == 0 || !strings.Contains(r.Stderr, "hangar group set demo play KEY=VALUE") {
		t.Errorf("start without the group: exit %d %q", r.Code, r.Stderr)
	}
	var outputs []string
	for _, args := range [][]string{
		{"group", "set", "demo", "play", "PLAY_TOKEN=" + token, "PLAY_USER=robot"},
		{"group", "set", "--global", "shared", "--from-file", env},
		{"app", "keystore", "add", "demo", "upload", "--file", ksPath, "--password", storePass, "--alias", "upload", "--key-password", keyPass},
		{"group", "list", "demo"},
		{"app", "keystore", "list", "demo"},
	} {
		r := s.Hangar(args...)
		if r.Code != 0 {
			t.Fatalf("%s: %s", strings.Join(args, " "), r.Stderr)
		}
		outputs = append(outputs, r.Stdout, r.Stderr)
	}
	if list := outputs[6]; !strings.Contains(list, "play") || !strings.Contains(list, "PLAY_TOKEN, PLAY_USER") || !strings.Contains(list, "global") {
		t.Errorf("group list:\n%s", list)
	}

	owner := "builder" // the sandbox's build user
	if driver == "host" {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		owner = u.Username
	}
	b, logs := f.wait(f.start("--workflow signed").ID, 2*time.Minute)
	if b.Status != build.Finished {
		t.Fatalf("signed: %s %s\n%s", b.Status, b.Message, logs)
	}
	for _, want := range []string{
		"token=*****\n", "split=*****\n", "url=https://api.example.invalid/*****/x shared=*****\n",
		"store=***** key=***** alias=upload\n", "mode=600 owner=" + owner + " sha=" + hex.EncodeToString(sum[:8]) + "\n", "under-home=yes\n",
		"Environment variable groups: play, shared (3 variables; their values are hidden in this log)",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	for _, secret := range []string{token, shared, storePass, keyPass} {
		for where, text := range map[string]string{"build log": logs, "server log": s.Log(), "CLI output": strings.Join(outputs, "\n"), "build": b.Message} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q", where, secret)
			}
		}
	}

	if r := f.hangar("build start demo --workflow missing"); r.Code == 0 || !strings.Contains(r.Stderr, `names group "nope", which app demo does not have`) {
		t.Errorf("missing group: exit %d %q", r.Code, r.Stderr)
	}
	if r := f.hangar("build start demo --workflow ios"); r.Code == 0 || !strings.Contains(r.Stderr, "macOS") {
		t.Errorf("ios_signing: exit %d %q", r.Code, r.Stderr)
	}
	// Deleting the group: builds naming it are refused again.
	if r := f.hangar("group delete demo play"); r.Code != 0 {
		t.Fatalf("group delete: %s", r.Stderr)
	}
	if r := f.hangar("build start demo --workflow signed"); r.Code == 0 || !strings.Contains(r.Stderr, "hangar group set demo play") {
		t.Errorf("start after delete: exit %d %q", r.Code, r.Stderr)
	}
}

// TestUIGroups drives the app page's groups section in Debian's Chromium
// (e2e/ui/groups.test.mjs): a value saved there is never shown again,
// and a build echoing it shows ***** in its log.
func TestUIGroups(t *testing.T) {
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
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": `workflows:
  echo:
    environment:
      groups: [play]
      vars:
        E2E_RUN: "` + run + `"
    scripts:
      - name: Echo
        script: echo "token=$PLAY_TOKEN"
`})
	if r := s.Hangar("app", "add", "ui-groups", "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	shots := os.Getenv("HANGAR_UI_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
	}
	secret := "ui-" + run + "-SECRET"
	cmd := exec.Command(node, "groups.test.mjs")
	cmd.Dir = "ui"
	cmd.Env = append(os.Environ(), "HANGAR_URL="+s.URL, "HANGAR_TOKEN="+s.Token, "APP_NAME=ui-groups", "SECRET="+secret, "SCREENSHOT_DIR="+shots)
	out, err := cmd.CombinedOutput()
	t.Logf("node groups.test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the UI groups test failed (%v); screenshots in %s", err, shots)
	}
	if strings.Contains(s.Log(), secret) {
		t.Error("the server's log shows the value")
	}
}
