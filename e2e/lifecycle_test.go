package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
)

// The sandbox variant's own network, apart from every other test's.
const (
	lifecycleBridge = "hglc0"
	lifecycleSubnet = "10.213.77.0/24"
)

// TestStopDuringBuildHost: SIGINT then SIGTERM at once (Ctrl-C in a
// terminal plus a script forwarding TERM) still stops the server cleanly:
// the running build ends failed, saying the server shut down, and nothing
// of its machine is left.
func TestStopDuringBuildHost(t *testing.T) { testStopDuringBuild(t, "host") }

// TestStopDuringBuildSandbox also checks that the driver's bridge and
// iptables chains are gone.
func TestStopDuringBuildSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox driver needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the sandbox driver needs runc (apt-get install runc)")
	}
	testStopDuringBuild(t, "sandbox")
}

func testStopDuringBuild(t *testing.T, driver string) {
	var args []string
	if driver == "sandbox" {
		args = []string{"--sandbox-bridge", lifecycleBridge, "--sandbox-subnet", lifecycleSubnet}
	}
	data := t.TempDir()
	s := harness.StartServer(t, harness.Options{Driver: driver, Args: args, Data: data})
	f := &fixture{t: t, s: s, run: marker(), driver: driver, bridge: lifecycleBridge}
	f.repo = harness.NewRepo(t, map[string]string{"codemagic.yaml": `
workflows:
  long:
    environment:
      vars:
        E2E_RUN: "` + f.run + `"
    scripts:
      - name: Long
        script: echo long-step-started; sleep 600
`})
	if r := s.Hangar("app", "add", "demo", "--repo", f.repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	b := f.start("--workflow long")
	waitLog(t, f, b.ID, "long-step-started")
	name := fmt.Sprintf("build-%d", b.ID)
	// Control: the leftover checks see the running build and the driver's
	// network, so they would see them left behind.
	if left := f.leftovers(b.ID, name); len(left) < 2 {
		t.Fatalf("the leftover check sees too little of a running build: %v", left)
	}
	if driver == "sandbox" {
		if net := driverNetwork(t); len(net) < 3 {
			t.Fatalf("the network check sees too little of a running driver: %v", net)
		}
	}

	// SIGINT, and SIGTERM as soon as the server has reacted to it (as when
	// a script forwards the terminal's Ctrl-C): the second signal must not
	// cut the cleanup short.
	if err := s.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitServerLog(t, s, "stopping builds")
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, err := s.Wait(90 * time.Second)
	if !exited {
		t.Fatalf("the server did not exit within 90s of SIGINT+SIGTERM")
	}
	if err != nil {
		t.Errorf("the server exited with %v, want status 0", err)
	}
	log := s.Log()
	for _, want := range []string{"second signal", "hangar server stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("server log lacks %q", want)
		}
	}
	// Nothing of the build's machine (processes, directory, netns, veth,
	// runc state) is left, though the server that made it is gone.
	if left := f.leftovers(b.ID, name); len(left) > 0 {
		t.Errorf("the stopped server left behind: %s", strings.Join(left, "; "))
	}
	if driver == "sandbox" {
		if net := driverNetwork(t); len(net) > 0 {
			t.Errorf("the stopped server left behind: %s", strings.Join(net, "; "))
		}
	}

	// The build was ended by this server's shutdown (not marked
	// interrupted by the next start): a new server on the same data says so.
	f.s = harness.StartServer(t, harness.Options{Driver: driver, Args: args, Data: data})
	got := f.show(b.ID)
	if got.Status != build.Failed || !strings.Contains(got.Message, "the server shut down during the build") {
		t.Errorf("build after the stop: %s %q, want failed, the server shut down", got.Status, got.Message)
	}
	if st := stepStatuses(got)["Long"]; st != build.StepCanceled {
		t.Errorf("step Long: %s, want canceled", st)
	}
	if strings.Contains(f.s.Log(), "interrupted by an earlier stop") {
		t.Errorf("the restarted server found builds the stopped one left running")
	}
}

// waitServerLog waits until the server's log contains want.
func waitServerLog(t *testing.T, s *harness.Server, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.Log(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the server never logged %q", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// driverNetwork lists the sandbox driver's host network state for
// lifecycleBridge: the bridge and its iptables chains and rules.
func driverNetwork(t *testing.T) []string {
	t.Helper()
	var found []string
	if _, err := os.Stat("/sys/class/net/" + lifecycleBridge); err == nil {
		found = append(found, "bridge "+lifecycleBridge)
	}
	for _, table := range []string{"filter", "nat"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t %s -S: %v\n%s", table, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "HANGAR-") && strings.Contains(line, "-"+lifecycleBridge) {
				found = append(found, table+": "+line)
			}
		}
	}
	return found
}
