package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestOwnerMark(t *testing.T) {
	if got := ownerMark("/var/lib/hangar/machines"); got != "hangar:/var/lib/hangar/machines" {
		t.Errorf("ownerMark = %q", got)
	}
	// Spaces, quotes or a long path: a hash, usable as an iptables comment.
	for _, dir := range []string{"/tmp/a b", `/tmp/a"b`, "/" + strings.Repeat("x", 300)} {
		m := ownerMark(dir)
		if !strings.HasPrefix(m, "hangar:sha256-") || strings.ContainsAny(m, ` "`) || len(m) > 64 || m == ownerMark(dir+"x") {
			t.Errorf("ownerMark(%q) = %q", dir, m)
		}
	}
	if got := describeOwner("hangar:/srv/x/machines"); !strings.Contains(got, "/srv/x/machines") {
		t.Errorf("describeOwner = %q", got)
	}
	if describeOwner("") != "" || describeOwner("my bridge") != "" {
		t.Errorf("describeOwner of a foreign alias is not empty")
	}
}

func TestFirewallRulesMarked(t *testing.T) {
	f := &firewall{mark: "hangar:/m"}
	// The mark goes right after the chain (and position), before any
	// target and its options.
	for _, c := range []struct{ rule, want []string }{
		{[]string{"-I", "INPUT", "1", "-i", "br", "-j", "HANGAR-IN-br"},
			[]string{"-I", "INPUT", "1", "-m", "comment", "--comment", "hangar:/m", "-i", "br", "-j", "HANGAR-IN-br"}},
		{[]string{"-A", "HANGAR-REJ-br", "-p", "udp", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"},
			[]string{"-A", "HANGAR-REJ-br", "-m", "comment", "--comment", "hangar:/m", "-p", "udp", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"}},
		{[]string{"-d", "10.0.0.1/32", "-p", "tcp", "-j", "ACCEPT"},
			[]string{"-m", "comment", "--comment", "hangar:/m", "-d", "10.0.0.1/32", "-p", "tcp", "-j", "ACCEPT"}},
	} {
		if got := f.marked(c.rule...); !slices.Equal(got, c.want) {
			t.Errorf("marked(%q) = %q, want %q", c.rule, got, c.want)
		}
	}
	if c := iptablesComment(strings.Fields(`-A X -m comment --comment "hangar:/m" -j Y`)); c != "hangar:/m" {
		t.Errorf("iptablesComment = %q", c)
	}
	if c := iptablesComment(strings.Fields(`-A X -j Y`)); c != "" {
		t.Errorf("iptablesComment of an unmarked rule = %q", c)
	}
}

// TestSecondDriverOnSameBridgeRefuses: a driver whose bridge is another
// driver's (another StateDir) refuses before changing anything; the first
// one's bridge, chains and machines go on working.
func TestSecondDriverOnSameBridgeRefuses(t *testing.T) {
	d := newTestDriver(t, nil)
	m, out := startShell(t, d, "first", "echo up; exec sleep 31361")
	out.waitFor(t, "up", 10*time.Second)
	before := firewallOf(t, d.cfg.Bridge)
	br, err := netlink.LinkByName(d.cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := New(Config{Bridge: testBridge, Subnet: testSubnet, StateDir: filepath.Join(t.TempDir(), "state")})
	if err == nil {
		d2.Close()
		t.Fatal("a second driver on the same bridge started")
	}
	for _, want := range []string{"bridge " + testBridge + " belongs to another Hangar server", d.cfg.StateDir, "--sandbox-bridge"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	after, err := netlink.LinkByName(d.cfg.Bridge)
	if err != nil || after.Attrs().Index != br.Attrs().Index {
		t.Fatalf("the first driver's bridge was replaced: %v", err)
	}
	if got := firewallOf(t, d.cfg.Bridge); !slices.Equal(got, before) {
		t.Errorf("the first driver's rules changed:\nbefore %q\nafter  %q", before, got)
	}
	if exists(m.host.netnsPath()) == false || len(processesWith("sleep 31361")) != 1 {
		t.Errorf("the first driver's machine was touched")
	}

	// Chains of another owner alone (no bridge) are refused too.
	f := newFirewall(testBridge2, d.subnet, d.bridgeIP, "hangar:/somewhere/else")
	if _, err := iptables("filter", "-N", f.in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = iptables("filter", "-F", f.in)
		_, _ = iptables("filter", "-X", f.in)
	})
	if _, err := iptables("filter", f.marked("-A", f.in, "-j", "DROP")...); err != nil {
		t.Fatal(err)
	}
	d3, err := New(Config{Bridge: testBridge2, Subnet: testSubnet2, StateDir: filepath.Join(t.TempDir(), "state")})
	if err == nil {
		d3.Close()
		t.Fatal("a driver started over another owner's chains")
	}
	if !strings.Contains(err.Error(), "iptables chain "+f.in) || !strings.Contains(err.Error(), "/somewhere/else") {
		t.Errorf("refusal: %v", err)
	}
	if _, err := netlink.LinkByName(testBridge2); err == nil {
		t.Errorf("the refused driver created bridge %s", testBridge2)
	}
	if rules, _ := iptables("filter", "-S", f.in); !strings.Contains(string(rules), "/somewhere/else") {
		t.Errorf("the refused driver changed the other owner's chain: %s", rules)
	}
}

// TestUnmarkedBridgeRefused: a bridge made by hand is never deleted.
func TestUnmarkedBridgeRefused(t *testing.T) {
	requireHost(t)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: testBridge2}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(br) })
	d, err := New(Config{Bridge: testBridge2, Subnet: testSubnet2, StateDir: filepath.Join(t.TempDir(), "state")})
	if err == nil {
		d.Close()
		t.Fatal("a driver started over a bridge made by hand")
	}
	if !strings.Contains(err.Error(), "no Hangar owner mark") || !strings.Contains(err.Error(), "ip link del "+testBridge2) {
		t.Errorf("refusal: %v", err)
	}
	if _, err := netlink.LinkByName(testBridge2); err != nil {
		t.Errorf("the bridge made by hand is gone: %v", err)
	}
}

// TestRemoveBusyCgroup: a cgroup that still holds processes is emptied
// (killed) and removed, sub-cgroups first.
func TestRemoveBusyCgroup(t *testing.T) {
	d := newTestDriver(t, nil)
	rel := "/" + cgroupParent(d.cfg.Bridge) + "/busy-test"
	var dirs []string
	for _, r := range d.cgroupRoots {
		dir := filepath.Join(r, rel, "child")
		if os.MkdirAll(dir, 0o755) == nil && exists(filepath.Join(dir, "cgroup.procs")) {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		t.Skip("no cgroup hierarchy to create a cgroup in")
	}
	t.Cleanup(func() { _ = removeCgroups(d.cgroupRoots, rel) })
	cmd := exec.Command("sleep", "31362")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := strconv.Itoa(cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(dirs[0], "cgroup.procs"), []byte(pid), 0); err != nil {
		_ = cmd.Process.Kill()
		<-done
		t.Skipf("cannot move a process into %s: %v", dirs[0], err)
	}
	if err := removeCgroups(d.cgroupRoots, rel); err != nil {
		t.Fatalf("removeCgroups: %v", err)
	}
	for _, r := range d.cgroupRoots {
		if exists(filepath.Join(r, rel)) {
			t.Errorf("cgroup %s left", filepath.Join(r, rel))
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("the process in the cgroup still runs")
	}
}

// firewallOf lists the iptables rules about bridge's chains.
func firewallOf(t *testing.T, bridge string) []string {
	t.Helper()
	var rules []string
	for _, table := range []string{"filter", "nat"} {
		out, err := iptables(table, "-S")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, chainPrefix) && strings.Contains(line, "-"+bridge) {
				rules = append(rules, fmt.Sprintf("%s: %s", table, line))
			}
		}
	}
	return rules
}
