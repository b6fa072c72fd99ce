package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

// capabilities are Docker's default set without CAP_NET_RAW. sudo needs
// SETUID, SETGID and AUDIT_WRITE in the bounding set.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Masked and read-only paths of `runc spec`.
var (
	defaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
	}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

const (
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	nofileLimit = 16384 // must not exceed runc's own hard limit
	// pidsLimit is a machine's pids limit when its Spec sets none.
	pidsLimit = 4096
	// runSize is the size of a machine's /run tmpfs.
	runSize = 64 << 20
	// cpuPeriod is the CFS period of a machine's CPU quota (100 ms).
	cpuPeriod = 100000
)

// ociParams is what one machine's OCI config is made of.
type ociParams struct {
	name    string // machine name: the hostname
	layout  layout
	builder string // host path of the builder binary
	args    []string
	env     []string
	mounts  []specMount
	masked  []string // extra paths to mask (Mask/StateDir seen through mounts)
	netns   string   // network namespace path
	cgroup  string   // cgroup path
	caps    []string // capabilities (bounding, effective, permitted)
	seccomp *specs.LinuxSeccomp
	// res are the machine's limits; memsw is whether the host's memory
	// cgroup limits memory+swap (swap accounting on).
	res   machine.Resources
	memsw bool
	// imageEnv is the image's environment: its PATH is the machine's
	// unless env sets one.
	imageEnv []string
}

// specMount is a machine.Mount after validation.
type specMount struct{ source, target string }

// ociSpec returns the OCI runtime config of a machine.
func ociSpec(p ociParams) *specs.Spec {
	l := p.layout
	mounts := []specs.Mount{
		specs.Mount{Destination: "/proc", Type: "proc", Source: "proc",
			Options: []string{"nosuid", "noexec", "nodev"}},
		specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
			Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		specs.Mount{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue",
			Options: []string{"nosuid", "noexec", "nodev"}},
		specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs",
			Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		// The machine's own cgroups, read-only: JVMs and nproc-like tools
		// read their limits there.
		specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: tmpOptions(p.res.Disk)},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=755", "size=" + strconv.Itoa(runSize)}},
		specs.Mount{Destination: "/home", Type: "bind", Source: l.home(),
			Options: []string{"bind", "rw", "nodev"}},
		specs.Mount{Destination: builderPath, Type: "bind", Source: p.builder,
			Options: []string{"bind", "ro", "nodev", "nosuid"}},
	}
	for _, m := range p.mounts {
		// Not rbind: mounts below the source stay hidden.
		mounts = append(mounts, specs.Mount{Destination: m.target, Type: "bind", Source: m.source,
			Options: []string{"bind", "ro", "nodev", "nosuid"}})
	}

	env := make([]string, 0, len(p.env)+4)
	hasPath := false
	for _, kv := range p.env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HANGAR_HOME", "HANGAR_USER":
			continue // the driver's own
		case "PATH":
			hasPath = true
		}
		env = append(env, kv)
	}
	if !hasPath {
		path := defaultPath
		for _, kv := range p.imageEnv {
			if strings.HasPrefix(kv, "PATH=") {
				path = kv
			}
		}
		env = append(env, path)
	}
	env = append(env, "HANGAR_HOME="+builderHome, "HANGAR_USER="+builderUser)

	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal: false,
			User:     specs.User{UID: 0, GID: 0},
			Args:     append([]string{builderPath}, p.args...),
			Env:      env,
			Cwd:      "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  p.caps,
				Effective: p.caps,
				Permitted: p.caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofileLimit, Soft: nofileLimit}},
			NoNewPrivileges: false,
		},
		Root:     &specs.Root{Path: l.rootfs(), Readonly: false},
		Hostname: p.name,
		Mounts:   mounts,
		Linux: &specs.Linux{
			CgroupsPath: p.cgroup,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.NetworkNamespace, Path: p.netns},
				{Type: specs.CgroupNamespace},
			},
			Resources:     resources(p.res, p.memsw),
			MaskedPaths:   append(append([]string{}, defaultMaskedPaths...), p.masked...),
			ReadonlyPaths: defaultReadonlyPaths,
			Seccomp:       p.seccomp,
		},
	}
}

// tmpOptions are the mount options of /tmp, a tmpfs of size bytes (0: the
// kernel's default, half the host's memory). Its files count towards the
// machine's memory limit.
func tmpOptions(size int64) []string {
	opts := []string{"nosuid", "nodev", "mode=1777"}
	if size > 0 {
		opts = append(opts, "size="+strconv.FormatInt(size, 10))
	}
	return opts
}

// resources are the cgroup limits of a machine with res: no devices, and
// the CPU, memory and pids limits res sets (pidsLimit if none). Without
// swap accounting (memsw false) the memory limit leaves swap unlimited.
func resources(res machine.Resources, memsw bool) *specs.LinuxResources {
	pids := res.Pids
	if pids <= 0 {
		pids = pidsLimit
	}
	r := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Pids:    &specs.LinuxPids{Limit: &pids},
	}
	if res.CPUs > 0 {
		quota := max(int64(res.CPUs*cpuPeriod), 1000)
		period := uint64(cpuPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if res.Memory > 0 {
		limit := res.Memory
		r.Memory = &specs.LinuxMemory{Limit: &limit}
		if memsw {
			swap := res.Memory // memory+swap: no swap at all
			r.Memory.Swap = &swap
		}
	}
	return r
}

// overlayVolatile reports whether the kernel has overlayfs's volatile
// option (Linux 5.10).
func overlayVolatile() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 5 || major == 5 && minor >= 10
}

// writeSpec writes s as the bundle's config.json.
func writeSpec(path string, s *specs.Spec) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
