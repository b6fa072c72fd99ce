package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/notify/smtptest"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

// artifactsFile has a workflow that makes artifacts and uses a cache, and
// one that fails after making an artifact.
const artifactsFile = `
workflows:
  art:
    name: Artifacts and cache
    max_build_duration: 5
    cache:
      cache_paths:
        - $HOME/.e2e-cache
        - deps
        - {{abs}}
    scripts:
      - name: Make
        script: |
          mkdir -p build/out/sub
          seq 1 400000 > build/out/app.bin
          printf 'notes of {{run}}\n' > build/out/sub/notes.txt
          head -c 4500000 /dev/zero > build/out/big.bin
          mkdir -p build/ios/Runner.xcarchive/Products
          echo plist > build/ios/Runner.xcarchive/Info.plist
          ln -s Info.plist build/ios/Runner.xcarchive/Products/link
          mkdir -p "$HOME/logs" && echo "log of {{run}}" > "$HOME/logs/build.log"
          if [ -f "$HOME/.e2e-cache/stamp" ]; then echo "cache-hit $(cat "$HOME/.e2e-cache/stamp") deps=$(cat deps/d.txt)"; else echo cache-miss; fi
          mkdir -p "$HOME/.e2e-cache" deps
          echo "$CM_BUILD_ID" > "$HOME/.e2e-cache/stamp"
          echo "dep-$CM_BUILD_ID" > deps/d.txt
          if [ -f {{abs}}/stamp ]; then echo "abs-hit $(cat {{abs}}/stamp)"; else echo abs-miss; fi
          mkdir -p {{abs}} 2>/dev/null || { sudo mkdir -p {{abs}} && sudo chown "$(id -u)" {{abs}}; }
          echo "$CM_BUILD_ID" > {{abs}}/stamp
    artifacts:
      - build/**/*.bin
      - build/out/**/*.txt
      - build/ios/*.xcarchive
      - missing/*.zip
      - $HOME/logs/*.log
      - /proc/self/status
    publishing:
      scripts:
        - name: Show links
          script: echo "links=$CM_ARTIFACT_LINKS"
      email:
        recipients: [dev@example.com]
      slack:
        channel: "#builds"
  failing:
    max_build_duration: 5
    cache:
      cache_paths: [$HOME/.never]
    scripts:
      - name: Make then fail
        script: |
          echo partial > out.txt
          mkdir -p $HOME/.never
          exit 3
      - name: Never
        script: echo SHOULD-NOT-RUN
    artifacts:
      - out.txt
    publishing:
      scripts:
        - name: After the failure
          script: echo "publish-ran links=$CM_ARTIFACT_LINKS"
`

// artifactsYAML is artifactsFile for the run marker run, with abs as its
// absolute cache path.
func artifactsYAML(run, abs string) string {
	return strings.NewReplacer("{{run}}", run, "{{abs}}", abs).Replace(artifactsFile)
}

// appBin is what the art workflow writes to build/out/app.bin.
func appBin() []byte {
	var b bytes.Buffer
	for i := 1; i <= 400000; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestArtifactsAndCache: a build's artifacts are collected (Codemagic's
// globs, a directory zipped, a file from outside the clone, a file over
// the server's limit left out, a pattern in /proc refused, one matching
// nothing named), listed and downloaded byte-identical by the CLI;
// CM_ARTIFACT_LINKS reaches the publishing script; the cache saved by the
// first build (under $HOME, in the clone, absolute) is restored in the second;
// a failed build still uploads its artifacts and runs its publishing
// scripts, and saves no cache; `hangar cache` lists and clears.
func TestArtifactsAndCache(t *testing.T) { testArtifactsAndCache(t, "host") }

// TestArtifactsAndCacheSandbox: the same in isolated machines, where the
// builder is root and the steps' user another one.
func TestArtifactsAndCacheSandbox(t *testing.T) { testArtifactsAndCache(t, "sandbox") }

func testArtifactsAndCache(t *testing.T, driver string) {
	s := harness.StartServer(t, harness.Options{Driver: driver, Args: driverArgs(t, driver, "--artifact-max-size", "4MiB")})
	run := marker()
	// An absolute cache path: the machine's own /opt in a sandbox, a
	// directory of the test's on the host.
	abs := "/opt/e2e-abs-cache"
	if driver == "host" {
		abs = filepath.Join(t.TempDir(), "abs-cache")
	}
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": artifactsYAML(run, abs)})
	// app add reports, before any build, what is run and what is not.
	r := s.Hangar("app", "add", "arts", "--repo", repo.Path)
	if r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	for _, want := range []string{"publishing.slack", "NOT run by Hangar", "artifacts: build/**/*.bin", "Uploading artifacts (also after a failure)"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("app add's report lacks %q:\n%s", want, r.Stdout)
		}
	}
	f := &fixture{t: t, s: s, driver: driver, bridge: testBridge}
	start := func(wf string) *build.Build {
		t.Helper()
		r := s.Hangar("build", "start", "arts", "--workflow", wf, "--json")
		if r.Code != 0 {
			t.Fatalf("build start %s: %s", wf, r.Stderr)
		}
		var b build.Build
		if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
			t.Fatal(err)
		}
		return &b
	}

	b1, logs := f.wait(start("art").ID, 2*time.Minute)
	if b1.Status != build.Finished {
		t.Fatalf("first build: %s (%s)\n%s", b1.Status, b1.Message, logs)
	}
	for _, want := range []string{
		"cache-miss",
		"No cache restored: no cache of workflow art yet",
		"Uploaded build/out/app.bin",
		"build/out/big.bin is 4.3 MiB, over the server's limit of 4.0 MiB per artifact: not uploaded",
		"Pattern missing/*.zip matched no files",
		"Pattern /proc/self/status (/proc/self/status) is not collected: it is in /proc",
		"Uploaded build.log",
		"Uploaded build/ios/Runner.xcarchive.zip",
		"Uploaded 4 artifacts",
		`links=[{"name":"app.bin","type":"bin","url":"` + s.URL + fmt.Sprintf("/api/v1/builds/%d/artifacts/build/out/app.bin", b1.ID),
		"Saved the cache: 3 files",
		"Email: NOT sent to dev@example.com: this server has no SMTP server configured",
		"Ignored: publishing.slack",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("first build's log lacks %q", want)
		}
	}
	kinds := map[string]string{}
	for _, st := range b1.Steps {
		kinds[st.Name] = st.Kind
		if st.Status != build.StepSuccess {
			t.Errorf("step %q: %s", st.Name, st.Status)
		}
	}
	if kinds["Restoring cache"] != build.KindCacheRestore || kinds["Uploading artifacts"] != build.KindArtifacts ||
		kinds["Show links"] != build.KindPublishing || kinds["Saving cache"] != build.KindCacheSave || kinds["Make"] != "" {
		t.Errorf("step kinds: %v", kinds)
	}

	if r := s.Hangar("build", "show", strconv.FormatInt(b1.ID, 10)); !strings.Contains(r.Stdout, "Publishing: Show links") {
		t.Errorf("build show does not mark the publishing step:\n%s", r.Stdout)
	}

	// The CLI lists and downloads them, byte-identical.
	r = s.Hangar("build", "artifacts", strconv.FormatInt(b1.ID, 10))
	if r.Code != 0 || !strings.Contains(r.Stdout, "build/out/app.bin") || !strings.Contains(r.Stdout, "build/out/sub/notes.txt") || strings.Contains(r.Stdout, "big.bin") {
		t.Errorf("build artifacts: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	dir := t.TempDir()
	if r := s.Hangar("build", "artifacts", strconv.FormatInt(b1.ID, 10), "--download", dir); r.Code != 0 {
		t.Fatalf("build artifacts --download: %s %s", r.Stdout, r.Stderr)
	}
	got, err := os.ReadFile(filepath.Join(dir, "build/out/app.bin"))
	if err != nil || !bytes.Equal(got, appBin()) {
		t.Errorf("downloaded app.bin: %d bytes, %v; want %d identical bytes", len(got), err, len(appBin()))
	}
	if got, err := os.ReadFile(filepath.Join(dir, "build/out/sub/notes.txt")); err != nil || string(got) != "notes of "+run+"\n" {
		t.Errorf("downloaded notes.txt: %q %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "build.log")); err != nil || string(got) != "log of "+run+"\n" {
		t.Errorf("downloaded build.log (from $HOME/logs): %q %v", got, err)
	}
	// The directory came as a zip archive holding it, its link a link.
	if zr, err := zip.OpenReader(filepath.Join(dir, "build/ios/Runner.xcarchive.zip")); err != nil {
		t.Errorf("downloaded Runner.xcarchive.zip: %v", err)
	} else {
		var names []string
		for _, f := range zr.File {
			names = append(names, fmt.Sprintf("%s %v", f.Name, f.Mode().Type()))
		}
		zr.Close()
		want := []string{"Runner.xcarchive/ d---------", "Runner.xcarchive/Info.plist ----------", "Runner.xcarchive/Products/ d---------", "Runner.xcarchive/Products/link L---------"}
		if strings.Join(names, "\n") != strings.Join(want, "\n") {
			t.Errorf("Runner.xcarchive.zip holds:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
		}
	}

	// The second build of the workflow restores the first one's cache.
	b2, logs := f.wait(start("art").ID, 2*time.Minute)
	if b2.Status != build.Finished {
		t.Fatalf("second build: %s (%s)\n%s", b2.Status, b2.Message, logs)
	}
	for _, want := range []string{
		fmt.Sprintf("Restoring the cache saved by build %d", b1.ID),
		"Restored 3 files",
		fmt.Sprintf("cache-hit %d deps=dep-%d", b1.ID, b1.ID),
		fmt.Sprintf("abs-hit %d", b1.ID),
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("second build's log lacks %q:\n%s", want, logs)
		}
	}

	// A failed build uploads its artifacts and runs its publishing
	// scripts, and saves no cache.
	b3, logs := f.wait(start("failing").ID, 2*time.Minute)
	if b3.Status != build.Failed || !strings.Contains(b3.Message, `"Make then fail" failed`) {
		t.Fatalf("failing build: %s (%s)\n%s", b3.Status, b3.Message, logs)
	}
	st := stepStatuses(b3)
	if st["Never"] != build.StepSkipped || st["Uploading artifacts"] != build.StepSuccess || st["After the failure"] != build.StepSuccess || st["Saving cache"] != build.StepSkipped {
		t.Errorf("failing build's steps: %v", st)
	}
	if !strings.Contains(logs, `publish-ran links=[{"name":"out.txt"`) || strings.Contains(logs, "SHOULD-NOT-RUN") {
		t.Errorf("failing build's log:\n%s", logs)
	}

	// hangar cache list and clear.
	r = s.Hangar("cache", "list", "arts")
	if r.Code != 0 || !strings.Contains(r.Stdout, "art") || strings.Contains(r.Stdout, "failing") || !strings.Contains(r.Stdout, fmt.Sprintf("build %d", b2.ID)) {
		t.Errorf("cache list: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Hangar("cache", "clear", "arts", "--workflow", "art"); r.Code != 0 || !strings.Contains(r.Stdout, "deleted 1 cache of arts") {
		t.Errorf("cache clear: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Hangar("cache", "list"); r.Code != 0 || !strings.Contains(r.Stdout, "no caches") {
		t.Errorf("cache list after clear: %s %s", r.Stdout, r.Stderr)
	}
}

// TestUIArtifacts: the build page lists a build's artifacts and downloads
// one in Chromium (e2e/ui/artifacts.test.mjs), byte-identical.
func TestUIArtifacts(t *testing.T) {
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
	b, _ := artBuild(t, s, "ui-arts")
	shots := os.Getenv("HANGAR_UI_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
	}
	out := filepath.Join(t.TempDir(), "downloaded.bin")
	cmd := exec.Command(node, "artifacts.test.mjs")
	cmd.Dir = "ui"
	cmd.Env = append(os.Environ(), "HANGAR_URL="+s.URL, "HANGAR_TOKEN="+s.Token, "BUILD_ID="+strconv.FormatInt(b.ID, 10),
		"ARTIFACT=build/out/app.bin", "OUT_FILE="+out, "SCREENSHOT_DIR="+shots)
	output, err := cmd.CombinedOutput()
	t.Logf("node artifacts.test.mjs:\n%s", output)
	if err != nil {
		t.Fatalf("the UI artifacts test failed (%v); screenshots in %s", err, shots)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, appBin()) {
		t.Errorf("the browser's download: %d bytes, %v; want %d identical bytes", len(got), err, len(appBin()))
	}
}

// TestEmailSMTP: a server started with --smtp-* sends publishing.email
// through a real SMTP server on loopback (STARTTLS, AUTH PLAIN with the
// password from HANGAR_SMTP_PASSWORD), with the artifacts' links.
func TestEmailSMTP(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	mb := smtptest.Start(t, certs.Server, "ci", "mail-pw-123")
	s := harness.StartServer(t, harness.Options{Driver: "host", Env: []string{"SSL_CERT_FILE=" + certs.CAFile, "HANGAR_SMTP_PASSWORD=mail-pw-123"},
		Args: []string{"--smtp-host", "127.0.0.1", "--smtp-port", strconv.Itoa(mb.Port), "--smtp-from", "Hangar <ci@example.com>",
			"--smtp-user", "ci", "--smtp-starttls", "always"}})
	b, logs := artBuild(t, s, "mail")
	if !strings.Contains(logs, "Email: sent to dev@example.com through 127.0.0.1") {
		t.Fatalf("the log does not say the email was sent:\n%s", logs)
	}
	msgs := mb.Wait(1, 10*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d emails received", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || m.User != "ci" || m.From != "ci@example.com" || strings.Join(m.To, ",") != "dev@example.com" {
		t.Errorf("envelope: %+v", m)
	}
	for _, want := range []string{"Subject: [Hangar] mail #1: Artifacts and cache succeeded", s.URL + fmt.Sprintf("/api/v1/builds/%d/artifacts/build/out/app.bin", b.ID)} {
		if !strings.Contains(m.Data, want) {
			t.Errorf("email lacks %q:\n%s", want, m.Data)
		}
	}
	if strings.Contains(s.Log(), "mail-pw-123") || strings.Contains(logs, "mail-pw-123") {
		t.Error("the SMTP password is in a log")
	}
}

// artBuild adds app (artifactsFile) to s, runs its workflow art to its
// end and returns the build, finished, and its log.
func artBuild(t *testing.T, s *harness.Server, app string) (*build.Build, string) {
	t.Helper()
	repo := harness.NewRepo(t, map[string]string{"codemagic.yaml": artifactsYAML(marker(), filepath.Join(t.TempDir(), "abs-cache"))})
	if r := s.Hangar("app", "add", app, "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %s", r.Stderr)
	}
	r := s.Hangar("build", "start", app, "--workflow", "art", "--json")
	var b build.Build
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &b) != nil {
		t.Fatalf("build start: %s %s", r.Stdout, r.Stderr)
	}
	f := &fixture{t: t, s: s, driver: "host"}
	done, logs := f.wait(b.ID, 2*time.Minute)
	if done.Status != build.Finished {
		t.Fatalf("build: %s (%s)\n%s", done.Status, done.Message, logs)
	}
	return done, logs
}
