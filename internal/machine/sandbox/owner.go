package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
)

// Ownership of host-global resources.
//
// The bridge, the iptables chains and the parent cgroup are named after
// Config.Bridge, which an operator may (by mistake) give two servers. So a
// driver marks what it creates with its owner mark, made of its StateDir
// (which one driver at a time holds, under flock):
//
//	bridge          its ifalias (`ip -d link show` shows it) is the mark
//	iptables rules  every rule in the chains, and every rule jumping to
//	                them, has `-m comment --comment <mark>`
//	machine cgroups their machine's directory in StateDir records them (see
//	                recoverLeftovers); the parent cgroup of the bridge is
//	                only removed by rmdir, which fails while it has children
//
// New refuses, before it changes anything on the host, when the bridge or a
// chain of its names exists with another mark (or none: made by hand or by
// an older Hangar); resources with its own mark are leftovers of its own
// crashed run, which it removes. Close removes only what carries its mark.

// ownerPrefix starts every owner mark.
const ownerPrefix = "hangar:"

// plainMarkRE is what a StateDir may hold to appear in the mark as is: no
// spaces or quotes (iptables -S quotes comments) and short enough for an
// iptables comment (255 bytes) and an ifalias.
var plainMarkRE = regexp.MustCompile(`^/[A-Za-z0-9/._+-]{0,200}$`)

// ownerMark is the mark of the driver whose StateDir is stateDir: the path
// itself when it can be, else a hash of it.
func ownerMark(stateDir string) string {
	if plainMarkRE.MatchString(stateDir) {
		return ownerPrefix + stateDir
	}
	sum := sha256.Sum256([]byte(stateDir))
	return ownerPrefix + "sha256-" + hex.EncodeToString(sum[:12])
}

// describeOwner says whose a resource with mark is, for error messages.
func describeOwner(mark string) string {
	if dir, ok := strings.CutPrefix(mark, ownerPrefix); ok && strings.HasPrefix(dir, "/") {
		return "another Hangar server (its machines' state in " + dir + ")"
	}
	if strings.HasPrefix(mark, ownerPrefix) {
		return "another Hangar server (owner " + mark + ")"
	}
	return ""
}

// foreignError is the refusal for a host resource that is not ours.
func foreignError(what, mark, remove string) error {
	const other = "run this server beside it with its own bridge and subnet (hangar server --sandbox-bridge and --sandbox-subnet)"
	if owner := describeOwner(mark); owner != "" {
		return fmt.Errorf("%s belongs to %s: %s; nothing was changed", what, owner, other)
	}
	return fmt.Errorf("%s exists but carries no Hangar owner mark (made by hand, by another program or by an older Hangar): %s, or if it is a leftover remove it (%s); nothing was changed",
		what, other, remove)
}

// checkBridgeOwner fails unless the link name is missing, or is a bridge
// carrying mark (the leftover of our own crashed run).
func checkBridgeOwner(name, mark string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("link %s exists and is a %s, not a bridge: choose another bridge name (hangar server --sandbox-bridge); nothing was changed", name, l.Type())
	}
	if alias := l.Attrs().Alias; alias != mark {
		return foreignError("bridge "+name, alias, "ip link del "+name)
	}
	return nil
}

// iptablesComment returns the comment of a rule in `iptables -S` form
// (split into fields), without its quotes, or "".
func iptablesComment(fields []string) string {
	for i, f := range fields {
		if f == "--comment" && i+1 < len(fields) {
			return strings.Trim(fields[i+1], `"`)
		}
	}
	return ""
}
