package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

const (
	// startTimeout bounds the wait for runc to start the builder.
	startTimeout = 60 * time.Second
	// killGrace is how long Destroy waits for runc to exit after killing
	// the container, before forcing.
	killGrace = 2 * time.Second
)

var machineNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,48}[a-zA-Z0-9])?$`)

// Machine is a running sandbox machine: a runc container, its network
// namespace and its directory.
type Machine struct {
	d      *Driver
	name   string
	memory int64     // the memory limit, 0 if none
	host   hostNames // names of the container, netns, veth and cgroup
	layout layout
	ip     netip.Addr

	// exited is closed when the runc child has been reaped; waitErr is
	// set before.
	exited  chan struct{}
	waitErr error

	// destroyMu serializes Destroy and guards the fields below it.
	destroyMu sync.Mutex
	cmd       *exec.Cmd // nil until runc started
	stdin     *os.File  // our end of the builder's stdin pipe, or nil
	netUp     bool      // the network namespace and veth are ours to delete
	destroyed bool
}

var (
	_ machine.Machine      = (*Machine)(nil)
	_ machine.OOMReporter  = (*Machine)(nil)
	_ machine.DiskReporter = (*Machine)(nil)
)

// Name returns the machine's name.
func (m *Machine) Name() string { return m.name }

// IP returns the machine's address on the bridge.
func (m *Machine) IP() net.IP { return net.IP(m.ip.AsSlice()) }

// Wait waits for the builder process (the runc child) to exit and returns
// its error.
func (m *Machine) Wait() error {
	<-m.exited
	return m.waitErr
}

// OOMKilled reports whether the kernel killed a process of the machine
// because the machine reached its memory limit (the oom_kill counter of its
// memory cgroup), and that limit. It knows only while the machine's cgroup
// exists: not once the builder process has exited.
func (m *Machine) OOMKilled() (killed bool, limit int64) {
	if m.d.memoryRoot == "" {
		return false, m.memory
	}
	data, err := os.ReadFile(filepath.Join(m.d.memoryRoot, m.host.cgroup, "memory.oom_control"))
	if err != nil {
		return false, m.memory
	}
	return oomKills(data) > 0, m.memory
}

// oomKills returns the oom_kill counter of a cgroup v1 memory.oom_control.
func oomKills(data []byte) int64 {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// Start creates machine spec.Name and starts the builder process in it. It
// returns when the builder process is running. ctx bounds the start only;
// the machine lives until Destroy.
func (d *Driver) Start(ctx context.Context, spec machine.Spec) (machine.Machine, error) {
	mounts, masked, err := d.checkSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("sandbox: start %s: %w", spec.Name, err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("sandbox: driver is closed")
	}
	if _, ok := d.machines[spec.Name]; ok {
		d.mu.Unlock()
		return nil, fmt.Errorf("sandbox: start %s: a machine of that name exists", spec.Name)
	}
	ip, err := d.leaseIPLocked()
	if err != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("sandbox: start %s: %w", spec.Name, err)
	}
	m := &Machine{
		d:      d,
		name:   spec.Name,
		host:   machineHostNames(d.cfg.Bridge, spec.Name),
		layout: layout{dir: filepath.Join(d.cfg.StateDir, spec.Name), disk: spec.Resources.Disk},
		ip:     ip,
		memory: spec.Resources.Memory,
		exited: make(chan struct{}),
	}
	d.machines[spec.Name] = m
	d.mu.Unlock()

	if err := m.start(ctx, spec, mounts, masked); err != nil {
		if derr := m.Destroy(context.Background()); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("sandbox: start %s: %w", spec.Name, err)
	}
	return m, nil
}

// checkSpec validates spec and returns its mounts and the paths to mask
// in them.
func (d *Driver) checkSpec(spec machine.Spec) (mounts []specMount, masked []string, err error) {
	if !machineNameRE.MatchString(spec.Name) {
		return nil, nil, fmt.Errorf("machine name %q: want up to 50 letters, digits and inner '-'", spec.Name)
	}
	if !filepath.IsAbs(spec.Builder) {
		return nil, nil, fmt.Errorf("builder %q: must be an absolute path", spec.Builder)
	}
	if fi, err := os.Stat(spec.Builder); err != nil {
		return nil, nil, fmt.Errorf("builder: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("builder %s: not a regular file", spec.Builder)
	}
	if spec.Image == nil || len(spec.Image.Layers) == 0 {
		return nil, nil, errors.New("no image to boot from: sandbox machines boot from an OCI image (see `hangar image`)")
	}
	reserved := []string{"/", "/home", "/tmp", "/run", "/usr", "/etc", "/var", "/opt"}
	for _, mnt := range spec.Mounts {
		src, err := cleanAbs("mount source", mnt.Source)
		if err != nil {
			return nil, nil, err
		}
		dst, err := cleanAbs("mount target", mnt.Target)
		if err != nil {
			return nil, nil, err
		}
		if _, err := os.Stat(src); err != nil {
			return nil, nil, fmt.Errorf("mount source: %w", err)
		}
		for _, r := range reserved {
			if dst == r {
				return nil, nil, fmt.Errorf("mount target %s: would hide %s", dst, r)
			}
		}
		for _, r := range []string{"/proc", "/sys", "/dev", "/.hangar"} {
			if within(dst, r) {
				return nil, nil, fmt.Errorf("mount target %s: inside %s", dst, r)
			}
		}
		if within(src, d.cfg.StateDir) {
			return nil, nil, fmt.Errorf("mount source %s: inside the machines' state dir", src)
		}
		for _, h := range d.hidden {
			switch {
			case src == h:
				return nil, nil, fmt.Errorf("mount source %s: masked, machines must not see it", src)
			case within(h, src):
				// Hidden paths below the source stay hidden.
				masked = append(masked, filepath.Join(dst, strings.TrimPrefix(h, src)))
			}
			// A source strictly inside a masked path is an explicit
			// exposure of that subtree (a repository mirror in the data dir).
		}
		mounts = append(mounts, specMount{source: src, target: dst})
	}
	return mounts, masked, nil
}

func mountTargets(mounts []specMount) []string {
	out := make([]string, len(mounts))
	for i, m := range mounts {
		out[i] = m.target
	}
	return out
}

// start does the work of Start; on error, Destroy cleans up.
func (m *Machine) start(ctx context.Context, spec machine.Spec, mounts []specMount, masked []string) error {
	d := m.d
	m.destroyMu.Lock()
	defer m.destroyMu.Unlock()
	if m.destroyed {
		return errors.New("destroyed while starting")
	}
	// The directory and the network are independent: build them at once.
	var dirErr, netErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dirErr = m.layout.prepareDir(machineFiles{name: m.name, ip: m.ip, uid: d.cfg.BuilderUID,
			image: spec.Image, dns: d.NameServers(), volatile: d.volatile, gitSafe: mountTargets(mounts)})
	}()
	netErr = createNetwork(netConfig{
		host:        m.host,
		ip:          netip.PrefixFrom(m.ip, d.subnet.Bits()),
		gateway:     d.bridgeIP,
		bridgeIndex: d.bridgeIndex,
	})
	wg.Wait()
	m.netUp = netErr == nil // createNetwork cleans up after itself
	if err := errors.Join(dirErr, netErr); err != nil {
		return err
	}
	s := ociSpec(ociParams{
		name:     m.name,
		layout:   m.layout,
		builder:  spec.Builder,
		args:     spec.Args,
		env:      spec.Env,
		mounts:   mounts,
		masked:   masked,
		netns:    m.host.netnsPath(),
		cgroup:   m.host.cgroup,
		caps:     d.caps,
		seccomp:  d.seccomp,
		res:      spec.Resources,
		memsw:    d.memsw,
		imageEnv: spec.Image.Env,
	})
	if err := writeSpec(m.layout.config(), s); err != nil {
		return fmt.Errorf("write OCI config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.startRunc(spec.Stdin, spec.Output); err != nil {
		return err
	}
	return m.waitStarted(ctx)
}

// runc runs a runc subcommand on our state root.
func (d *Driver) runc(args ...string) error {
	full := append([]string{"--root", d.runcRoot}, args...)
	cmd := exec.Command(d.cfg.Runtime, full...)
	cmd.Env = []string{defaultPath}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// startRunc starts `runc run` in the foreground as our child.
func (m *Machine) startRunc(stdin io.Reader, output io.Writer) error {
	cmd := exec.Command(m.d.cfg.Runtime,
		"--root", m.d.runcRoot, "--log", m.layout.runcLog(), "--log-format", "json",
		"run", "--bundle", m.layout.dir, "--pid-file", m.layout.pidFile(), m.host.id)
	cmd.Dir = m.layout.dir
	cmd.Env = []string{defaultPath}
	// Own process group: a terminal's ^C reaches Hangar, not every build.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = output, output
	cmd.WaitDelay = 5 * time.Second
	var copyIn func()
	switch in := stdin.(type) {
	case nil:
	case *os.File:
		cmd.Stdin = in
	default:
		// Our own pipe rather than exec's: exec's Wait would wait for the
		// copy, that is for the runner's reader to end.
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		defer r.Close()
		cmd.Stdin = r
		m.stdin = w
		copyIn = func() {
			_, _ = io.Copy(w, in)
			w.Close()
		}
	}
	if err := cmd.Start(); err != nil {
		if m.stdin != nil {
			m.stdin.Close()
			m.stdin = nil
		}
		return fmt.Errorf("start runc: %w", err)
	}
	m.cmd = cmd
	if copyIn != nil {
		go copyIn()
	}
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("builder: %w", err)
		}
		m.waitErr = err
		close(m.exited)
	}()
	return nil
}

// waitStarted waits until runc has written the pid file, which it does once
// the builder process runs, or has failed.
func (m *Machine) waitStarted(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	for {
		if _, err := os.Stat(m.layout.pidFile()); err == nil {
			return nil
		}
		select {
		case <-m.exited:
			if _, err := os.Stat(m.layout.pidFile()); err == nil {
				return nil // the builder ran, and has exited already
			}
			if msg := lastRuncError(m.layout.runcLog()); msg != "" {
				return fmt.Errorf("runc: %s", msg)
			}
			return fmt.Errorf("runc failed: %w", m.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("runc did not start the builder within %v", startTimeout)
		case <-tick.C:
		}
	}
}

// lastRuncError returns the last error message in runc's JSON log.
func lastRuncError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msg string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// killInit sends SIGKILL to the container's init, which kills its whole PID
// namespace: what `runc kill ID KILL` does, without starting runc. It
// reports false if it could not make sure that the pid in runc's pid file is
// still our runc's child, and then did nothing.
func (m *Machine) killInit() bool {
	data, err := os.ReadFile(m.layout.pidFile())
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// The pidfd pins the process; check that it is the one runc started
	// (its parent is our runc child, which we have not reaped).
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := bytes.Cut(stat, []byte(") "))
	fields := strings.Fields(string(rest))
	if !ok || len(fields) < 2 || fields[1] != strconv.Itoa(m.cmd.Process.Pid) {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}

// Destroy kills every process of the machine and removes its container,
// network, directory and cgroups. It is idempotent and safe to call
// concurrently; ctx bounds the wait for a graceful runc exit only, what
// follows is forced and bounded.
func (m *Machine) Destroy(ctx context.Context) error {
	m.destroyMu.Lock()
	defer m.destroyMu.Unlock()
	if m.destroyed {
		return nil
	}
	if err := m.teardown(ctx); err != nil {
		return fmt.Errorf("sandbox: destroy %s: %w", m.name, err)
	}
	m.destroyed = true
	m.d.mu.Lock()
	delete(m.d.machines, m.name)
	delete(m.d.usedIPs, m.ip)
	m.d.mu.Unlock()
	return nil
}

// teardown removes everything of the machine, in the order that leaves
// nothing behind: container, network, directory, cgroups. m.destroyMu is
// held.
func (m *Machine) teardown(ctx context.Context) error {
	var errs []error
	if err := m.stopContainer(ctx); err != nil {
		errs = append(errs, err)
	}
	// Network and directory are independent once the container is gone.
	var netErr error
	var wg sync.WaitGroup
	if m.netUp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			netErr = deleteNetwork(m.host)
		}()
	}
	// The directory goes last: while it exists, it records the machine's
	// cgroups and network for the next New, should removing them fail.
	cgErr := removeCgroups(m.d.cgroupRoots, m.host.cgroup)
	if cgErr != nil {
		errs = append(errs, cgErr)
	}
	wg.Wait()
	if cgErr == nil && (netErr == nil || !m.netUp) {
		if err := removeDir(m.layout.dir); err != nil {
			errs = append(errs, err)
		} else if m.layout.disk > 0 {
			if err := waitLoopsDetached(m.layout.dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if m.netUp {
		if netErr != nil {
			errs = append(errs, netErr)
		} else {
			m.netUp = false
		}
	}
	return errors.Join(errs...)
}

// stopContainer kills the container, waits for our runc child and deletes
// the container's runc state if runc left it.
func (m *Machine) stopContainer(ctx context.Context) error {
	var errs []error
	if m.cmd != nil {
		select {
		case <-m.exited:
		default:
			// Killing the init kills the whole PID namespace; runc run then
			// deletes the container and exits.
			var killErr error
			if !m.killInit() {
				killErr = m.d.runc("kill", m.host.id, "KILL")
			}
			grace, cancel := context.WithTimeout(ctx, killGrace)
			select {
			case <-m.exited:
			case <-grace.Done():
			}
			cancel()
			select {
			case <-m.exited:
			default:
				if err := m.d.runc("delete", "--force", m.host.id); err != nil {
					errs = append(errs, killErr, err)
				}
				_ = m.cmd.Process.Kill()
				select {
				case <-m.exited:
				case <-time.After(killGrace):
					errs = append(errs, errors.New("runc did not exit"))
				}
			}
		}
		if m.stdin != nil {
			m.stdin.Close()
			m.stdin = nil
		}
	}
	if _, err := os.Stat(filepath.Join(m.d.runcRoot, m.host.id)); err == nil {
		if err := m.d.runc("delete", "--force", m.host.id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
