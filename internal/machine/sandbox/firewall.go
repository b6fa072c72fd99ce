package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// firewall manages the iptables chains of one bridge:
//
//	filter HANGAR-IN-<bridge>   INPUT from the bridge: established traffic,
//	                            the ports of Listen listeners and (egress)
//	                            port 53 of a name server on the host; the rest
//	                            is rejected
//	filter HANGAR-FWD-<bridge>  FORWARD: nothing between machines; to the
//	                            outside only with egress, by egressPolicy
//	filter HANGAR-REJ-<bridge>  how the other two refuse: UDP gets "port
//	                            unreachable" (a resolver fails at once, see
//	                            notes), the rest "administratively prohibited"
//	                            (a connect fails at once: "No route to host")
//	nat    HANGAR-NAT-<bridge>  POSTROUTING: masquerade the subnet (egress)
//
// Only the jumps to these chains (first in INPUT, FORWARD and POSTROUTING)
// touch the host's own chains. Every rule it adds (in the chains and
// jumping to them) carries the driver's owner mark as a comment (see
// owner.go); teardown removes only those, and the chains.
type firewall struct {
	bridge   string
	subnet   string
	bridgeIP string
	mark     string
	in       string
	fwd      string
	rej      string
	nat      string
}

func newFirewall(bridge string, subnet netip.Prefix, bridgeIP netip.Addr, mark string) *firewall {
	return &firewall{
		bridge:   bridge,
		subnet:   subnet.String(),
		bridgeIP: bridgeIP.String() + "/32",
		mark:     mark,
		in:       "HANGAR-IN-" + bridge,
		fwd:      "HANGAR-FWD-" + bridge,
		rej:      "HANGAR-REJ-" + bridge,
		nat:      "HANGAR-NAT-" + bridge,
	}
}

// chainPrefix starts the name of every chain this package creates.
const chainPrefix = "HANGAR-"

// natChainPrefix starts the nat chains of every driver with egress.
const natChainPrefix = chainPrefix + "NAT-"

// setup replaces any earlier rules of this bridge (ours: checkOwner first)
// with fresh ones.
func (f *firewall) setup(p egressPolicy) error {
	if err := f.teardown(); err != nil {
		return err
	}
	established := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
	rules := [][]string{
		{"-N", f.rej},
		{"-A", f.rej, "-p", "udp", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"},
		{"-A", f.rej, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"},

		{"-N", f.in},
		append([]string{"-A", f.in}, established...),
	}
	if p.on {
		for _, ns := range p.dns {
			for _, proto := range []string{"udp", "tcp"} {
				rules = append(rules, []string{"-A", f.in, "-d", ns.String() + "/32", "-p", proto, "--dport", "53", "-j", "ACCEPT"})
			}
		}
	}
	rules = append(rules,
		[]string{"-A", f.in, "-j", f.rej},
		[]string{"-I", "INPUT", "1", "-i", f.bridge, "-j", f.in},

		[]string{"-N", f.fwd},
		[]string{"-A", f.fwd, "-i", f.bridge, "-o", f.bridge, "-j", "DROP"},
	)
	if p.on {
		out := []string{"-A", f.fwd, "-i", f.bridge}
		rule := func(args ...string) []string { return append(slices.Clone(out), args...) }
		rules = append(rules,
			append([]string{"-A", f.fwd, "-o", f.bridge}, established...),
			[]string{"-A", f.fwd, "-o", f.bridge, "-j", "DROP"},
			rule("!", "-s", f.subnet, "-j", "DROP"),
		)
		for _, ns := range p.dns {
			for _, proto := range []string{"udp", "tcp"} {
				rules = append(rules, rule("-d", ns.String()+"/32", "-p", proto, "--dport", "53", "-j", "ACCEPT"))
			}
		}
		for _, r := range p.rules {
			target := f.rej
			if r.allow {
				target = "ACCEPT"
			}
			rules = append(rules, rule("-d", r.net.String(), "-j", target))
		}
		for _, n := range blockedNets {
			rules = append(rules, rule("-d", n.String(), "-j", f.rej))
		}
		for _, n := range p.hostNets {
			rules = append(rules, rule("-d", n.String(), "-j", f.rej))
		}
		rules = append(rules, rule("-j", "ACCEPT"))
	} else {
		rules = append(rules,
			[]string{"-A", f.fwd, "-i", f.bridge, "-j", f.rej},
			[]string{"-A", f.fwd, "-o", f.bridge, "-j", "DROP"},
		)
	}
	rules = append(rules, []string{"-I", "FORWARD", "1", "-j", f.fwd})
	for _, r := range rules {
		if r[0] != "-N" {
			r = f.marked(r...)
		}
		if _, err := iptables("filter", r...); err != nil {
			return err
		}
	}
	if p.on {
		for _, r := range [][]string{
			{"-N", f.nat},
			f.marked("-A", f.nat, "-s", f.subnet, "!", "-o", f.bridge, "-j", "MASQUERADE"),
			f.marked("-I", "POSTROUTING", "1", "-j", f.nat),
		} {
			if _, err := iptables("nat", r...); err != nil {
				return err
			}
		}
	}
	return nil
}

// marked adds the owner mark's comment match to rule, right after its
// chain (and position): "-A C ...", "-I C N ..." or a bare rule.
func (f *firewall) marked(rule ...string) []string {
	i := 0
	if len(rule) >= 2 && (rule[0] == "-A" || rule[0] == "-I") {
		i = 2
		if rule[0] == "-I" && len(rule) > 2 {
			if _, err := strconv.Atoi(rule[2]); err == nil {
				i = 3
			}
		}
	}
	out := append(slices.Clone(rule[:i]), "-m", "comment", "--comment", f.mark)
	return append(out, rule[i:]...)
}

// fwState is what iptables holds of one bridge's chains.
type fwState struct {
	table  string
	chains []string   // ours by name
	rules  [][]string // rules in those chains, in -S form
	jumps  [][]string // rules of other chains jumping to them
}

// scan reads the bridge's chains and the rules about them in every table.
func (f *firewall) scan() ([]fwState, error) {
	ours := map[string]bool{f.in: true, f.fwd: true, f.rej: true, f.nat: true}
	var states []fwState
	for _, table := range []string{"filter", "nat"} {
		out, err := iptables(table, "-S")
		if err != nil {
			return nil, err
		}
		st := fwState{table: table}
		for _, line := range strings.Split(string(out), "\n") {
			fields := strings.Fields(line)
			for i := range fields {
				fields[i] = strings.Trim(fields[i], `"`) // comments are quoted
			}
			switch {
			case len(fields) == 2 && fields[0] == "-N" && ours[fields[1]]:
				st.chains = append(st.chains, fields[1])
			case len(fields) > 2 && fields[0] == "-A" && ours[fields[1]]:
				st.rules = append(st.rules, fields)
			case len(fields) > 3 && fields[0] == "-A" && fields[len(fields)-2] == "-j" && ours[fields[len(fields)-1]]:
				st.jumps = append(st.jumps, fields)
			}
		}
		states = append(states, st)
	}
	return states, nil
}

// checkOwner fails if a chain of this bridge, or a rule about it, carries
// another owner's mark (or none): another server's, or made by hand.
func (f *firewall) checkOwner() error {
	states, err := f.scan()
	if err != nil {
		return err
	}
	for _, st := range states {
		for _, r := range append(st.rules, st.jumps...) {
			if c := iptablesComment(r); c != f.mark {
				chain := r[1]
				if !strings.HasPrefix(chain, chainPrefix) {
					chain = r[len(r)-1]
				}
				return foreignError(fmt.Sprintf("iptables chain %s (table %s)", chain, st.table), c,
					fmt.Sprintf("delete the rules jumping to it, then iptables -t %s -F %s; iptables -t %s -X %s", st.table, chain, st.table, chain))
			}
		}
	}
	return nil
}

// teardown removes the bridge's chains and the rules jumping to them,
// including several copies left by crashed runs, as far as they carry our
// mark. A chain holding a rule of another owner stays (an error says so).
// Missing ones are skipped.
func (f *firewall) teardown() error {
	states, err := f.scan()
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		for _, r := range st.jumps {
			if iptablesComment(r) != f.mark {
				continue
			}
			r[0] = "-D"
			if _, err := iptables(st.table, r...); err != nil {
				return err
			}
		}
		foreign := map[string]bool{}
		for _, r := range st.rules {
			if iptablesComment(r) != f.mark {
				foreign[r[1]] = true
			}
		}
		var chains []string
		for _, c := range st.chains {
			if foreign[c] {
				errs = append(errs, fmt.Errorf("iptables chain %s (table %s) holds rules of another owner: left in place", c, st.table))
				continue
			}
			chains = append(chains, c)
		}
		// Empty them all first: they jump to each other.
		for _, c := range chains {
			if _, err := iptables(st.table, "-F", c); err != nil {
				return err
			}
		}
		for _, c := range chains {
			if _, err := iptables(st.table, "-X", c); err != nil {
				return err
			}
		}
	}
	return errors.Join(errs...)
}

// otherNATChains reports whether the nat table has the egress chain of
// another bridge than ours: another driver whose machines need
// ip_forward.
func (f *firewall) otherNATChains() (bool, error) {
	out, err := iptables("nat", "-S")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "-N" && strings.HasPrefix(fields[1], natChainPrefix) && fields[1] != f.nat {
			return true, nil
		}
	}
	return false, nil
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
	return f.marked("-d", f.bridgeIP, "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "ACCEPT")
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
