package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// Host-global names.
//
// A machine's directory (StateDir/<name>) and runc state (StateDir/.runc)
// belong to one driver, but its network namespace, host veth and cgroup live
// in namespaces the whole host shares. Two Hangar servers on one host, each
// with its own Bridge, both name their machines build-1, build-2...; so
// every host-global name is made of the driver's bridge (unique per driver
// on a host) and the machine name:
//
//	runc container id   hangar-<bridge>_<name>
//	runc state          StateDir/.runc/hangar-<bridge>_<name>
//	network namespace   hangar-<bridge>_<name>, bound at /run/netns/hangar-<bridge>_<name>
//	host veth           "hgr" + the first 12 hex digits of sha256("hangar-<bridge>_<name>")
//	                    (15 bytes, the limit of interface names)
//	cgroup              /hangar-<bridge>/<name> in every hierarchy; Close
//	                    removes /hangar-<bridge>
//
// Bridge names may contain '_' but machine names may not, so an id maps back
// to a single (bridge, machine name) pair: two drivers never share a name,
// and a driver's cleanup (a failed Start, Destroy, Close, or New recovering
// after a crash) never touches another driver's resources. Inside the
// machine only the machine name shows: its hostname, /etc/hostname and
// /etc/hosts.
const (
	// hostPrefix starts runc container ids, netns names and cgroup parents.
	hostPrefix = "hangar-"
	// vethPrefix starts host veth names.
	vethPrefix = "hgr"
	netnsDir   = "/run/netns"
)

// hostNames are the host-global names of one machine's resources.
type hostNames struct {
	// id is the runc container id and the network namespace's name.
	id string
	// veth is the name of the host end of the machine's veth pair.
	veth string
	// cgroup is the machine's cgroup path, relative to each hierarchy's root.
	cgroup string
}

// machineHostNames returns the host-global names of machine name of the
// driver on bridge.
func machineHostNames(bridge, name string) hostNames {
	id := hostPrefix + bridge + "_" + name
	return hostNames{
		id:     id,
		veth:   hostVethName(id),
		cgroup: "/" + cgroupParent(bridge) + "/" + name,
	}
}

// netnsPath is where the machine's network namespace is bound.
func (h hostNames) netnsPath() string { return filepath.Join(netnsDir, h.id) }

// hostVethName is the name of the host end of the veth of the machine of
// runc container id id: a hash, because interface names are limited to 15
// bytes.
func hostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return vethPrefix + hex.EncodeToString(sum[:6])
}

// cgroupParent is the parent cgroup (relative to a hierarchy's root) of the
// machines of the driver on bridge.
func cgroupParent(bridge string) string { return hostPrefix + bridge }
