package sandbox

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

// Egress: what machines may reach beyond the host.
//
// With Config.Egress, the host masquerades the bridge's subnet (NAT) and
// forwards machines' connections to public IPv4 addresses, never to:
//
//   - the host itself (any of its addresses: they are reached through INPUT,
//     where only the Listen ports are open) or other machines (the bridge);
//   - the networks of blockedNets: RFC 1918, CGNAT, link-local (cloud
//     metadata services), loopback, "this network", multicast, reserved;
//   - the networks the host's other interfaces are on (its LAN, its gateway);
//   - Config.EgressDeny.
//
// Config.EgressAllow opens networks these rules close (a company's artifact
// proxy at 10.1.2.3/32, say), but never the host or other machines. Between
// EgressAllow and EgressDeny the longest prefix wins (so allowing 10.0.0.0/8
// but denying 10.1.0.0/16 works both ways round); a network in both is
// refused as ambiguous. Machines have no IPv6 at all.
//
// Name servers: a machine's /etc/resolv.conf lists Config.DNS, whose port 53
// (UDP and TCP) is open whatever the other rules say. By default they are
// the host's own, from /etc/resolv.conf (or systemd-resolved's upstream
// list when that names only its loopback stub): the public ones if there
// are any, else the private ones.

// blockedNets are the IPv4 networks machines never reach unless
// EgressAllow opens them.
var blockedNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local: cloud metadata services
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
}

// isPrivate reports whether a is in one of blockedNets.
func isPrivate(a netip.Addr) bool {
	return slices.ContainsFunc(blockedNets, func(p netip.Prefix) bool { return p.Contains(a) })
}

// egressRule is one entry of EgressAllow or EgressDeny.
type egressRule struct {
	net   netip.Prefix
	allow bool
}

// egressPolicy is what the firewall needs to build the egress rules.
type egressPolicy struct {
	on bool
	// rules are EgressAllow and EgressDeny, longest prefix first.
	rules []egressRule
	// hostNets are the networks of the host's interfaces (but the bridge).
	hostNets []netip.Prefix
	// dns are the machines' name servers.
	dns []netip.Addr
}

// checkPrefixes validates a list of IPv4 networks; what names the list in
// errors (e.g. "egress allow list").
func checkPrefixes(what string, list []netip.Prefix) error {
	for _, p := range list {
		switch {
		case !p.IsValid():
			return fmt.Errorf("%s: invalid network", what)
		case !p.Addr().Is4():
			return fmt.Errorf("%s: %s is not IPv4 (machines have no IPv6)", what, p)
		case p != p.Masked():
			return fmt.Errorf("%s: %s has host bits set: did you mean %s?", what, p, p.Masked())
		}
	}
	return nil
}

// sortedRules merges allow and deny, longest prefix first (deny first on a
// tie, which checkEgress refuses for identical networks anyway).
func sortedRules(allow, deny []netip.Prefix) []egressRule {
	var rules []egressRule
	for _, p := range deny {
		rules = append(rules, egressRule{net: p})
	}
	for _, p := range allow {
		rules = append(rules, egressRule{net: p, allow: true})
	}
	slices.SortStableFunc(rules, func(a, b egressRule) int {
		return cmp.Compare(b.net.Bits(), a.net.Bits())
	})
	return rules
}

// checkEgress validates the egress part of c.
func (c *Config) checkEgress() error {
	if !c.Egress && (len(c.EgressAllow) > 0 || len(c.EgressDeny) > 0 || len(c.DNS) > 0) {
		return errors.New("egress allow and deny lists and name servers need egress (hangar server --sandbox-egress=on)")
	}
	if err := checkPrefixes("egress allow list", c.EgressAllow); err != nil {
		return err
	}
	if err := checkPrefixes("egress deny list", c.EgressDeny); err != nil {
		return err
	}
	for _, p := range c.EgressAllow {
		if slices.Contains(c.EgressDeny, p) {
			return fmt.Errorf("%s is in both the egress allow and deny lists", p)
		}
	}
	for _, a := range c.DNS {
		if !a.Is4() {
			return fmt.Errorf("name server %s: want an IPv4 address (machines have no IPv6)", a)
		}
		if a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("name server %s: machines cannot reach it (loopback, unspecified or multicast)", a)
		}
	}
	return nil
}

// hostNameServers returns the host's IPv4 name servers that machines could
// use: from /etc/resolv.conf, or from systemd-resolved's upstream list when
// the former names only loopback servers (its 127.0.0.53 stub).
func hostNameServers() []netip.Addr {
	for _, p := range []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"} {
		if data, err := os.ReadFile(p); err == nil {
			if ns := usableNameServers(parseNameServers(data)); len(ns) > 0 {
				return ns
			}
		}
	}
	return nil
}

// usableNameServers returns the public IPv4 ones of addrs if there are
// any, else the private ones; never loopback ones.
func usableNameServers(addrs []netip.Addr) []netip.Addr {
	var public, private []netip.Addr
	for _, a := range addrs {
		switch {
		case !a.Is4() || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast():
		case isPrivate(a):
			private = append(private, a)
		default:
			public = append(public, a)
		}
	}
	if len(public) > 0 {
		return public
	}
	return private
}

// parseNameServers returns the nameserver addresses of a resolv.conf.
func parseNameServers(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			// A scoped IPv6 address ("fe80::1%eth0") does not parse: skipped.
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// resolvConf is a machine's /etc/resolv.conf. With no server, lookups fail
// at once (glibc then asks the machine's own 127.0.0.1, where nothing
// listens) instead of after timeouts.
func resolvConf(servers []netip.Addr) string {
	if len(servers) == 0 {
		return "# no name server reachable from the machine (hangar server --sandbox-egress, --sandbox-dns)\n"
	}
	var b strings.Builder
	b.WriteString("# written by Hangar (hangar server --sandbox-dns)\n")
	for _, a := range servers {
		b.WriteString("nameserver " + a.String() + "\n")
	}
	b.WriteString("options timeout:2 attempts:2\n")
	return b.String()
}

// hostNetworks returns the IPv4 networks of the host's interfaces but the
// bridge's (loopback excluded): machines must not reach the host's
// neighbours, its gateway included.
func hostNetworks(bridge string) ([]netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || a.IPNet == nil || ip.IsLoopback() {
			continue
		}
		if a.Label == bridge || strings.HasPrefix(a.Label, bridge+":") {
			continue
		}
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip, ones).Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}
