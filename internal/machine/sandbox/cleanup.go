package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// bridgeRecord is the file of StateDir that names the bridge of the driver
// that used StateDir last, whose leftovers New removes.
const bridgeRecord = ".bridge"

// recoverLeftovers removes what a crashed driver with the same StateDir
// left: containers in our runc root, and for every machine directory its
// network namespace, veth, cgroups and the directory itself. The names of
// the host-global ones are those of the crashed driver's bridge (recorded
// in StateDir, see names.go): it never touches another driver's machines.
func (d *Driver) recoverLeftovers() error {
	var errs []error
	ids, err := os.ReadDir(d.runcRoot)
	if err != nil {
		return err
	}
	for _, e := range ids {
		if err := d.runc("delete", "--force", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	bridge := d.previousBridge()
	entries, err := os.ReadDir(d.cfg.StateDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.IsDir() {
			continue
		}
		if machineNameRE.MatchString(name) {
			h := machineHostNames(bridge, name)
			if err := deleteNetwork(h); err != nil {
				errs = append(errs, err)
			}
			if err := removeCgroups(d.cgroupRoots, h.cgroup); err != nil {
				errs = append(errs, err)
			}
		}
		if err := removeDir(filepath.Join(d.cfg.StateDir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	if bridge != d.cfg.Bridge {
		for _, root := range d.cgroupRoots {
			// Fails if the old bridge is another driver's now; fine.
			_ = os.Remove(filepath.Join(root, cgroupParent(bridge)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.cfg.StateDir, bridgeRecord), []byte(d.cfg.Bridge+"\n"), 0o600)
}

// previousBridge returns the bridge recorded in StateDir by the last driver
// that used it, or ours if there is no valid record.
func (d *Driver) previousBridge() string {
	data, err := os.ReadFile(filepath.Join(d.cfg.StateDir, bridgeRecord))
	if err != nil {
		return d.cfg.Bridge
	}
	if b := strings.TrimSpace(string(data)); ifNameRE.MatchString(b) {
		return b
	}
	return d.cfg.Bridge
}

// cgroupMounts returns the mount points of the cgroup hierarchies.
func cgroupMounts() ([]string, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range mounts {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			roots = append(roots, m.point)
		}
	}
	return roots, nil
}

// cgroupRemoveTimeout bounds how long removeCgroups retries a cgroup that
// is still busy: the processes of a killed machine (thousands, after a fork
// bomb) take a while to leave it.
const cgroupRemoveTimeout = 15 * time.Second

// removeCgroups removes the directories of cgroup path (relative to a
// hierarchy's root) that runc left in any hierarchy, sub-cgroups first. A
// busy one (EBUSY: processes still in it) has its processes killed and is
// retried, with backoff, for cgroupRemoveTimeout at most.
func removeCgroups(roots []string, path string) error {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	var errs []error
	for _, r := range roots {
		if err := removeCgroupTree(filepath.Join(r, path), deadline); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes cgroup dir and its sub-cgroups, retrying until
// deadline while it is busy.
func removeCgroupTree(dir string, deadline time.Time) error {
	wait := 2 * time.Millisecond
	for {
		err := rmdirTree(dir)
		if err == nil || !errors.Is(err, unix.EBUSY) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (still busy after %v)", err, cgroupRemoveTimeout)
		}
		killCgroupTree(dir)
		time.Sleep(wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// rmdirTree removes the cgroup directory dir, deepest sub-cgroups first; a
// missing one is fine.
func rmdirTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// killCgroupTree sends SIGKILL to every process left in cgroup dir and its
// sub-cgroups (cgroup.kill where the hierarchy has it).
func killCgroupTree(dir string) {
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if os.WriteFile(filepath.Join(p, "cgroup.kill"), []byte("1"), 0) == nil {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		return nil
	})
}

// removeDir unmounts whatever is mounted under dir, deepest first, and
// removes dir.
func removeDir(dir string) error {
	mounts, err := readMountinfo()
	if err != nil {
		return err
	}
	var under []string
	for _, m := range mounts {
		if within(m.point, dir) {
			under = append(under, m.point)
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	for _, p := range under {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove machine dir: %w", err)
	}
	return nil
}

type mountEntry struct{ point, fstype string }

// readMountinfo parses /proc/self/mountinfo.
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mountEntry{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}
