package sandbox

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The egress tests' own bridge and test hosts. Every test host lives in a
// network namespace made by the test, reached over a veth through /32
// routes to exactly its addresses: nothing the machines or the test send
// leaves the host.
const (
	egressBridge = "hgeg0"
	egressSubnet = "10.213.66.0/24"
	// hgeg-pub: "public" hosts (documentation addresses) and a DNS server.
	pubNetns    = "hgeg-pub"
	pubVeth     = "hgeg-pub-h"
	pubHostSide = "198.51.100.1" // the host's end of the veth
	pubHost     = "198.51.100.7" // reachable
	pubDenied   = "198.51.100.8" // in the deny list
	pubDNS      = "198.51.100.53"
	// hgeg-priv: private hosts and a stand-in cloud metadata service.
	privNetns    = "hgeg-priv"
	privVeth     = "hgeg-priv-h"
	privHostSide = "10.99.0.1"
	privHost     = "10.99.0.7" // private: unreachable
	privAllowed  = "10.99.0.8" // in the allow list
	metadataHost = "169.254.169.254"
	// testPort is where every test host serves.
	testPort = "8000"
	// testName resolves to pubHost at the test DNS server.
	testName = "pub.hangar.test"
)

func TestEgressConfigValidation(t *testing.T) {
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Egress: true, EgressAllow: pfx("10.1.2.3/24")}, "did you mean 10.1.2.0/24"},
		{Config{Egress: true, EgressDeny: pfx("2001:db8::/32")}, "not IPv4"},
		{Config{Egress: true, EgressAllow: pfx("10.1.0.0/16"), EgressDeny: pfx("10.1.0.0/16")}, "both"},
		{Config{EgressAllow: pfx("10.1.0.0/16")}, "need egress"},
		{Config{Egress: true, DNS: []netip.Addr{netip.MustParseAddr("127.0.0.53")}}, "loopback"},
		{Config{Egress: true, DNS: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}, "IPv4"},
	} {
		err := c.cfg.checkEgress()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("checkEgress(%+v) = %v, want an error with %q", c.cfg, err, c.want)
		}
	}
	ok := Config{Egress: true, EgressAllow: pfx("10.1.2.3/32"), EgressDeny: pfx("203.0.113.0/24"),
		DNS: []netip.Addr{netip.MustParseAddr("10.255.255.53")}}
	if err := ok.checkEgress(); err != nil {
		t.Errorf("checkEgress(%+v): %v", ok, err)
	}
}

func TestEgressRuleOrder(t *testing.T) {
	rules := sortedRules(
		[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32")},
		[]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	var got []string
	for _, r := range rules {
		got = append(got, fmt.Sprintf("%s:%v", r.net, r.allow))
	}
	want := []string{"10.1.2.3/32:true", "10.1.0.0/16:false", "10.0.0.0/8:true"}
	if !slices.Equal(got, want) {
		t.Errorf("sortedRules = %v, want the longest prefix first: %v", got, want)
	}
}

func TestHostNameServers(t *testing.T) {
	conf := []byte("# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n")
	addrs := parseNameServers(conf)
	if got := usableNameServers(addrs); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.255.255.53")}) {
		t.Errorf("private only: %v, want the private resolver", got)
	}
	addrs = append(addrs, netip.MustParseAddr("9.9.9.9"))
	if got := usableNameServers(addrs); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("9.9.9.9")}) {
		t.Errorf("with a public one: %v, want only the public one", got)
	}
	if got := usableNameServers(parseNameServers([]byte("nameserver 127.0.0.53\n"))); len(got) != 0 {
		t.Errorf("loopback stub only: %v, want none", got)
	}
	if s := resolvConf(nil); strings.Contains(s, "nameserver") {
		t.Errorf("resolv.conf without servers: %q", s)
	}
}

// TestEgress runs machines against test hosts in their own network
// namespaces: with egress a machine reaches a public address (by name too,
// through the configured name server) and an allow-listed private one, and
// nothing else: no private, link-local or deny-listed address, no host
// address, no other machine. Without egress it reaches nothing.
func TestEgress(t *testing.T) {
	requireHost(t)
	for _, bin := range []string{"ip", "nc", "getent"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 netcat-openbsd)", bin)
		}
	}
	forwardBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	newTestNetns(t, pubNetns, pubVeth, pubHostSide, pubHost, pubDenied, pubDNS)
	newTestNetns(t, privNetns, privVeth, privHostSide, privHost, privAllowed, metadataHost)
	for _, a := range []string{pubHost, pubDenied} {
		serveBanner(t, pubNetns, a)
	}
	for _, a := range []string{privHost, privAllowed, metadataHost} {
		serveBanner(t, privNetns, a)
	}
	serveDNS(t, pubNetns, pubDNS, map[string]string{testName + ".": pubHost})
	// Positive control: every test host answers the host, so the machines'
	// failures below are the firewall's doing.
	for _, a := range []string{pubHost, pubDenied, privHost, privAllowed, metadataHost} {
		if b := dialBanner(t, a); !strings.HasPrefix(b, "banner="+a) {
			t.Fatalf("test host %s answers the host with %q", a, b)
		}
	}
	// A listener on every host address, and the host's addresses.
	hostLn, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostLn.Close() })
	go func() {
		for {
			c, err := hostLn.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "banner=host\n")
			c.Close()
		}
	}()
	hostPort := fmt.Sprint(hostLn.Addr().(*net.TCPAddr).Port)

	t.Run("on", func(t *testing.T) {
		d := newTestDriver(t, func(c *Config) {
			c.Bridge, c.Subnet = egressBridge, egressSubnet
			c.Egress = true
			c.EgressAllow = []netip.Prefix{netip.MustParsePrefix(privAllowed + "/32")}
			c.EgressDeny = []netip.Prefix{netip.MustParsePrefix(pubDenied + "/32")}
			c.DNS = []netip.Addr{netip.MustParseAddr(pubDNS)}
		})
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("ip_forward = %q with egress, want 1", b)
		}
		// The host's addresses: the bridge's, eth0's, the test veths'...
		var hostAddrs []string
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				hostAddrs = append(hostAddrs, a.IP.String())
			}
		}
		if !slices.Contains(hostAddrs, d.BridgeIP().String()) || !slices.Contains(hostAddrs, pubHostSide) {
			t.Fatalf("host addresses %v lack the bridge's or the test veth's", hostAddrs)
		}
		// Machine A listens: B must not reach it.
		a, outA := startShell(t, d, "eg-a", "exec nc -lvk 7000 >/dev/null")
		outA.waitFor(t, "Listening on", 10*time.Second)
		if c, err := net.DialTimeout("tcp4", net.JoinHostPort(a.IP().String(), "7000"), 2*time.Second); err != nil {
			t.Fatalf("the host cannot reach A's listener, so B's attempt proves nothing: %v", err)
		} else {
			c.Close()
		}

		script := probeScript + fmt.Sprintf(`
probe public %[1]s %[8]s
probe denied %[2]s %[8]s
probe private %[3]s %[8]s
probe allowed %[4]s %[8]s
probe metadata %[5]s %[8]s
probe machine %[6]s 7000
for ip in %[7]s; do probe "host-$ip" $ip %[9]s; done
echo "lookup=$(getent ahostsv4 %[10]s | awk '{print $1; exit}')"
probe byname %[10]s %[8]s
start=$(date +%%s%%N); getent hosts nx.hangar.test >/dev/null && echo nx=found || echo nx=failed
echo "nxms=$((($(date +%%s%%N) - start) / 1000000))"
grep -c ^nameserver /etc/resolv.conf | sed 's/^/nameservers=/'
`, pubHost, pubDenied, privHost, privAllowed, metadataHost, a.IP(), strings.Join(hostAddrs, " "),
			testPort, hostPort, testName)
		out := runShell(t, d, "eg-b", script)
		for _, want := range []string{
			"public=reached banner=" + pubHost + " from=" + pubHostSide, // masqueraded
			"allowed=reached banner=" + privAllowed + " from=" + privHostSide,
			"denied=blocked", "private=blocked", "metadata=blocked", "machine=blocked",
			"lookup=" + pubHost, "byname=reached banner=" + pubHost + " from=" + pubHostSide, "nx=failed", "nameservers=1",
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("machine output lacks %q:\n%s", want, out)
			}
		}
		for _, ip := range hostAddrs {
			if !strings.Contains(out, "host-"+ip+"=blocked\n") {
				t.Errorf("host address %s: not blocked:\n%s", ip, out)
			}
		}
		if ms := field(out, "nxms"); len(ms) > 4 {
			t.Errorf("a failed lookup took %s ms", ms)
		}
	})
	// ip_forward goes back to 0 if it was, unless another driver's machines
	// need it.
	if strings.TrimSpace(string(forwardBefore)) == "0" {
		other, err := newFirewall(egressBridge, netip.MustParsePrefix(egressSubnet), netip.Addr{}, "").otherNATChains()
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && !other && strings.TrimSpace(string(b)) != "0" {
			t.Errorf("ip_forward = %q after Close, was 0", b)
		}
	}

	t.Run("off", func(t *testing.T) {
		d := newTestDriver(t, func(c *Config) { c.Bridge, c.Subnet = egressBridge, egressSubnet })
		out := runShell(t, d, "eg-off", probeScript+fmt.Sprintf(`
probe public %s %s
getent hosts %s >/dev/null && echo lookup=found || echo lookup=failed
grep -c ^nameserver /etc/resolv.conf | sed 's/^/nameservers=/'
`, pubHost, testPort, testName))
		for _, want := range []string{"public=blocked", "lookup=failed", "nameservers=0"} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("machine output without egress lacks %q:\n%s", want, out)
			}
		}
	})
}

// probeScript defines `probe NAME HOST PORT`, which prints NAME=reached
// and the banner, or NAME=blocked.
const probeScript = `
probe() {
  if out=$(timeout 5 nc -w 3 "$2" "$3" </dev/null 2>/dev/null) && [ -n "$out" ]; then
    echo "$1=reached $out"
  else
    echo "$1=blocked"
  fi
}
`

// field returns the value of "name=value" in out.
func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return v
		}
	}
	return ""
}

// newTestNetns creates network namespace name holding addrs on its eth0,
// whose peer hostVeth on the host has hostSide/32 and a /32 route to each
// of addrs; all removed when the test ends.
func newTestNetns(t *testing.T, name, hostVeth, hostSide string, addrs ...string) {
	t.Helper()
	cleanup := func() {
		exec.Command("ip", "link", "del", hostVeth).Run() // takes its routes
		exec.Command("ip", "netns", "del", name).Run()
	}
	cleanup() // a crashed run's
	t.Cleanup(cleanup)
	cmds := [][]string{
		{"netns", "add", name},
		{"link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", name},
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, c := range cmds {
		run(c...)
	}
	if err := disableIPv6(hostVeth); err != nil {
		t.Fatal(err)
	}
	run("addr", "add", hostSide+"/32", "dev", hostVeth)
	run("link", "set", hostVeth, "up")
	in := func(args ...string) { run(append([]string{"-n", name}, args...)...) }
	in("link", "set", "lo", "up")
	for _, a := range addrs {
		in("addr", "add", a+"/32", "dev", "eth0")
	}
	in("link", "set", "eth0", "up")
	in("route", "add", hostSide+"/32", "dev", "eth0")
	in("route", "add", "default", "via", hostSide, "dev", "eth0")
	for _, a := range addrs {
		run("route", "add", a+"/32", "dev", hostVeth, "src", hostSide)
	}
}

// inNetns runs fn on a thread in network namespace name (sockets made there
// stay there).
func inNetns(t *testing.T, name string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer host.Close()
		ns, err := netns.GetFromName(name)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		err = fn()
		if serr := netns.Set(host); serr != nil {
			done <- serr
			return // the thread ends with the goroutine
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("in network namespace %s: %v", name, err)
	}
}

// serveBanner serves "banner=ADDR from=REMOTE" on addr:testPort in network
// namespace ns.
func serveBanner(t *testing.T, ns, addr string) {
	t.Helper()
	var l net.Listener
	inNetns(t, ns, func() (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(addr, testPort))
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			remote := c.RemoteAddr().(*net.TCPAddr).IP.String()
			fmt.Fprintf(c, "banner=%s from=%s\n", addr, remote)
			c.Close()
		}
	}()
}

// dialBanner reads the banner of the test host at addr from the host.
func dialBanner(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(addr, testPort), 2*time.Second)
	if err != nil {
		t.Fatalf("dial test host %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 200)
	n, _ := c.Read(b)
	return string(b[:n])
}

// serveDNS answers A queries for names (FQDN -> IPv4) on UDP addr:53 in
// network namespace ns: NXDOMAIN for other names, no answer for other types
// of known names.
func serveDNS(t *testing.T, ns, addr string, names map[string]string) {
	t.Helper()
	var pc net.PacketConn
	inNetns(t, ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(addr, "53"))
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], names); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
}

// dnsAnswer is the response to the one-question query q, or nil if q is
// malformed.
func dnsAnswer(q []byte, names map[string]string) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	var name strings.Builder
	i := 12
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		name.WriteString(strings.ToLower(string(q[i:i+l])) + ".")
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	ip, known := names[name.String()]
	flags := uint16(0x8180) // response, recursion desired and available
	var answer []byte
	switch {
	case !known:
		flags |= 3 // NXDOMAIN
	case qtype == 1: // A
		a := netip.MustParseAddr(ip).As4()
		answer = append([]byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4}, a[:]...)
	}
	resp := make([]byte, 12, 12+len(question)+len(answer))
	copy(resp, q[:2])
	binary.BigEndian.PutUint16(resp[2:], flags)
	binary.BigEndian.PutUint16(resp[4:], 1)
	if answer != nil {
		binary.BigEndian.PutUint16(resp[6:], 1)
	}
	resp = append(resp, question...)
	return append(resp, answer...)
}
