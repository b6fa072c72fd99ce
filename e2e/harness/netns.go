package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Net is a test's own network of hosts on this machine: each Host is a
// network namespace linked to the test's host (the root namespace) by a
// veth pair with a /30 of its own, in one 10.231.X.0/24 that no
// interface of this machine uses. A host reaches the test's host at
// HostIP (and nothing else: it has no default route); processes run in
// it with Host.Command see its network and its own host name.
// Everything is removed at the test's cleanup, on failure too.
type Net struct {
	// HostIP is the address at which every host reaches the test's host:
	// listen there for what the hosts must reach.
	HostIP string
	Hosts  []*Host
}

// Host is one network namespace of a Net.
type Host struct {
	// Name names the network namespace (ip netns) and is its processes'
	// host name.
	Name string
	// IP is its address; HostEnd is the address of its link's end on the
	// test's host.
	IP, HostEnd string
	peer        string // its link's interface on the test's host
}

// netBase is the 10.231.0.0/16 the networks of NewNet take a /24 of.
const netBase = "10.231."

// NewNet makes n hosts (at most 60). It skips the test when not root
// (ip netns needs it) and fails it when iproute2 is missing.
func NewNet(t testing.TB, n int) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test's hosts are network namespaces (ip netns); run it as root, as .ci/run does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("needs ip (apt-get install iproute2; make testdeps installs it): %v", err)
	}
	if n < 1 || n > 60 {
		t.Fatalf("NewNet(%d): 1 to 60 hosts", n)
	}
	pid := os.Getpid()
	subnet := freeSubnet(t, pid)
	nt := &Net{HostIP: subnet + "1"}
	for i := range n {
		// Interface names have at most 15 bytes: "hge" + pid (at most 7
		// digits) + "h"/"n" + index.
		h := &Host{
			Name:    fmt.Sprintf("hangar-e2e-%d-%d", pid, i+1),
			HostEnd: subnet + strconv.Itoa(4*i+1),
			IP:      subnet + strconv.Itoa(4*i+2),
			peer:    fmt.Sprintf("hge%dh%d", pid, i+1),
		}
		inner := fmt.Sprintf("hge%dn%d", pid, i+1)
		ipCmd(t, "netns", "add", h.Name)
		t.Cleanup(func() { h.remove(t) })
		ipCmd(t, "link", "add", h.peer, "type", "veth", "peer", "name", inner, "netns", h.Name)
		ipCmd(t, "addr", "add", h.HostEnd+"/30", "dev", h.peer)
		ipCmd(t, "link", "set", h.peer, "up")
		ipCmd(t, "-n", h.Name, "link", "set", "lo", "up")
		ipCmd(t, "-n", h.Name, "addr", "add", h.IP+"/30", "dev", inner)
		ipCmd(t, "-n", h.Name, "link", "set", inner, "up")
		if h.HostEnd != nt.HostIP {
			// Only the test's host, through its own link.
			ipCmd(t, "-n", h.Name, "route", "add", nt.HostIP+"/32", "via", h.HostEnd)
		}
		nt.Hosts = append(nt.Hosts, h)
	}
	return nt
}

// freeSubnet returns "10.231.X." for an X no address of this machine's
// root namespace is in, starting from one picked by pid, so that tests
// running at once on the machine take different ones.
func freeSubnet(t testing.TB, pid int) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 && ip4[1] == 231 {
				used[strconv.Itoa(int(ip4[2]))] = true
			}
		}
	}
	for i := range 250 {
		x := strconv.Itoa(1 + (pid+i)%250)
		if !used[x] {
			return netBase + x + "."
		}
	}
	t.Fatalf("every 10.231.X.0/24 has an address on this machine")
	return ""
}

// Command is name with args run on the host: in its network namespace
// (ip netns exec) and its own UTS namespace with the host's name. Each
// of ip, unshare and sh execs the next in place: the command's process
// is the one started, so a signal to it (Kill) reaches the command.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	argv := append([]string{"netns", "exec", h.Name, "unshare", "--uts", "--",
		"sh", "-c", `printf %s "$0" > /proc/sys/kernel/hostname && exec "$@"`, h.Name, name}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// remove ends what still runs on the host (what the test started there:
// a killed runner's builds), then removes its link and its namespace.
func (h *Host) remove(t testing.TB) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "pids", h.Name).Output()
		pids := strings.Fields(string(out))
		if err != nil || len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v still run in network namespace %s 10 s after SIGKILL", pids, h.Name)
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Deleting one end of a veth pair deletes both.
	if _, err := os.Stat("/sys/class/net/" + h.peer); err == nil {
		if out, err := exec.Command("ip", "link", "del", h.peer).CombinedOutput(); err != nil {
			t.Errorf("ip link del %s: %v: %s", h.peer, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", h.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", h.Name, err, out)
	}
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
