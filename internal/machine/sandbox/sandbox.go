// Package sandbox is the "sandbox" machine driver: every build runs in its own
// runc container on this host, with its own network namespace on a private
// bridge, booted from an OCI image.
//
// A machine's root is an overlay of the image's unpacked layers (read-only,
// shared by every machine of that image; see internal/image) under a
// writable layer of its own that Destroy removes, so a build may `sudo
// apt-get install` or write anywhere without changing the image. Nothing of
// the host's filesystem is visible: not its /etc, /var or /usr, not
// Hangar's data, not the other machines; only the builder binary and the
// Spec's mounts are bound in, read-only. The driver writes the machine's
// account files (the `builder` account, passwordless sudo), host name and
// resolver into the writable layer. The builder process runs as root; the
// `builder` account is what steps run as. Every process in a machine runs
// under Docker's default seccomp profile made stricter (seccomp.go): no new
// namespaces, kernel keyring, kernel modules or mounts, for root in the
// machine too.
//
// Network: the host side of each machine's veth is an isolated port of the
// driver's bridge, so machines cannot reach each other; the host accepts from
// the bridge only the ports of listeners made by Driver.Listen, and machines
// reach the outside only when Config.Egress is set, and then only public
// IPv4 addresses (see egress.go). Machines have no IPv6. Firewall state lives
// in iptables chains named HANGAR-*-<bridge>, removed by Close. The bridge
// and every rule carry the driver's owner mark, and a driver never removes
// what carries another's (see owner.go).
//
// The names of a machine's host-global resources (runc container id, network
// namespace, host veth, cgroup) are made of the bridge and the machine name
// (see names.go), so that drivers on different bridges can share a host
// although they give their machines the same names.
//
// The driver needs root, runc and iptables on the host; images need bash,
// git and sudo for builds.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

// Config configures the sandbox driver. The zero value of every field but
// StateDir selects a default.
type Config struct {
	// Subnet is the IPv4 network of the bridge, default "10.213.42.0/24".
	// The bridge takes the first address, machines the following ones.
	Subnet string
	// Bridge is the name of the host bridge, default "hangar0". It also
	// names the iptables chains and the machines' network namespaces, veths,
	// cgroups and runc containers (see names.go), so two drivers with
	// different bridges (and subnets) can share a host.
	Bridge string
	// Egress lets machines open connections to public IPv4 addresses (NAT
	// through the host), never to the host, other machines or private,
	// CGNAT and link-local networks (see egress.go). It sets
	// net.ipv4.ip_forward=1 on the host if it was not, and Close sets it
	// back to 0 unless another driver's egress still needs it. Without it
	// machines reach nothing but the Listen ports.
	Egress bool
	// EgressAllow are IPv4 networks machines may reach although egress
	// rules close them (a proxy on a private address, say); never the host
	// or other machines. Needs Egress.
	EgressAllow []netip.Prefix
	// EgressDeny are IPv4 networks machines may not reach. Between
	// EgressAllow and EgressDeny the longest prefix wins.
	EgressDeny []netip.Prefix
	// DNS are the name servers of machines with Egress (their port 53 is
	// open). Default: the host's, see hostNameServers. Without Egress
	// machines have none.
	DNS []netip.Addr
	// StateDir holds one directory per machine and runc's state. Required,
	// absolute, used by one driver at a time (flock). New removes whatever
	// an earlier, crashed driver left in it. It also identifies the driver
	// as the owner of the host resources it creates.
	StateDir string
	// Mask lists host paths that must never be visible inside a machine,
	// such as Hangar's data directory: a Spec mount of one is refused, and
	// one below a Spec mount's source is hidden by an empty read-only
	// tmpfs. A Spec mount of a path strictly inside a masked one exposes
	// that subtree only: the runner mounts repository mirrors from the data
	// directory that way. StateDir is masked too, and no Spec mount may
	// come from it.
	Mask []string
	// Runtime is the path of the runc binary, default "runc" from PATH.
	Runtime string
	// BuilderUID is the uid (and gid) of the builder account inside the
	// machines; an image account with it fails the machine's start.
	// Default: DefaultBuilderUID.
	BuilderUID int
}

const (
	defaultSubnet = "10.213.42.0/24"
	defaultBridge = "hangar0"
	builderUser   = "builder"
	builderHome   = "/home/builder"
	// builderPath is where spec.Builder appears inside the machine.
	builderPath = "/.hangar/hangar"
)

// DefaultBuilderUID is the builder account's default uid and gid: above
// the range Debian gives to accounts made at install time.
const DefaultBuilderUID = 2000

// Driver is the sandbox machine driver. Create it with New; it owns the
// bridge and the firewall rules until Close.
type Driver struct {
	cfg      Config
	runcRoot string // runc --root, inside StateDir
	lock     *os.File
	subnet   netip.Prefix
	bridgeIP netip.Addr
	fw       *firewall
	// mark is the owner mark of the host resources it creates (owner.go).
	mark string
	// cgroupRoots are the mount points of the cgroup hierarchies.
	cgroupRoots []string
	// memoryRoot is the v1 memory hierarchy's ("" if none: no OOM
	// reports) and memsw whether it accounts swap (memory+swap limits).
	memoryRoot string
	memsw      bool
	// hidden are the Mask paths and StateDir: never visible in a machine.
	hidden []string
	// bridgeIndex is the bridge's interface index.
	bridgeIndex int
	// volatile is whether overlays can skip syncs.
	volatile bool
	// caps are the machines' capabilities and seccomp their syscall
	// filter, made for caps.
	caps    []string
	seccomp *specs.LinuxSeccomp

	mu sync.Mutex
	// machines are the live machines by name; guarded by mu.
	machines map[string]*Machine
	// usedIPs are the leased machine addresses; guarded by mu.
	usedIPs map[netip.Addr]bool
	// listeners are the open Listen listeners; guarded by mu.
	listeners map[*listener]bool
	// closed is set by Close; guarded by mu.
	closed bool
	// forwardWas is ip_forward before New changed it ("" if unchanged).
	forwardWas string
}

var _ machine.Driver = (*Driver)(nil)

var ifNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

// New validates cfg, refuses a bridge or chains of another owner before it
// changes anything, tries an overlay, cleans up after any crashed earlier
// driver using the same StateDir, and creates the bridge and firewall
// rules.
func New(cfg Config) (*Driver, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: the sandbox driver must run as root")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	subnet, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || !subnet.Addr().Is4() || subnet.Bits() > 29 || subnet.Bits() < 8 {
		return nil, fmt.Errorf("sandbox: subnet %q: want an IPv4 network between /8 and /29", cfg.Subnet)
	}
	subnet = subnet.Masked()
	for _, a := range cfg.DNS {
		if subnet.Contains(a) {
			return nil, fmt.Errorf("sandbox: name server %s is in the machines' subnet %s", a, subnet)
		}
	}
	d := &Driver{
		cfg:       cfg,
		runcRoot:  filepath.Join(cfg.StateDir, ".runc"),
		subnet:    subnet,
		bridgeIP:  subnet.Addr().Next(),
		machines:  map[string]*Machine{},
		usedIPs:   map[netip.Addr]bool{},
		listeners: map[*listener]bool{},
		hidden:    append(slices.Clone(cfg.Mask), cfg.StateDir),
		volatile:  overlayVolatile(),
		mark:      ownerMark(cfg.StateDir),
		caps:      capabilities,
	}
	if d.seccomp, err = seccompProfile(d.caps); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if d.cgroupRoots, err = cgroupMounts(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	for _, r := range d.cgroupRoots {
		if _, err := os.Stat(filepath.Join(r, "memory.oom_control")); err == nil {
			d.memoryRoot = r
			_, err = os.Stat(filepath.Join(r, "memory.memsw.limit_in_bytes"))
			d.memsw = err == nil
			break
		}
	}
	if err := os.MkdirAll(d.runcRoot, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create state dir: %w", err)
	}
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.StateDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: lock state dir: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("sandbox: state dir %s is used by another driver: %w", cfg.StateDir, err)
	}
	d.lock = lock
	// Nothing on the host has changed yet: refuse if the bridge or its
	// chains are another server's.
	if err := d.checkOwner(); err != nil {
		d.lock.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := d.checkOverlay(); err != nil {
		d.lock.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := d.recoverLeftovers(); err != nil {
		d.lock.Close()
		return nil, fmt.Errorf("sandbox: clean up an earlier run: %w", err)
	}
	if err := d.setupHost(); err != nil {
		d.teardownHost()
		d.lock.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return d, nil
}

// checkOwner fails if the bridge or its iptables chains exist and are not
// ours (see owner.go), or if the subnet is in use on the host.
func (d *Driver) checkOwner() error {
	if err := checkBridgeOwner(d.cfg.Bridge, d.mark); err != nil {
		return err
	}
	if err := newFirewall(d.cfg.Bridge, d.subnet, d.bridgeIP, d.mark).checkOwner(); err != nil {
		return err
	}
	return checkSubnetFree(d.subnet, d.cfg.Bridge)
}

// setupHost creates the bridge and the firewall rules.
func (d *Driver) setupHost() error {
	idx, err := createBridge(d.cfg.Bridge, netip.PrefixFrom(d.bridgeIP, d.subnet.Bits()), d.mark)
	if err != nil {
		return err
	}
	d.bridgeIndex = idx
	d.fw = newFirewall(d.cfg.Bridge, d.subnet, d.bridgeIP, d.mark)
	policy := egressPolicy{on: d.cfg.Egress}
	if d.cfg.Egress {
		policy.rules = sortedRules(d.cfg.EgressAllow, d.cfg.EgressDeny)
		policy.dns = d.cfg.DNS
		if policy.hostNets, err = hostNetworks(d.cfg.Bridge); err != nil {
			return err
		}
	}
	if err := d.fw.setup(policy); err != nil {
		return err
	}
	if d.cfg.Egress {
		was, err := setSysctl("net/ipv4/ip_forward", "1")
		if err != nil {
			return fmt.Errorf("enable ip forwarding: %w", err)
		}
		if was != "1" {
			d.forwardWas = was
		}
	}
	return nil
}

// teardownHost removes what setupHost created; it ignores what is missing.
func (d *Driver) teardownHost() error {
	var errs []error
	if d.fw == nil {
		d.fw = newFirewall(d.cfg.Bridge, d.subnet, d.bridgeIP, d.mark)
	}
	if err := d.fw.teardown(); err != nil {
		errs = append(errs, err)
	}
	if err := deleteBridge(d.cfg.Bridge, d.mark); err != nil {
		errs = append(errs, err)
	}
	if d.forwardWas != "" {
		// Not under another driver's machines, though: ip_forward is
		// host-wide.
		if other, err := d.fw.otherNATChains(); err != nil {
			errs = append(errs, err)
		} else if !other {
			if _, err := setSysctl("net/ipv4/ip_forward", d.forwardWas); err != nil {
				errs = append(errs, fmt.Errorf("restore ip forwarding: %w", err))
			}
		}
		d.forwardWas = ""
	}
	for _, root := range d.cgroupRoots {
		// Our own parent only: other drivers' machines live in theirs.
		p := filepath.Join(root, cgroupParent(d.cfg.Bridge))
		if err := unix.Rmdir(p); err != nil && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// NameServers returns the machines' name servers: none without egress.
func (d *Driver) NameServers() []netip.Addr {
	if !d.cfg.Egress {
		return nil
	}
	return slices.Clone(d.cfg.DNS)
}

// probeDir is the directory of StateDir where New tries an overlay.
const probeDir = ".probe"

// checkOverlay mounts (and unmounts) an overlay the way machines get them,
// with its layers in StateDir, so that a kernel or file system that refuses
// that fails New rather than every build.
func (d *Driver) checkOverlay() error {
	dir := filepath.Join(d.cfg.StateDir, probeDir)
	if err := removeDir(dir); err != nil {
		return err
	}
	merged, lower, upper, work := filepath.Join(dir, "merged"), filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, p := range []string{merged, lower, upper, work} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return err
		}
	}
	opts, err := overlayOptions([]string{lower}, upper, work, d.volatile)
	if err != nil {
		return err
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		_ = removeDir(dir)
		return fmt.Errorf("overlay with layers in %s: %w (put the machines' state on another file system with hangar server --sandbox-dir)", d.cfg.StateDir, err)
	}
	return removeDir(dir)
}

// Name returns "sandbox".
func (d *Driver) Name() string { return "sandbox" }

// Isolated returns true: machines are isolated from the host and from each
// other, and Mounts appear at their Target.
func (d *Driver) Isolated() bool { return true }

// BridgeIP returns the host's address on the bridge, where machines reach
// the listeners made by Listen.
func (d *Driver) BridgeIP() net.IP { return net.IP(d.bridgeIP.AsSlice()) }

// Listen listens on a free TCP port of the bridge address and lets machines
// reach it. Closing the listener (or the driver) withdraws the permission.
func (d *Driver) Listen() (net.Listener, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, errors.New("sandbox: driver is closed")
	}
	l, err := net.Listen("tcp4", net.JoinHostPort(d.bridgeIP.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("sandbox: listen: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := d.fw.allowPort(port); err != nil {
		l.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	ln := &listener{Listener: l, d: d, port: port}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		ln.closeLocked()
		return nil, errors.New("sandbox: driver is closed")
	}
	d.listeners[ln] = true
	return ln, nil
}

// listener is a Listen listener; closing it removes its firewall rule.
type listener struct {
	net.Listener
	d    *Driver
	port int
	once sync.Once
	err  error
}

func (l *listener) Close() error {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return l.closeLocked()
}

// closeLocked closes l; l.d.mu is held.
func (l *listener) closeLocked() error {
	l.once.Do(func() {
		delete(l.d.listeners, l)
		err := l.Listener.Close()
		if ferr := l.d.fw.denyPort(l.port); ferr != nil {
			err = errors.Join(err, ferr)
		}
		l.err = err
	})
	return l.err
}

// Close destroys the machines still alive, closes the listeners and
// removes the firewall rules, the bridge and the parent cgroups.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	live := make([]*Machine, 0, len(d.machines))
	for _, m := range d.machines {
		live = append(live, m)
	}
	d.mu.Unlock()

	var errs []error
	for _, m := range live {
		if err := m.Destroy(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	for l := range d.listeners {
		if err := l.closeLocked(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.mu.Unlock()
	if err := d.teardownHost(); err != nil {
		errs = append(errs, err)
	}
	d.lock.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sandbox: close: %w", err)
	}
	return nil
}

// setDefaults fills in defaults and validates c.
func (c *Config) setDefaults() error {
	if c.Subnet == "" {
		c.Subnet = defaultSubnet
	}
	if c.Bridge == "" {
		c.Bridge = defaultBridge
	}
	if !ifNameRE.MatchString(c.Bridge) {
		return fmt.Errorf("bridge name %q: want at most 15 letters, digits, '-', '_' or '.'", c.Bridge)
	}
	if c.Runtime == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			return errors.New("runc not found in PATH: install it with `apt-get install runc`")
		}
		c.Runtime = p
	} else if _, err := exec.LookPath(c.Runtime); err != nil {
		return fmt.Errorf("runtime %s: %w (install runc with `apt-get install runc`)", c.Runtime, err)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return errors.New("iptables not found in PATH: install it with `apt-get install iptables`")
	}
	if err := c.checkEgress(); err != nil {
		return err
	}
	if c.Egress && c.DNS == nil {
		c.DNS = hostNameServers()
	}
	var err error
	if c.StateDir, err = cleanAbs("state dir", c.StateDir); err != nil {
		return err
	}
	if strings.ContainsAny(c.StateDir, ",:") {
		return fmt.Errorf("state dir %s: must not contain ',' or ':' (overlay options)", c.StateDir)
	}
	mask := make([]string, 0, len(c.Mask))
	for _, p := range c.Mask {
		if p, err = cleanAbs("mask path", p); err != nil {
			return err
		}
		mask = append(mask, p)
	}
	c.Mask = mask
	switch {
	case c.BuilderUID < 0:
		return fmt.Errorf("builder uid %d: must be positive", c.BuilderUID)
	case c.BuilderUID == 0:
		c.BuilderUID = DefaultBuilderUID
	}
	return nil
}

func cleanAbs(what, p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %q: must be an absolute path", what, p)
	}
	return filepath.Clean(p), nil
}

// within reports whether p is dir or lies inside it.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// leaseIP reserves a free machine address; d.mu is held.
func (d *Driver) leaseIPLocked() (netip.Addr, error) {
	for a := d.bridgeIP.Next(); d.subnet.Contains(a); a = a.Next() {
		if !d.subnet.Contains(a.Next()) {
			break // the broadcast address
		}
		if !d.usedIPs[a] {
			d.usedIPs[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s", d.subnet)
}
