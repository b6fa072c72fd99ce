package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hangar-ci/hangar/internal/image/imagetest"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

const (
	testBridge = "hangart0"
	testSubnet = "10.213.99.0/24"
	// A second driver's, for the tests of two drivers on one host.
	testBridge2 = "hangart1"
	testSubnet2 = "10.213.89.0/24"
)

// requireHost skips the test unless it can run real machines.
func requireHost(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("sandbox tests need root (network namespaces, bridge, iptables, runc)")
	}
	for _, bin := range []string{"runc", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("sandbox tests need %s: apt-get install runc iptables", bin)
		}
	}
}

// testImage returns the root of the Debian test image (built once per
// host, see imagetest).
func testImage(tb testing.TB) *machine.Image {
	tb.Helper()
	testImageOnce.Do(func() {
		s, n := imagetest.Debian(tb)
		testImageRoot, _, testImageErr = s.Root(n)
	})
	if testImageErr != nil {
		tb.Fatal(testImageErr)
	}
	if testImageRoot == nil {
		tb.Skip("no test image")
	}
	return testImageRoot
}

var (
	testImageOnce sync.Once
	testImageRoot *machine.Image
	testImageErr  error
)

// newTestDriver returns a driver on the test bridge with a fresh StateDir,
// closed (and checked for leftovers) when the test ends.
func newTestDriver(tb testing.TB, edit func(*Config)) *Driver {
	tb.Helper()
	requireHost(tb)
	cfg := Config{
		Subnet:   testSubnet,
		Bridge:   testBridge,
		StateDir: filepath.Join(tb.TempDir(), "state"),
	}
	if edit != nil {
		edit(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		assertHostClean(tb, d)
	})
	return d
}

// assertHostClean checks that the driver's shared resources are gone.
func assertHostClean(tb testing.TB, d *Driver) {
	tb.Helper()
	if _, err := netlink.LinkByName(d.cfg.Bridge); err == nil {
		tb.Errorf("bridge %s still exists after Close", d.cfg.Bridge)
	}
	for _, r := range d.cgroupRoots {
		if p := filepath.Join(r, cgroupParent(d.cfg.Bridge)); exists(p) {
			tb.Errorf("cgroup %s still exists after Close", p)
		}
	}
	nss, _ := os.ReadDir(netnsDir)
	for _, e := range nss {
		if strings.HasPrefix(e.Name(), hostPrefix+d.cfg.Bridge+"_") {
			tb.Errorf("network namespace %s still exists after Close", e.Name())
		}
	}
	for _, table := range []string{"filter", "nat"} {
		out, err := iptables(table, "-S")
		if err != nil {
			tb.Errorf("list iptables: %v", err)
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, chainPrefix) && strings.Contains(line, d.cfg.Bridge) {
				tb.Errorf("iptables %s still has %q after Close", table, line)
			}
		}
	}
}

// syncBuffer gathers a machine's output; waitFor waits for a line of it.
type syncBuffer struct{ syncbuf.Buffer }

// waitFor waits until the output contains s.
func (b *syncBuffer) waitFor(tb testing.TB, s string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			tb.Fatalf("no %q in the machine's output within %v; output:\n%s", s, timeout, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startShell starts machine name running `sh -c script` and destroys it
// when the test ends.
func startShell(tb testing.TB, d *Driver, name, script string, mounts ...machine.Mount) (*Machine, *syncBuffer) {
	tb.Helper()
	out := &syncBuffer{}
	m, err := d.Start(context.Background(), machine.Spec{
		Image:   testImage(tb),
		Name:    name,
		Builder: "/bin/sh",
		Args:    []string{"-c", script},
		Env:     []string{"LANG=C"},
		Output:  out,
		Mounts:  mounts,
	})
	if err != nil {
		tb.Fatalf("Start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := m.Destroy(context.Background()); err != nil {
			tb.Errorf("Destroy %s: %v", name, err)
		}
	})
	return m.(*Machine), out
}

// runShell runs script in a fresh machine to completion and returns its
// output.
func runShell(tb testing.TB, d *Driver, name, script string, mounts ...machine.Mount) string {
	tb.Helper()
	m, out := startShell(tb, d, name, script, mounts...)
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("machine %s: %v; output:\n%s", name, err, out.String())
		}
	case <-time.After(30 * time.Second):
		tb.Fatalf("machine %s did not finish; output:\n%s", name, out.String())
	}
	return out.String()
}

// processesWith returns the pids whose command line is s (arguments
// separated by spaces).
func processesWith(s string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")) == s {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
