package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/machine"
)

// The limits tests' own bridge and subnet.
const (
	limitsBridge = "hglim0"
	limitsSubnet = "10.213.61.0/24"
)

func newLimitsDriver(t *testing.T) *Driver {
	t.Helper()
	return newTestDriver(t, func(c *Config) {
		c.Bridge, c.Subnet = limitsBridge, limitsSubnet
	})
}

// startLimited starts machine name with res running `sh -c script`,
// destroyed when the test ends.
func startLimited(t *testing.T, d *Driver, name string, res machine.Resources, script string) (*Machine, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	m, err := d.Start(context.Background(), machine.Spec{
		Image: testImage(t),
		Name:  name, Builder: "/bin/sh", Args: []string{"-c", script},
		Env: []string{"LANG=C"}, Output: out, Resources: res,
	})
	if err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy %s: %v", name, err)
		}
	})
	return m.(*Machine), out
}

// cgroupFile reads a file of machine m's cgroup in hierarchy ctrl.
func cgroupFile(t *testing.T, d *Driver, m *Machine, ctrl, file string) string {
	t.Helper()
	for _, r := range d.cgroupRoots {
		p := filepath.Join(r, m.host.cgroup, file)
		if filepath.Base(r) != ctrl && !strings.Contains(filepath.Base(r), ctrl) {
			continue
		}
		if data, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(data))
		}
	}
	t.Fatalf("no %s in machine %s's %s cgroup", file, m.name, ctrl)
	return ""
}

// TestLimitsApplied: the CPU quota, memory (and memory+swap) limit and
// pids limit are set on the machine's cgroups, and /tmp is a tmpfs of the
// Disk size that fills up with ENOSPC.
func TestLimitsApplied(t *testing.T) {
	d := newLimitsDriver(t)
	res := machine.Resources{CPUs: 0.5, Memory: 128 << 20, Pids: 64, Disk: 16 << 20}
	m, out := startLimited(t, d, "lim-1", res, `
dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | head -n 1
df -k /tmp | tail -n 1
echo "inside quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) pids=$(cat /sys/fs/cgroup/pids/pids.max)"
echo ready
exec sleep 300`)
	out.waitFor(t, "ready", 30*time.Second)
	if !strings.Contains(out.String(), "No space left on device") {
		t.Errorf("filling /tmp: no ENOSPC; output:\n%s", out.String())
	}
	// df -k: "tmpfs 16384 16384 0 100% /tmp"
	if f := strings.Fields(strings.Split(strings.SplitAfter(out.String(), "\n")[1], "\n")[0]); len(f) < 2 || f[1] != "16384" {
		t.Errorf("/tmp is not 16 MiB; output:\n%s", out.String())
	}
	if want := fmt.Sprintf("inside quota=50000 mem=%d pids=64", 128<<20); !strings.Contains(out.String(), want) {
		t.Errorf("the machine does not see its limits in /sys/fs/cgroup (want %q); output:\n%s", want, out.String())
	}
	if got := cgroupFile(t, d, m, "cpu", "cpu.cfs_quota_us"); got != "50000" {
		t.Errorf("cpu.cfs_quota_us %s, want 50000", got)
	}
	if got := cgroupFile(t, d, m, "cpu", "cpu.cfs_period_us"); got != "100000" {
		t.Errorf("cpu.cfs_period_us %s, want 100000", got)
	}
	if got := cgroupFile(t, d, m, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Errorf("memory.limit_in_bytes %s, want %d", got, 128<<20)
	}
	if d.memsw {
		if got := cgroupFile(t, d, m, "memory", "memory.memsw.limit_in_bytes"); got != strconv.Itoa(128<<20) {
			t.Errorf("memory.memsw.limit_in_bytes %s, want %d", got, 128<<20)
		}
	}
	if got := cgroupFile(t, d, m, "pids", "pids.max"); got != "64" {
		t.Errorf("pids.max %s, want 64", got)
	}
	if killed, _ := m.OOMKilled(); killed {
		t.Error("OOMKilled is true for a machine that stayed within its memory")
	}
}

// TestOOMKilled: a memory hog in a machine with a small memory limit is
// killed by the kernel, the machine goes on, and OOMKilled says so.
func TestOOMKilled(t *testing.T) {
	d := newLimitsDriver(t)
	m, out := startLimited(t, d, "lim-oom", machine.Resources{Memory: 64 << 20}, `
head -c 512M /dev/zero | tail
echo "tail=$?"
exec sleep 300`)
	out.waitFor(t, "tail=", 60*time.Second)
	if !strings.Contains(out.String(), "tail=137") {
		t.Errorf("the hog was not killed (want tail=137); output:\n%s", out.String())
	}
	killed, limit := m.OOMKilled()
	if !killed || limit != 64<<20 {
		t.Errorf("OOMKilled = %v, %d; want true, %d", killed, limit, 64<<20)
	}
}

// TestForkBombContained: a fork bomb stops at the machine's pids limit,
// and a machine beside it runs to the end with all its output.
func TestForkBombContained(t *testing.T) {
	d := newLimitsDriver(t)
	bomb, _ := startLimited(t, d, "lim-bomb", machine.Resources{Pids: 64}, `
f() { f | f & }
f 2>/dev/null &
exec sleep 300`)
	// The bomb has hit the limit when the pids cgroup has refused forks.
	deadline := time.Now().Add(30 * time.Second)
	for {
		events := cgroupFile(t, d, bomb, "pids", "pids.events")
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(events, "max")))
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fork bomb did not reach the pids limit within 30s (pids.events %q, pids.current %s)",
				events, cgroupFile(t, d, bomb, "pids", "pids.current"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cur, _ := strconv.Atoi(cgroupFile(t, d, bomb, "pids", "pids.current")); cur > 64 {
		t.Errorf("pids.current %d above the limit 64", cur)
	}
	// A machine beside it: complete output.
	m, out := startLimited(t, d, "lim-beside", machine.Resources{Pids: 64}, `
i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo done`)
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("machine beside the bomb: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("machine beside the bomb did not finish; output:\n%s", out.String())
	}
	var want strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	want.WriteString("done\n")
	if out.String() != want.String() {
		t.Errorf("machine beside the bomb: output incomplete (%d bytes, want %d)", len(out.String()), want.Len())
	}
	if err := bomb.Destroy(context.Background()); err != nil {
		t.Errorf("Destroy the bomb: %v", err)
	}
}

// TestWritableLayerDiskLimit: what a machine writes outside /tmp (its home,
// and with sudo anywhere in its root) lands on a file system of its own of
// the Disk size: filling it gives ENOSPC in that machine only, a machine
// beside it writes on, and Destroy leaves no loop device behind.
func TestWritableLayerDiskLimit(t *testing.T) {
	d := newLimitsDriver(t)
	full, fullOut := startLimited(t, d, "disk-full", machine.Resources{Disk: 32 << 20}, `
dd if=/dev/zero of=/home/builder/fill bs=1M count=64 2>&1 | grep -o 'No space left on device' | head -n 1
su builder -c 'sudo -n dd if=/dev/zero of=/usr/fill bs=1M count=64' 2>&1 | grep -o 'No space left on device' | head -n 1
echo "root-size=$(df -k / | awk 'NR==2 {print $2}')"
echo ready
exec sleep 300`)
	fullOut.waitFor(t, "ready", 30*time.Second)
	if n := strings.Count(fullOut.String(), "No space left on device"); n != 2 {
		t.Errorf("filling home and /usr: %d ENOSPC, want 2; output:\n%s", n, fullOut.String())
	}
	var size int
	if _, err := fmt.Sscanf(fullOut.String()[strings.Index(fullOut.String(), "root-size="):], "root-size=%d", &size); err != nil || size > 32<<10 || size < 16<<10 {
		t.Errorf("df / in the machine: %d KiB (%v), want about 32 MiB; output:\n%s", size, err, fullOut.String())
	}
	other := runLimited(t, d, "disk-other", machine.Resources{Disk: 32 << 20}, `
dd if=/dev/zero of=/home/builder/data bs=1M count=8 2>/dev/null && echo other-wrote`)
	if !strings.Contains(other, "other-wrote") {
		t.Errorf("a machine beside the full one could not write:\n%s", other)
	}
	if err := full.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if loops := loopsBackedIn(full.layout.dir); len(loops) > 0 {
		t.Errorf("loop devices of the driver's machines left after Destroy: %v", loops)
	}
}

// runLimited runs script in a fresh machine with res to its end and
// returns its output.
func runLimited(t *testing.T, d *Driver, name string, res machine.Resources, script string) string {
	t.Helper()
	m, out := startLimited(t, d, name, res, script)
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("machine %s: %v; output:\n%s", name, err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("machine %s did not finish; output:\n%s", name, out.String())
	}
	return out.String()
}
