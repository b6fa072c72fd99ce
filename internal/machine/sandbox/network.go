package sandbox

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// createBridge (re)creates the bridge with address addr, IPv6 off, and up,
// marked with mark. A bridge of the same name and mark left by a crashed
// driver is replaced; one with another mark is refused.
// It returns the bridge's interface index.
func createBridge(name string, addr netip.Prefix, mark string) (int, error) {
	if err := deleteBridge(name, mark); err != nil {
		return 0, err
	}
	// A fixed address: otherwise the bridge takes the lowest of its ports'
	// and changes it as machines come and go, under the machines' ARP caches.
	sum := sha256.Sum256([]byte("hangar bridge " + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02 // unicast, locally administered
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}}
	if err := netlink.LinkAdd(br); err != nil {
		return 0, fmt.Errorf("create bridge %s: %w", name, err)
	}
	// The kernel ignores an alias given to RTM_NEWLINK: set it at once.
	if err := netlink.LinkSetAlias(br, mark); err != nil {
		return 0, fmt.Errorf("mark bridge %s: %w", name, err)
	}
	if err := disableIPv6(name); err != nil {
		return 0, fmt.Errorf("disable ipv6 on bridge %s: %w", name, err)
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return 0, fmt.Errorf("address bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return 0, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return br.Attrs().Index, nil
}

// checkSubnetFree fails if an interface other than the bridge has an
// address in subnet: routing to it would break.
func checkSubnetFree(subnet netip.Prefix, bridge string) error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip, ones).Masked()
		if p.Overlaps(subnet) && a.Label != bridge && !strings.HasPrefix(a.Label, bridge+":") {
			return fmt.Errorf("subnet %s overlaps host address %s (%s): choose another subnet", subnet, a.IPNet, a.Label)
		}
	}
	return nil
}

// deleteBridge deletes the bridge if it exists and carries mark. It refuses
// to delete a link of that name that is not a bridge, or another owner's.
func deleteBridge(name, mark string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if err := checkBridgeOwner(name, mark); err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// isNotFound reports whether a netlink lookup failed because the link is
// missing.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// setSysctl writes value to /proc/sys/key, in the network namespace of the
// calling thread for net/ keys, and returns the previous value.
func setSysctl(key, value string) (string, error) {
	p := "/proc/sys/" + key
	old, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	prev := strings.TrimSpace(string(old))
	if prev == value {
		return prev, nil
	}
	return prev, os.WriteFile(p, []byte(value), 0o644)
}

// disableIPv6 turns IPv6 off on interface ifname ("all" and "default"
// included) in the calling thread's network namespace. A kernel without
// IPv6 needs nothing.
func disableIPv6(ifname string) error {
	_, err := setSysctl("net/ipv6/conf/"+ifname+"/disable_ipv6", "1")
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat("/proc/sys/net/ipv6"); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// netConfig is one machine's network.
type netConfig struct {
	host        hostNames // names of the netns and the host veth
	ip          netip.Prefix
	gateway     netip.Addr
	bridgeIndex int
}

// createNetwork creates the machine's named network namespace (bound at
// /run/netns/<id>, see names.go) with lo up, IPv6 off, and eth0, the inner
// end of a veth pair whose host end is an isolated port of the bridge. On
// error it leaves nothing behind, and it never touches a namespace it did not
// create.
func createNetwork(c netConfig) (err error) {
	hostVeth := c.host.veth
	if _, err := os.Lstat(c.host.netnsPath()); err == nil {
		return fmt.Errorf("network namespace %s already exists (a leftover of this driver's bridge: remove it with `ip netns del %s`)",
			c.host.id, c.host.id)
	}
	// A stale link of that name would make the creation fail.
	if l, err := netlink.LinkByName(hostVeth); err == nil {
		_ = netlink.LinkDel(l)
	}
	created := false
	defer func() {
		if err != nil && created {
			_ = deleteNetwork(c.host)
		}
	}()
	if err := inNewNetns(c.host.netnsPath(), &created, func(host netns.NsHandle) error {
		return configureInside(c, host)
	}); err != nil {
		return err
	}
	l, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", hostVeth, err)
	}
	if err := disableIPv6(hostVeth); err != nil {
		return fmt.Errorf("disable ipv6 on %s: %w", hostVeth, err)
	}
	if err := netlink.LinkSetMasterByIndex(l, c.bridgeIndex); err != nil {
		return fmt.Errorf("attach %s to the bridge: %w", hostVeth, err)
	}
	if err := netlink.LinkSetIsolated(l, true); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", hostVeth, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", hostVeth, err)
	}
	return nil
}

// configureInside runs on a thread inside the machine's new network
// namespace; host is the host's namespace.
func configureInside(c netConfig, host netns.NsHandle) error {
	for _, k := range []string{"all", "default"} {
		if err := disableIPv6(k); err != nil {
			return fmt.Errorf("disable ipv6 in the machine: %w", err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0"},
		PeerName:      c.host.veth,
		PeerNamespace: netlink.NsFd(host),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth pair: %w", err)
	}
	if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(c.ip)}); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("bring up eth0: %w", err)
	}
	route := &netlink.Route{
		LinkIndex: veth.Attrs().Index,
		Gw:        net.IP(c.gateway.AsSlice()),
		Flags:     int(netlink.FLAG_ONLINK),
	}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	return nil
}

// inNewNetns creates a network namespace bound at path and runs fn on an OS
// thread inside it. It sets *created once the bind file at path is its own.
// The thread is returned to the Go runtime only if it could be switched back
// to the host's namespace; otherwise it ends with the goroutine.
func inNewNetns(path string, created *bool, fn func(host netns.NsHandle) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			done <- fmt.Errorf("open host network namespace: %w", err)
			return
		}
		defer host.Close()
		err = newNamedNetns(path, created)
		if err == nil {
			err = fn(host)
		}
		if serr := netns.Set(host); serr != nil {
			done <- errors.Join(err, fmt.Errorf("return to the host network namespace: %w", serr))
			return // the thread stays locked and ends with this goroutine
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// newNamedNetns moves the calling (locked) thread to a new network namespace
// and binds it at p, like `ip netns add`. It sets *created once it has
// created the file at p.
func newNamedNetns(p string, created *bool) error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create network namespace file: %w", err)
	}
	f.Close()
	*created = true
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		os.Remove(p)
		return fmt.Errorf("create network namespace: %w", err)
	}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	if err := unix.Mount(self, p, "", unix.MS_BIND, ""); err != nil {
		os.Remove(p)
		return fmt.Errorf("bind network namespace: %w", err)
	}
	return nil
}

// deleteNetwork deletes the host veth (which removes both ends) and the
// named network namespace of a machine; what is missing is skipped.
func deleteNetwork(h hostNames) error {
	var errs []error
	hostVeth := h.veth
	if l, err := netlink.LinkByName(hostVeth); err == nil {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", hostVeth, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("look up veth %s: %w", hostVeth, err))
	}
	p := h.netnsPath()
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
	}
	return errors.Join(errs...)
}
