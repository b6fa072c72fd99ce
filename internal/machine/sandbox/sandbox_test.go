// These tests run real machines: they need root, runc, iptables and sudo,
// and skip otherwise. They use the bridge hangart0 and 10.213.99.0/24, so a
// Hangar server on the default hangar0 is not disturbed.

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hangar-ci/hangar/internal/machine"
)

// TestStateDirInVarLib: machines' layers in /var/lib (the default
// <data>/machines of a data dir there) work, and machines see neither
// their own nor other machines' layers.
func TestStateDirInVarLib(t *testing.T) {
	requireHost(t)
	data, err := os.MkdirTemp("/var/lib", "hangar-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	state := filepath.Join(data, "machines")
	d := newTestDriver(t, func(c *Config) { c.StateDir = state; c.Mask = []string{data} })
	other, _ := startShell(t, d, "other", "echo other-secret > /var/tmp/x; exec sleep 31360")
	out := runShell(t, d, "inside", fmt.Sprintf(`
echo hi > /var/tmp/written && cat /var/tmp/written
echo "list=$(ls -A %[1]s 2>&1 | tr '\n' ' ')"
echo "machines=$(ls -A %[2]s 2>&1 | tr '\n' ' ')"
cat %[2]s/other/upper/var/tmp/x 2>/dev/null || true
`, data, state))
	if !strings.Contains(out, "hi\n") || !strings.Contains(out, "list=ls: cannot access") || strings.Contains(out, "other-secret") {
		t.Errorf("a machine with its layers in /var:\n%s", out)
	}
	if err := other.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(state, "other")) {
		t.Errorf("machine dir left in %s", state)
	}
}

func TestBuilderRootAndSudo(t *testing.T) {
	d := newTestDriver(t, nil)
	const marker = "/usr/local/bin/hangar-test-x"
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("%s exists on the host before the test", marker)
	}
	out := runShell(t, d, "sudo", `
echo "uid=$(id -u)"
echo "env=$HANGAR_HOME:$HANGAR_USER"
su builder -c 'sudo -n touch `+marker+`' && test -f `+marker+` && echo sudo-ok
su builder -c 'echo "home=$HOME"; echo "whoami=$(whoami)"; touch ~/f && echo home-writable'
echo "owner=$(stat -c %U /home/builder)"
su builder -c 'touch /usr/local/bin/y' 2>/dev/null || echo builder-not-root
timeout 3 getent hosts sudo >/dev/null && echo hostname-resolves
timeout 3 getent hosts hangar.example.com; test $? = 124 && echo dns-lookup-hangs || true
`)
	for _, want := range []string{"uid=0", "env=/home/builder:builder", "sudo-ok", "home=/home/builder",
		"whoami=builder", "home-writable", "owner=builder", "builder-not-root", "hostname-resolves"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dns-lookup-hangs") {
		t.Errorf("a name lookup without egress hangs instead of failing")
	}
	if _, err := os.Stat(marker); err == nil {
		os.Remove(marker)
		t.Errorf("sudo inside the machine created %s on the host", marker)
	}
}

// TestHostFilesInvisible: a machine boots from its image, so root-only
// files planted in the host's /etc, /var and /opt do not exist in it, even
// for root through sudo, and the image's own files are there instead.
func TestHostFilesInvisible(t *testing.T) {
	requireHost(t)
	var planted []string
	for _, dir := range []string{"/etc", "/var/tmp", "/opt"} {
		f, err := os.CreateTemp(dir, "hangar-test-secret-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.Name()) })
		if _, err := f.WriteString("host-secret-" + filepath.Base(dir)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Chmod(f.Name(), 0o600); err != nil {
			t.Fatal(err)
		}
		planted = append(planted, f.Name())
	}
	d := newTestDriver(t, nil)
	out := runShell(t, d, "hostfiles", fmt.Sprintf(`
for f in %s; do su builder -c "sudo -n cat $f" 2>/dev/null || echo "absent $f"; done
su builder -c 'sudo -n id -u'
. /etc/os-release && echo "os=$ID"
`, strings.Join(planted, " ")))
	for _, p := range planted {
		if !strings.Contains(out, "absent "+p) {
			t.Errorf("the machine sees the host's %s:\n%s", p, out)
		}
	}
	if strings.Contains(out, "host-secret") {
		t.Errorf("the machine read a host secret:\n%s", out)
	}
	if !strings.Contains(out, "\n0\n") || !strings.Contains(out, "os=debian") {
		t.Errorf("sudo in the machine (the positive control) or the image's /etc/os-release failed:\n%s", out)
	}
}

func TestSecretsHidden(t *testing.T) {
	base := t.TempDir()
	exposed := filepath.Join(base, "exposed")
	secret := filepath.Join(exposed, "secret")
	state := filepath.Join(exposed, "state")
	mirror := filepath.Join(secret, "mirror")
	for _, dir := range []string{mirror, state} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{
		filepath.Join(exposed, "pub"):   "public-data",
		filepath.Join(secret, "token"):  "secret-token",
		filepath.Join(mirror, "HEAD"):   "mirror-data",
		filepath.Join(base, "unlisted"): "unlisted-data",
	} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := newTestDriver(t, func(c *Config) {
		c.StateDir = state
		c.Mask = []string{secret}
	})
	script := fmt.Sprintf(`
cat /mnt/x/pub; echo
cat /mnt/mirror/HEAD; echo
cat /mnt/x/secret/token 2>/dev/null; echo "secret-list=$(ls -A /mnt/x/secret 2>&1 | tr '\n' ' ')"
echo "state-list=$(ls -A /mnt/x/state 2>&1 | tr '\n' ' ')"
cat %[1]s/unlisted 2>/dev/null || echo base-absent
ls %[2]s >/dev/null 2>&1 || echo statedir-absent
`, base, state)
	out := runShell(t, d, "secrets", script,
		machine.Mount{Source: exposed, Target: "/mnt/x"},
		machine.Mount{Source: mirror, Target: "/mnt/mirror"})
	for _, want := range []string{"public-data", "mirror-data", "secret-list=\n", "state-list=\n", "base-absent",
		"statedir-absent"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, leak := range []string{"secret-token", "unlisted-data"} {
		if strings.Contains(out, leak) {
			t.Errorf("machine read %q:\n%s", leak, out)
		}
	}
	// Mounting a masked path itself, or anything from the state dir, is
	// refused.
	for _, src := range []string{secret, state, filepath.Join(state, ".runc")} {
		_, err := d.Start(context.Background(), machine.Spec{Name: "refused", Builder: "/bin/sh", Image: testImage(t),
			Mounts: []machine.Mount{{Source: src, Target: "/mnt/y"}}})
		if err == nil {
			t.Errorf("Start with a mount of %s succeeded", src)
		}
	}
}

func TestNetworkIsolation(t *testing.T) {
	d := newTestDriver(t, nil)
	br := d.BridgeIP().String()

	// A listener made by Listen, another one on the bridge address that is
	// not, and one on the host's loopback.
	allowed, err := d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := allowed.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	other, err := net.Listen("tcp4", net.JoinHostPort(br, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	loopback, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loopback.Close()
	port := func(l net.Listener) string { return strconv.Itoa(l.Addr().(*net.TCPAddr).Port) }

	// Machine A serves on 7000 and checks it reaches its own listener over
	// eth0 (the positive control for B's attempt).
	a, outA := startShell(t, d, "net-a", `
nc -lk 7000 >/dev/null &
sleep 0.3
nc -z -w 2 $(hostname -I) 7000 && echo a-self-ok
echo a-ready
wait`)
	outA.waitFor(t, "a-ready", 10*time.Second)
	if !strings.Contains(outA.String(), "a-self-ok") {
		t.Fatalf("A cannot reach its own listener, the isolation check would prove nothing:\n%s", outA.String())
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(a.IP().String(), "7000"), 2*time.Second); err != nil {
		t.Fatalf("host cannot reach A's listener: %v", err)
	} else {
		c.Close()
	}

	outB := runShell(t, d, "net-b", fmt.Sprintf(`
nc -z -w 2 %[1]s 7000 && echo b-reached-a || echo b-blocked-a
nc -z -w 2 %[2]s %[3]s && echo listen-ok || echo listen-blocked
nc -z -w 2 %[2]s %[4]s && echo other-reached || echo other-blocked
nc -z -w 2 127.0.0.1 %[5]s && echo loopback-reached || echo loopback-blocked
`, a.IP(), br, port(allowed), port(other), port(loopback)))
	for _, want := range []string{"b-blocked-a", "listen-ok", "other-blocked", "loopback-blocked"} {
		if !strings.Contains(outB, want) {
			t.Errorf("B's output lacks %q:\n%s", want, outB)
		}
	}
	select {
	case <-accepted:
	case <-time.After(time.Second):
		t.Errorf("the Listen listener accepted no connection from B")
	}

	// Bridge port isolation alone keeps machines apart: without the
	// FORWARD rules, C still cannot reach A.
	if _, err := iptables("filter", d.fw.marked("-D", "FORWARD", "-j", d.fw.fwd)...); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := iptables("filter", d.fw.marked("-I", "FORWARD", "1", "-j", d.fw.fwd)...); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	outC := runShell(t, d, "net-c", fmt.Sprintf("nc -z -w 2 %s 7000 && echo c-reached-a || echo c-blocked-a", a.IP()))
	restore()
	if !strings.Contains(outC, "c-blocked-a") {
		t.Errorf("without the FORWARD rules, C reached A: port isolation is missing:\n%s", outC)
	}

	// Closing the listener withdraws its rule.
	rule := strings.Join(d.fw.portRule(allowed.Addr().(*net.TCPAddr).Port), " ")
	if !strings.Contains(chainRules(t, "filter", d.fw.in), "--dport "+port(allowed)) {
		t.Errorf("no rule for the Listen port %s in %s", port(allowed), d.fw.in)
	}
	allowed.Close()
	if s := chainRules(t, "filter", d.fw.in); strings.Contains(s, "--dport "+port(allowed)) {
		t.Errorf("rule %q still in %s after closing the listener:\n%s", rule, d.fw.in, s)
	}
}

func chainRules(t *testing.T, table, chain string) string {
	t.Helper()
	out, err := iptables(table, "-S", chain)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestDestroyLeavesNothing(t *testing.T) {
	d := newTestDriver(t, nil)
	m, out := startShell(t, d, "destroy", `
setsid sleep 31337 &
su builder -c 'sudo -n setsid sleep 31338 &'
echo started
exec sleep 31336`)
	out.waitFor(t, "started", 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(processesWith("sleep 31337")) == 0 || len(processesWith("sleep 31338")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the machine's sleeps never showed up on the host (positive control); output:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	hostVeth := m.host.veth
	if l, err := netlink.LinkByName(hostVeth); err != nil {
		t.Fatalf("no host veth %s: %v", hostVeth, err)
	} else if l.Attrs().MasterIndex != d.bridgeIndex {
		t.Errorf("host veth %s is not on the bridge", hostVeth)
	}

	// Concurrent Destroys, and a Wait, all return.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Destroy(context.Background())
		}()
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- m.Wait() }()
	wg.Wait()
	took := time.Since(start)
	for _, err := range errs {
		if err != nil {
			t.Errorf("Destroy: %v", err)
		}
	}
	if took > 2*time.Second {
		t.Errorf("Destroy took %v", took)
	}
	t.Logf("Destroy took %v", took)
	select {
	case err := <-waitErr:
		if err == nil {
			t.Errorf("Wait returned nil for a killed builder")
		}
	case <-time.After(time.Second):
		t.Errorf("Wait did not return after Destroy")
	}
	if err := m.Destroy(context.Background()); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	assertMachineGone(t, d, m.name)
	for _, c := range []string{"sleep 31337", "sleep 31338", "sleep 31336"} {
		if pids := processesWith(c); len(pids) > 0 {
			t.Errorf("%q still runs after Destroy: pids %v", c, pids)
		}
	}
}

// assertMachineGone checks that nothing of machine name is left, and
// nothing of any machine if the driver has none alive.
func assertMachineGone(t *testing.T, d *Driver, name string) {
	t.Helper()
	h := machineHostNames(d.cfg.Bridge, name)
	d.mu.Lock()
	alive := len(d.machines)
	d.mu.Unlock()
	entries, err := os.ReadDir(d.runcRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == h.id || alive == 0 {
			t.Errorf("runc container %s still in the state root", e.Name())
		}
	}
	if _, err := os.Lstat(h.netnsPath()); err == nil {
		t.Errorf("network namespace %s still exists", h.id)
	}
	if _, err := netlink.LinkByName(h.veth); err == nil {
		t.Errorf("host veth %s still exists", h.veth)
	}
	if alive == 0 {
		// Other drivers (another Hangar on this host) may have namespaces
		// of their own: only this driver's bridge is checked as a whole.
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == d.bridgeIndex {
				t.Errorf("link %s still on the bridge", l.Attrs().Name)
			}
		}
	}
	mounts, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		// Live machines have their root (and disk) mounted: only this
		// one's, or all when none is alive.
		if within(m.point, filepath.Join(d.cfg.StateDir, name)) || alive == 0 && within(m.point, d.cfg.StateDir) {
			t.Errorf("%s still mounted under the state dir", m.point)
		}
	}
	if loops := loopsBackedIn(filepath.Join(d.cfg.StateDir, name)); len(loops) > 0 {
		t.Errorf("loop devices of machine %s left: %v", name, loops)
	}
	if _, err := os.Lstat(filepath.Join(d.cfg.StateDir, name)); err == nil {
		t.Errorf("machine dir of %s still exists", name)
	}
	for _, r := range d.cgroupRoots {
		if _, err := os.Stat(filepath.Join(r, h.cgroup)); err == nil {
			t.Errorf("cgroup %s still exists", filepath.Join(r, h.cgroup))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.machines[name]; ok {
		t.Errorf("driver still lists machine %s", name)
	}
	if mounts, err := readMountinfo(); err != nil {
		t.Fatal(err)
	} else if slices.ContainsFunc(mounts, func(m mountEntry) bool { return m.point == h.netnsPath() }) {
		t.Errorf("network namespace %s still mounted", h.netnsPath())
	}
	if len(d.usedIPs) > len(d.machines) {
		t.Errorf("%d addresses leased for %d machines", len(d.usedIPs), len(d.machines))
	}
}

func TestStartErrorCleansUp(t *testing.T) {
	d := newTestDriver(t, nil)
	// runc fails late: the mount target lies under a file.
	out := &syncBuffer{}
	_, err := d.Start(context.Background(), machine.Spec{
		Image:   testImage(t),
		Name:    "fail",
		Builder: "/bin/sh",
		Args:    []string{"-c", "echo should-not-run"},
		Output:  out,
		Mounts:  []machine.Mount{{Source: t.TempDir(), Target: "/etc/hostname/x"}},
	})
	if err == nil {
		t.Fatal("Start succeeded with a mount under a file")
	}
	t.Logf("Start error: %v", err)
	assertMachineGone(t, d, "fail")

	// A name in use: the second Start fails and leaves the first alone.
	first, firstOut := startShell(t, d, "dup", "echo up; exec sleep 1000")
	firstOut.waitFor(t, "up", 10*time.Second)
	if _, err := d.Start(context.Background(), machine.Spec{Name: "dup", Builder: "/bin/sh", Image: testImage(t)}); err == nil {
		t.Fatal("second Start of the same name succeeded")
	}
	if _, err := os.Lstat(first.host.netnsPath()); err != nil {
		t.Errorf("the failed Start removed the first machine's netns: %v", err)
	}
	if _, err := os.Stat(first.layout.dir); err != nil {
		t.Errorf("the failed Start removed the first machine's dir: %v", err)
	}

	// A canceled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Start(ctx, machine.Spec{Name: "canceled", Builder: "/bin/sh", Image: testImage(t)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a canceled context: %v", err)
	}
	assertMachineGone(t, d, "canceled")
}

func TestStdinAndExitStatus(t *testing.T) {
	d := newTestDriver(t, nil)
	out := &syncBuffer{}
	pr, pw := io.Pipe()
	defer pw.Close()
	m, err := d.Start(context.Background(), machine.Spec{
		Image:   testImage(t),
		Name:    "stdin",
		Builder: "/bin/sh",
		Args:    []string{"-c", `read line; echo "got=$line"; exit 3`},
		Stdin:   pr,
		Output:  out,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy(context.Background())
	if _, err := io.WriteString(pw, "credentials\n"); err != nil {
		t.Fatal(err)
	}
	// Wait must return although the runner's stdin stays open.
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Errorf("Wait: %v, want exit status 3", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
	}
	if !strings.Contains(out.String(), "got=credentials") {
		t.Errorf("output: %q", out.String())
	}
}

func TestEgressRules(t *testing.T) {
	d := newTestDriver(t, func(c *Config) { c.Egress = true })
	if s := chainRules(t, "nat", d.fw.nat); !strings.Contains(s, "MASQUERADE") {
		t.Errorf("no MASQUERADE in %s:\n%s", d.fw.nat, s)
	}
	// New is idempotent: a second driver on the same bridge (as after a
	// crash) replaces the rules instead of adding copies.
	if err := d.fw.setup(egressPolicy{on: true}); err != nil {
		t.Fatal(err)
	}
	out, err := iptables("filter", "-S", "FORWARD")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "-j "+d.fw.fwd); n != 1 {
		t.Errorf("%d jumps to %s after a second setup, want 1:\n%s", n, d.fw.fwd, out)
	}
}

func TestRecoverAfterCrash(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	d := newTestDriver(t, func(c *Config) { c.StateDir = state })
	m, out := startShell(t, d, "crashed", "echo up; exec sleep 31339")
	out.waitFor(t, "up", 10*time.Second)
	// Simulate a crash: drop the driver without cleaning up, keeping the
	// container, netns and dir.
	d.lock.Close()
	d2, err := New(d.cfg)
	if err != nil {
		t.Fatalf("New after a crash: %v", err)
	}
	assertMachineGone(t, d2, m.name)
	if pids := processesWith("sleep 31339"); len(pids) > 0 {
		t.Errorf("the crashed driver's machine still runs: %v", pids)
	}
	// The old driver's own cleanup must not fail now.
	d.mu.Lock()
	delete(d.machines, m.name)
	d.mu.Unlock()
	m.destroyed = true
	if err := d2.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	assertHostClean(t, d2)
}

func TestMirrorInMaskedDataDirIsCloneable(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git on the host")
	}
	data := filepath.Join(t.TempDir(), "data")
	repo := filepath.Join(data, "mirrors", "app.git")
	src := filepath.Join(t.TempDir(), "src")
	for _, c := range [][]string{
		{"git", "init", "-q", src},
		{"git", "-C", src, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "first"},
		{"git", "clone", "-q", "--mirror", src, repo},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	d := newTestDriver(t, func(c *Config) { c.Mask = []string{data} })
	out := runShell(t, d, "mirror", `su builder -c 'cd && git clone -q /hangar/repo.git src && git -C src log --format=%s' && echo cloned`,
		machine.Mount{Source: repo, Target: "/hangar/repo.git"})
	if !strings.Contains(out, "first\ncloned") {
		t.Errorf("builder could not clone the mirror:\n%s", out)
	}
}

func TestParallelMachines(t *testing.T) {
	d := newTestDriver(t, nil)
	const n = 4
	var wg sync.WaitGroup
	machines := make([]machine.Machine, n)
	outs := make([]*syncBuffer, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = &syncBuffer{}
			m, err := d.Start(context.Background(), machine.Spec{
				Image:   testImage(t),
				Name:    fmt.Sprintf("par-%d", i),
				Builder: "/bin/sh",
				Args:    []string{"-c", "echo ip=$(hostname -I); exec sleep 1000"},
				Output:  outs[i],
			})
			if err != nil {
				t.Errorf("Start %d: %v", i, err)
				return
			}
			machines[i] = m
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, m := range machines {
		if m == nil {
			continue
		}
		outs[i].waitFor(t, "ip=", 10*time.Second)
		ip := strings.TrimSpace(strings.TrimPrefix(outs[i].String(), "ip="))
		if seen[ip] {
			t.Errorf("two machines got address %s", ip)
		}
		seen[ip] = true
	}
	for i, m := range machines {
		if m == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Destroy(context.Background()); err != nil {
				t.Errorf("Destroy %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		assertMachineGone(t, d, fmt.Sprintf("par-%d", i))
	}
}

// TestTwoDriversSameMachineName runs two drivers on one host, like a Hangar
// server and a benchmark each on its own bridge, that both name a machine
// build-1. Both machines work, and what happens to one driver's build-1 (a
// Destroy, a failed Start, a crash and New's recovery, Close) leaves the
// other's running and intact.
func TestTwoDriversSameMachineName(t *testing.T) {
	d1 := newTestDriver(t, nil)
	d2 := newTestDriver(t, func(c *Config) {
		c.Bridge = testBridge2
		c.Subnet = testSubnet2
	})
	const name = "build-1"
	script := func(sleep int) string {
		return fmt.Sprintf(`nc -lk 7000 >/dev/null &
echo "host=$(hostname) etc=$(cat /etc/hostname) ip=$(hostname -I | tr -d ' ')"
echo "hosts=$(getent hosts %s | tr -s ' \t' ' ')"
echo up
exec sleep %d`, name, sleep)
	}
	start := func(d *Driver, sleep int, out io.Writer) (*Machine, error) {
		m, err := d.Start(context.Background(), machine.Spec{
			Image:   testImage(t),
			Name:    name,
			Builder: "/bin/sh",
			Args:    []string{"-c", script(sleep)},
			Env:     []string{"LANG=C"},
			Output:  out,
		})
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() {
			if err := m.Destroy(context.Background()); err != nil {
				t.Errorf("Destroy: %v", err)
			}
		})
		return m.(*Machine), nil
	}

	// Both at once.
	drivers := []*Driver{d1, d2}
	sleeps := []int{31350, 31351}
	machines := make([]*Machine, len(drivers))
	outs := make([]*syncBuffer, len(drivers))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, d := range drivers {
		outs[i] = &syncBuffer{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			m, err := start(d, sleeps[i], outs[i])
			if err != nil {
				t.Errorf("Start %s on %s: %v", name, d.cfg.Bridge, err)
				return
			}
			machines[i] = m
		}()
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, m := range machines {
		d := drivers[i]
		outs[i].waitFor(t, "up", 10*time.Second)
		out := outs[i].String()
		ip := m.IP().String()
		for _, want := range []string{"host=" + name + " etc=" + name + " ip=" + ip + "\n", "hosts=" + ip + " " + name + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s on %s: output lacks %q:\n%s", name, d.cfg.Bridge, want, out)
			}
		}
		if !d.subnet.Contains(m.ip) {
			t.Errorf("%s on %s has address %s, outside %s", name, d.cfg.Bridge, m.ip, d.subnet)
		}
		assertRunning(t, d, m, fmt.Sprintf("sleep %d", sleeps[i]))
	}
	h1, h2 := machines[0].host, machines[1].host
	if h1.id == h2.id || h1.veth == h2.veth || h1.cgroup == h2.cgroup {
		t.Fatalf("the two drivers' machines share host names: %+v and %+v", h1, h2)
	}
	for _, h := range []hostNames{h1, h2} {
		if len(h.veth) > 15 {
			t.Errorf("veth name %q is longer than 15 bytes", h.veth)
		}
	}
	m2, alive := machines[1], "sleep 31351"

	// Destroy.
	if err := machines[0].Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertMachineGone(t, d1, name)
	assertRunning(t, d2, m2, alive)

	// A failed Start: runc fails late, the mount target lies under a file.
	_, err := d1.Start(context.Background(), machine.Spec{
		Image:   testImage(t),
		Name:    name,
		Builder: "/bin/sh",
		Mounts:  []machine.Mount{{Source: t.TempDir(), Target: "/etc/hostname/x"}},
	})
	if err == nil {
		t.Fatal("Start succeeded with a mount under a file")
	}
	assertMachineGone(t, d1, name)
	assertRunning(t, d2, m2, alive)

	// A crash of d1 with its build-1 running, and New's recovery.
	out := &syncBuffer{}
	crashed, err := start(d1, 31352, out)
	if err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "up", 10*time.Second)
	d1.lock.Close()
	d3, err := New(d1.cfg)
	if err != nil {
		t.Fatalf("New after a crash: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			d3.Close()
		}
	})
	d1.mu.Lock()
	delete(d1.machines, name)
	delete(d1.usedIPs, crashed.ip)
	d1.mu.Unlock()
	crashed.destroyed = true
	assertMachineGone(t, d3, name)
	if pids := processesWith("sleep 31352"); len(pids) > 0 {
		t.Errorf("the crashed driver's machine still runs: %v", pids)
	}
	assertRunning(t, d2, m2, alive)

	// Close of a driver with a build-1 alive.
	out = &syncBuffer{}
	if _, err := start(d3, 31353, out); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "up", 10*time.Second)
	closed = true
	if err := d3.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	assertHostClean(t, d3)
	if pids := processesWith("sleep 31353"); len(pids) > 0 {
		t.Errorf("the closed driver's machine still runs: %v", pids)
	}
	assertRunning(t, d2, m2, alive)
}

// assertRunning checks that machine m of d is alive and whole: its builder
// runs (the process cmd), and its netns, veth, cgroup, directory and
// network are in place.
func assertRunning(t *testing.T, d *Driver, m *Machine, cmd string) {
	t.Helper()
	select {
	case <-m.exited:
		t.Fatalf("machine %s on %s exited: %v", m.name, d.cfg.Bridge, m.waitErr)
	default:
	}
	if len(processesWith(cmd)) == 0 {
		t.Errorf("machine %s on %s: %q does not run", m.name, d.cfg.Bridge, cmd)
	}
	mounts, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mounts, func(e mountEntry) bool { return e.point == m.host.netnsPath() }) {
		t.Errorf("machine %s on %s: network namespace %s is not mounted", m.name, d.cfg.Bridge, m.host.netnsPath())
	}
	if l, err := netlink.LinkByName(m.host.veth); err != nil {
		t.Errorf("machine %s on %s: host veth %s: %v", m.name, d.cfg.Bridge, m.host.veth, err)
	} else if l.Attrs().MasterIndex != d.bridgeIndex {
		t.Errorf("machine %s on %s: host veth %s is not on the bridge", m.name, d.cfg.Bridge, m.host.veth)
	}
	cgroups := 0
	for _, r := range d.cgroupRoots {
		if exists(filepath.Join(r, m.host.cgroup)) {
			cgroups++
		}
	}
	if cgroups == 0 {
		t.Errorf("machine %s on %s: cgroup %s is in no hierarchy", m.name, d.cfg.Bridge, m.host.cgroup)
	}
	if !exists(filepath.Join(m.layout.rootfs(), "etc")) {
		t.Errorf("machine %s on %s: its directory is gone", m.name, d.cfg.Bridge)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(m.IP().String(), "7000"), 2*time.Second)
	if err != nil {
		t.Errorf("machine %s on %s: host cannot reach its listener: %v", m.name, d.cfg.Bridge, err)
	} else {
		c.Close()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.machines[m.name] != m {
		t.Errorf("driver on %s no longer lists machine %s", d.cfg.Bridge, m.name)
	}
}

// TestRecoverAfterCrashOnAnotherBridge checks that New removes the leftovers
// of a crashed driver that used the same StateDir with another bridge.
func TestRecoverAfterCrashOnAnotherBridge(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	d := newTestDriver(t, func(c *Config) { c.StateDir = state })
	m, out := startShell(t, d, "crashed", "echo up; exec sleep 31354")
	out.waitFor(t, "up", 10*time.Second)
	d.lock.Close()
	cfg := d.cfg
	cfg.Bridge, cfg.Subnet = testBridge2, testSubnet2
	d2, err := New(cfg)
	if err != nil {
		t.Fatalf("New after a crash: %v", err)
	}
	d.mu.Lock()
	delete(d.machines, m.name)
	delete(d.usedIPs, m.ip)
	d.mu.Unlock()
	m.destroyed = true
	assertMachineGone(t, d, m.name) // by the crashed driver's names
	if pids := processesWith("sleep 31354"); len(pids) > 0 {
		t.Errorf("the crashed driver's machine still runs: %v", pids)
	}
	if err := d2.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	assertHostClean(t, d2)
}
