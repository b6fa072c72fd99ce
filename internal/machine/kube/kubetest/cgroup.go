package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupSeq tells apart the cgroups of the kubelets of one process.
var cgroupSeq atomic.Int64

// cgroups puts each container in its own cgroup v1, in the memory and cpu
// hierarchies, with the container's memory and CPU limits, as a kubelet
// does: under a directory of the kubelet's own (created by newCgroups and
// removed by close) in the test process's cgroups, so that the limits
// nest in the test's.
type cgroups struct {
	// dirs are the kubelet's directories, by controller.
	dirs map[string]string
}

// limitControllers are the controllers the stand-in kubelet limits, and a
// file each must have in cgroup v1.
var limitControllers = map[string]string{"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}

// newCgroups makes the kubelet's cgroup directories. It returns nil and
// why where the limits cannot be enforced: no cgroup v1 memory and cpu
// hierarchies (cgroup v2 alone would need a cgroup of the test's own
// without processes to delegate its controllers from).
func newCgroups() (*cgroups, string, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, "", err
	}
	name := fmt.Sprintf("hangar-kubetest-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	cg := &cgroups{dirs: map[string]string{}}
	for ctrl, file := range limitControllers {
		path, ok := own[ctrl]
		if !ok {
			return nil, "no cgroup v1 " + ctrl + " hierarchy", nil
		}
		mount := filepath.Join(cgroupRoot, ctrl)
		if _, err := os.Stat(filepath.Join(mount, file)); err != nil {
			return nil, fmt.Sprintf("no cgroup v1 %s hierarchy at %s", ctrl, mount), nil
		}
		dir := filepath.Join(mount, path, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.close()
			return nil, "", fmt.Errorf("stand-in kubelet: %w", err)
		}
		cg.dirs[ctrl] = dir
	}
	return cg, "", nil
}

// ownCgroups maps the v1 controllers of this process to its cgroup's path
// in their hierarchy.
func ownCgroups() (map[string]string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("stand-in kubelet: %w", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, nil
}

// container makes the cgroups of one container (name unique in the
// kubelet) with limits, and returns their directories.
func (cg *cgroups) container(name string, limits corev1.ResourceList) ([]string, error) {
	var dirs []string
	fail := func(err error) ([]string, error) {
		for _, d := range dirs {
			_ = os.Remove(d)
		}
		return nil, err
	}
	for _, ctrl := range []string{"memory", "cpu"} {
		d := filepath.Join(cg.dirs[ctrl], name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fail(err)
		}
		dirs = append(dirs, d)
	}
	if q, ok := limits[corev1.ResourceMemory]; ok {
		n := strconv.FormatInt(q.Value(), 10)
		if err := writeCgroup(dirs[0], "memory.limit_in_bytes", n); err != nil {
			return fail(err)
		}
		// No escape into swap: memory and swap together have the limit.
		if _, err := os.Stat(filepath.Join(dirs[0], "memory.memsw.limit_in_bytes")); err == nil {
			if err := writeCgroup(dirs[0], "memory.memsw.limit_in_bytes", n); err != nil {
				return fail(err)
			}
		}
	}
	if q, ok := limits[corev1.ResourceCPU]; ok {
		// A CPU is a period's worth of quota; the kernel's least is 1 ms.
		const period = 100_000
		quota := max(q.MilliValue()*period/1000, 1000)
		if err := writeCgroup(dirs[1], "cpu.cfs_period_us", strconv.Itoa(period)); err != nil {
			return fail(err)
		}
		if err := writeCgroup(dirs[1], "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
			return fail(err)
		}
	}
	return dirs, nil
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup %s: %w", file, err)
	}
	return nil
}

// oomKilled reports whether the kernel killed a process of the container
// whose memory cgroup is dir for want of memory.
func oomKilled(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if n, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return n != "0"
		}
	}
	return false
}

// removeCgroups removes a container's cgroups once its processes have all
// ended (its PID namespace's init has been waited for: the kernel ended
// and reaped the others before it).
func removeCgroups(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("stand-in kubelet: remove cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// close removes the kubelet's directories (its containers' are gone).
func (cg *cgroups) close() error {
	var dirs []string
	for _, d := range cg.dirs {
		dirs = append(dirs, d)
	}
	return removeCgroups(dirs)
}
