package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/image/imagetest"
)

// The image tests' own network.
const (
	imageBridge = "hgimg0"
	imageSubnet = "10.213.64.0/24"
)

// imageFixture starts a sandbox server (with more flags) and an app whose
// codemagic.yaml is yaml.
func imageFixture(t *testing.T, yaml string, args ...string) *fixture {
	t.Helper()
	requireSandbox(t)
	s := harness.StartServer(t, harness.Options{Driver: "sandbox",
		Args: append([]string{"--sandbox-bridge", imageBridge, "--sandbox-subnet", imageSubnet}, args...)})
	f := &fixture{t: t, s: s, run: marker(), driver: "sandbox", bridge: imageBridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": yaml})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	return f
}

// oneStep is a codemagic.yaml with workflow w running script.
func oneStep(w, script string) string {
	var b strings.Builder
	b.WriteString("workflows:\n  " + w + ":\n    scripts:\n      - name: step\n        script: |\n")
	for _, line := range strings.Split(strings.TrimRight(script, "\n"), "\n") {
		b.WriteString("          " + line + "\n")
	}
	return b.String()
}

// TestBuildCannotReadHostSecrets: a build boots from its image, so root-only
// files planted in the host's /etc and /var are not there, even for root
// through the build's sudo; sudo itself works (the positive control).
func TestBuildCannotReadHostSecrets(t *testing.T) {
	requireSandbox(t)
	var planted []string
	for _, dir := range []string{"/etc", "/var/lib", "/var/tmp"} {
		f, err := os.CreateTemp(dir, "hangar-e2e-secret-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.Name()) })
		fmt.Fprintf(f, "host-secret-%s\n", strings.ReplaceAll(dir, "/", "_"))
		f.Close()
		if err := os.Chmod(f.Name(), 0o600); err != nil {
			t.Fatal(err)
		}
		planted = append(planted, f.Name())
	}
	script := "sudo -n id -u\n"
	for _, p := range planted {
		script += fmt.Sprintf("sudo -n cat %[1]s 2>/dev/null || echo \"absent %[1]s\"\n", p)
	}
	script += "sudo -n grep -rl host-secret /etc /var 2>/dev/null | head -3 || true\necho scan-done\n"
	f := imageFixture(t, oneStep("peek", script))
	b, log := f.wait(f.start("--workflow peek").ID, 2*time.Minute)
	if b.Status != build.Finished {
		t.Fatalf("build %s: %s\n%s", b.Status, b.Message, log)
	}
	if strings.Contains(log, "host-secret") {
		t.Errorf("the build read a host secret:\n%s", log)
	}
	for _, p := range planted {
		if !strings.Contains(log, "absent "+p) {
			t.Errorf("the build did not report %s absent:\n%s", p, log)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*0$`).MatchString(log) || !strings.Contains(log, "scan-done") {
		t.Errorf("sudo in the build (the positive control) did not run as root:\n%s", log)
	}
}

// TestToolchainsCheckedAtStart: a workflow asking for a Java the image does
// not declare fails at once, with what the image has; one asking for the
// Python it has runs.
func TestToolchainsCheckedAtStart(t *testing.T) {
	requireSandbox(t)
	f := imageFixture(t, `workflows:
  java:
    environment:
      java: 21
    scripts:
      - echo never-runs
  python:
    environment:
      python: "3"
    scripts:
      - python3 --version
`)
	b, log := f.wait(f.start("--workflow java").ID, 2*time.Minute)
	if b.Status != build.Failed || !strings.Contains(b.Message, "environment.java 21") || !strings.Contains(b.Message, "python 3.") {
		t.Errorf("java 21 build: %s %q, want failed naming environment.java 21 and the image's python", b.Status, b.Message)
	}
	if strings.Contains(log, "never-runs") {
		t.Errorf("the refused build ran its script:\n%s", log)
	}
	b, log = f.wait(f.start("--workflow python").ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(log, "Python 3.") {
		t.Errorf("python 3 build: %s %q\n%s", b.Status, b.Message, log)
	}
}

// TestServerPullsRegistryImage: the server pulls an instance type's image
// from a registry (Debian's docker-registry on loopback, holding a tiny
// busybox image pushed by the test) into its image store at start, and the
// other instance types' builds run on. (A machine booting from a registry
// image is the sandbox package's TestMachineFromRegistryImage: a build
// needs bash and git, which busybox lacks.)
func TestServerPullsRegistryImage(t *testing.T) {
	requireSandbox(t)
	addr := imagetest.Registry(t)
	ref := addr + "/ci/busybox:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, imagetest.Busybox(t, map[string]string{"io.hangar.node": "20.1.0"})); err != nil {
		t.Fatal(err)
	}
	store, test := imagetest.Debian(t)
	t.Cleanup(func() {
		if err := store.Remove(ref); err != nil {
			t.Errorf("remove the pulled image from the test store: %v", err)
		}
	})
	types := filepath.Join(t.TempDir(), "types.yaml")
	if err := os.WriteFile(types, []byte("linux:\n  cpus: 1\n  memory: 1GiB\n  pids: 512\n  disk: 256MiB\n"+
		"tiny:\n  cpus: 1\n  memory: 256MiB\n  pids: 64\n  disk: 64MiB\n  image: "+ref+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := imageFixture(t, `workflows:
  w:
    environment:
      node: "20"
    scripts:
      - echo never-runs
  ok:
    scripts:
      - . /etc/os-release; echo "booted $ID"
`, "--images", store.Dir(), "--default-image", test, "--instance-types", types)
	if !strings.Contains(f.s.Log(), "pulling the image of an instance type") {
		t.Errorf("the server did not say it pulled the image:\n%s", f.s.Log())
	}
	if info, err := store.Get(ref); err != nil || info.Labels["io.hangar.node"] != "20.1.0" {
		t.Errorf("the pulled image in the store: %+v %v", info, err)
	}
	// node 20 is in the tiny image only; linux's test image lacks it.
	b, log := f.wait(f.start("--workflow w").ID, 2*time.Minute)
	if b.Status != build.Failed || !strings.Contains(b.Message, "environment.node 20") || strings.Contains(log, "never-runs") {
		t.Errorf("node 20 on linux: %s %q\n%s", b.Status, b.Message, log)
	}
	b, log = f.wait(f.start("--workflow ok").ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(log, "booted debian") {
		t.Errorf("build %s %q:\n%s", b.Status, b.Message, log)
	}
}
