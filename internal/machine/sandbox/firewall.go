package sandbox

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// firewall manages the iptables chains of one bridge:
//
//	filter HANGAR-IN-<bridge>   INPUT from the bridge: established traffic and
//	                            the ports of Listen listeners, nothing else
//	filter HANGAR-FWD-<bridge>  FORWARD: nothing between machines; to and from
//	                            the outside only with egress
//	nat    HANGAR-NAT-<bridge>  POSTROUTING: masquerade the subnet (egress)
type firewall struct {
	bridge   string
	subnet   string
	bridgeIP string
	in       string
	fwd      string
	nat      string
}

func newFirewall(bridge string, subnet netip.Prefix, bridgeIP netip.Addr) *firewall {
	return &firewall{
		bridge:   bridge,
		subnet:   subnet.String(),
		bridgeIP: bridgeIP.String() + "/32",
		in:       "HANGAR-IN-" + bridge,
		fwd:      "HANGAR-FWD-" + bridge,
		nat:      "HANGAR-NAT-" + bridge,
	}
}

// chainPrefix starts the name of every chain this package creates.
const chainPrefix = "HANGAR-"

// setup replaces any earlier rules of this bridge with fresh ones.
func (f *firewall) setup(egress bool) error {
	if err := f.teardown(); err != nil {
		return err
	}
	established := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
	rules := [][]string{
		{"-N", f.in},
		append([]string{"-A", f.in}, established...),
		{"-A", f.in, "-j", "DROP"},
		{"-I", "INPUT", "1", "-i", f.bridge, "-j", f.in},

		{"-N", f.fwd},
		{"-A", f.fwd, "-i", f.bridge, "-o", f.bridge, "-j", "DROP"},
	}
	if egress {
		rules = append(rules,
			[]string{"-A", f.fwd, "-i", f.bridge, "-s", f.subnet, "-j", "ACCEPT"},
			append([]string{"-A", f.fwd, "-o", f.bridge}, established...),
		)
	}
	rules = append(rules,
		[]string{"-A", f.fwd, "-i", f.bridge, "-j", "DROP"},
		[]string{"-A", f.fwd, "-o", f.bridge, "-j", "DROP"},
		[]string{"-I", "FORWARD", "1", "-j", f.fwd},
	)
	for _, r := range rules {
		if _, err := iptables("filter", r...); err != nil {
			return err
		}
	}
	if egress {
		for _, r := range [][]string{
			{"-N", f.nat},
			{"-A", f.nat, "-s", f.subnet, "!", "-o", f.bridge, "-j", "MASQUERADE"},
			{"-I", "POSTROUTING", "1", "-j", f.nat},
		} {
			if _, err := iptables("nat", r...); err != nil {
				return err
			}
		}
	}
	return nil
}

// teardown removes the bridge's chains and the rules jumping to them,
// including several copies left by crashed runs. Missing ones are skipped.
func (f *firewall) teardown() error {
	for _, table := range []string{"filter", "nat"} {
		out, err := iptables(table, "-S")
		if err != nil {
			return err
		}
		ours := map[string]bool{f.in: true, f.fwd: true, f.nat: true}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			fields := strings.Fields(line)
			switch {
			case len(fields) == 2 && fields[0] == "-N" && ours[fields[1]]:
				chains = append(chains, fields[1])
			case len(fields) > 3 && fields[0] == "-A" && !ours[fields[1]] &&
				fields[len(fields)-2] == "-j" && ours[fields[len(fields)-1]]:
				fields[0] = "-D"
				if _, err := iptables(table, fields...); err != nil {
					return err
				}
			}
		}
		for _, c := range chains {
			if _, err := iptables(table, "-F", c); err != nil {
				return err
			}
			if _, err := iptables(table, "-X", c); err != nil {
				return err
			}
		}
	}
	return nil
}

// allowPort lets machines connect to TCP port on the bridge address.
func (f *firewall) allowPort(port int) error {
	_, err := iptables("filter", append([]string{"-I", f.in, "1"}, f.portRule(port)...)...)
	return err
}

// denyPort withdraws allowPort.
func (f *firewall) denyPort(port int) error {
	_, err := iptables("filter", append([]string{"-D", f.in}, f.portRule(port)...)...)
	return err
}

func (f *firewall) portRule(port int) []string {
	return []string{"-d", f.bridgeIP, "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "ACCEPT"}
}

// iptables runs `iptables -w -t table args...` and returns its output.
func iptables(table string, args ...string) ([]byte, error) {
	full := append([]string{"-w", "-t", table}, args...)
	cmd := exec.Command("iptables", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("iptables %s: %w: %s", strings.Join(full, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
