package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// The limits tests' own network.
const (
	limitsBridge = "hglim1"
	limitsSubnet = "10.213.62.0/24"
)

// limitsTypes is the test server's --instance-types file: small limits.
const limitsTypes = `
small:
  cpus: 1
  memory: 256MiB
  pids: 128
  disk: 64MiB
linux:
  cpus: 2
  memory: 512MiB
  pids: 512
  disk: 128MiB
`

const limitsWorkflows = `
definitions:
  vars: &vars
    E2E_RUN: "{{run}}"
workflows:
  hog:
    instance_type: small
    environment: {vars: *vars}
    scripts:
      - name: Limits
        script: |
          echo "quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null)"
          echo before-hog
      - name: Hog
        script: head -c 1G /dev/zero | tail
      - name: After
        script: echo SHOULD-NOT-RUN
  filler:
    instance_type: small
    environment: {vars: *vars}
    scripts:
      - name: Fill tmp
        script: |
          dd if=/dev/zero of=/tmp/fill bs=1M count=200 || echo "dd-exit=$?"
          rm /tmp/fill
          echo filler-done
  diskfill:
    instance_type: small
    environment: {vars: *vars}
    scripts:
      - name: Fill the disk
        script: |
          sudo -n dd if=/dev/zero of=/var/fill bs=1M count=200
      - name: After
        script: echo SHOULD-NOT-RUN
  bomb:
    instance_type: small
    environment: {vars: *vars}
    scripts:
      - name: Bomb
        script: |
          f() { f | f & }
          # One fork from this shell, before the bomb exists (forking the
          # pipeline here could fail once the bomb has taken every pid).
          ( f ) 2>/dev/null &
          # Builtins only from here: the machine has no pid left to fork.
          while [ $SECONDS -lt 5 ]; do :; done
          for i in 1 2 3 4 5 6 7 8 9 10; do kill -9 -1 2>/dev/null; done
          echo bomb-stopped
      - name: After the bomb
        script: echo after-bomb
  quiet:
    environment: {vars: *vars}
    scripts:
      - name: Count
        script: seq 1 5000 | sed 's/^/q=/'
  mac:
    instance_type: mac_mini_m2
    scripts:
      - echo SHOULD-NOT-RUN
`

// newLimitsFixture starts a server with driver and the limitsTypes
// instance types, and an app with limitsWorkflows.
func newLimitsFixture(t *testing.T, driver string) *fixture {
	types := filepath.Join(t.TempDir(), "instance-types.yaml")
	if err := os.WriteFile(types, []byte(limitsTypes), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--instance-types", types}
	if driver == "sandbox" {
		requireSandbox(t)
		args = append(args, "--sandbox-bridge", limitsBridge, "--sandbox-subnet", limitsSubnet)
	}
	s := harness.StartServer(t, harness.Options{Driver: driver, Args: args})
	f := &fixture{t: t, s: s, run: marker(), driver: driver, bridge: limitsBridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": strings.ReplaceAll(limitsWorkflows, "{{run}}", f.run)})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	return f
}

// TestUnknownInstanceType: a workflow naming an instance type the server
// does not have fails at once, and the message lists those it has.
func TestUnknownInstanceType(t *testing.T) {
	f := newLimitsFixture(t, "host")
	b := f.start("--workflow mac")
	if b.Status != build.Failed {
		t.Fatalf("build of an unknown instance type is %s, want failed at once", b.Status)
	}
	want := `instance_type "mac_mini_m2" is not available on this server; available instance types: linux, small`
	if b.Message != want {
		t.Errorf("message %q, want %q", b.Message, want)
	}
	// The host driver says it does not enforce the limits.
	b = f.start("--workflow quiet")
	b, logs := f.wait(b.ID, 60*time.Second)
	if b.Status != build.Finished || !strings.Contains(logs, "Instance type: linux (2 vCPU, 512 MiB memory, 512 processes, 128 MiB disk and /tmp each; not enforced by the host driver)") {
		t.Errorf("quiet build %s: log:\n%s", b.Status, logs)
	}
}

// TestSandboxLimits: with the sandbox driver, a memory hog fails its build
// with the out-of-memory message, a /tmp filler gets ENOSPC and its build
// ends normally, a disk filler fails its build with the out-of-disk
// message, and a fork bomb stops at the pids limit while a build
// beside it finishes with its complete log.
func TestSandboxLimits(t *testing.T) {
	f := newLimitsFixture(t, "sandbox")

	hog := f.start("--workflow hog")
	b, logs := f.wait(hog.ID, 120*time.Second)
	if b.Status != build.Failed || b.Message != "the build ran out of memory (limit 256 MiB)" {
		t.Errorf("hog build: %s %q, want failed with the out-of-memory message; log:\n%s", b.Status, b.Message, logs)
	}
	if !strings.Contains(logs, "quota=100000") || strings.Contains(logs, "SHOULD-NOT-RUN") {
		t.Errorf("hog build log: want quota=100000 and no SHOULD-NOT-RUN:\n%s", logs)
	}

	// A /tmp filler and a build beside it.
	filler := f.start("--workflow filler")
	quiet := f.start("--workflow quiet")
	f.checkQuiet(quiet.ID)
	b, logs = f.wait(filler.ID, 120*time.Second)
	if b.Status != build.Finished || !strings.Contains(logs, "No space left on device") || !strings.Contains(logs, "dd-exit=1") || !strings.Contains(logs, "filler-done") {
		t.Errorf("filler build: %s %q; log:\n%s", b.Status, b.Message, logs)
	}

	// A disk filler (the writable layer) and a build beside it.
	disk := f.start("--workflow diskfill")
	quiet = f.start("--workflow quiet")
	f.checkQuiet(quiet.ID)
	b, logs = f.wait(disk.ID, 120*time.Second)
	if b.Status != build.Failed || b.Message != "the build ran out of disk space (disk is full, limit 64 MiB)" ||
		!strings.Contains(logs, "No space left on device") || strings.Contains(logs, "SHOULD-NOT-RUN") {
		t.Errorf("disk filler build: %s %q, want failed with the out-of-disk message; log:\n%s", b.Status, b.Message, logs)
	}

	// A fork bomb and a build beside it.
	bomb := f.start("--workflow bomb")
	quiet = f.start("--workflow quiet")
	f.checkQuiet(quiet.ID)
	b, logs = f.wait(bomb.ID, 120*time.Second)
	if b.Status != build.Finished || !strings.Contains(logs, "bomb-stopped") || !strings.Contains(logs, "after-bomb") {
		t.Errorf("bomb build: %s %q; log:\n%s", b.Status, b.Message, logs)
	}
}

// checkQuiet waits for the quiet build id and checks that it finished with
// its whole log: q=1 to q=5000, in order.
func (f *fixture) checkQuiet(id int64) {
	f.t.Helper()
	b, logs := f.wait(id, 120*time.Second)
	var got []string
	for _, line := range strings.Split(logs, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "q=") {
			got = append(got, line)
		}
	}
	ok := len(got) == 5000
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == fmt.Sprintf("q=%d", i+1)
	}
	if b.Status != build.Finished || !ok {
		f.t.Errorf("build %d beside a hostile one: %s %q, %d of 5000 lines in order: %v", id, b.Status, b.Message, len(got), ok)
	}
}
