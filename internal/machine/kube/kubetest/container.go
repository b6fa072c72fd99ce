package kubetest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// containerEnv carries a container's spec to the test binary re-executed
// as the container's first process (see Main).
const containerEnv = "HANGAR_KUBETEST_CONTAINER"

// containerSpec is a container as the stand-in kubelet runs it: a root
// directory prepared on the host (mount points only), the mounts to make
// in the container's own mount namespace, and the process to exec there.
type containerSpec struct {
	Root   string   `json:"root"`
	Mounts []mount  `json:"mounts"`
	Dir    string   `json:"dir"`
	Argv   []string `json:"argv"`
	Env    []string `json:"env"`
	// Hostname is set in the container's own UTS namespace.
	Hostname string `json:"hostname"`
	// Cgroups are the cgroup directories the container joins first.
	Cgroups []string `json:"cgroups,omitempty"`
}

type mount struct {
	// Kind is "bind", "rbind", "proc" or "tmpfs".
	Kind     string `json:"kind"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"` // inside Root
	ReadOnly bool   `json:"ro,omitempty"`
}

// Main is the TestMain of a package whose tests use the stand-in kubelet:
// the kubelet runs each container as this test binary, which makes the
// container's mounts and execs its process instead of running the tests.
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }
func Main(m *testing.M) int {
	if spec := os.Getenv(containerEnv); spec != "" {
		runContainer(spec) // never returns
	}
	return m.Run()
}

// runContainer is the container's first process, in new mount and PID
// namespaces: it mounts, chroots and execs the container's command. When
// that process (PID 1 of its namespace) ends, the kernel ends every other
// process of the container and the mounts go with the namespace.
func runContainer(specJSON string) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "kubetest container: "+format+"\n", args...)
		os.Exit(127)
	}
	var s containerSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fail("spec: %v", err)
	}
	// Into the container's cgroups before anything else: every process
	// of the container descends from this one.
	for _, d := range s.Cgroups {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte("0"), 0); err != nil {
			fail("join cgroup %s: %v", d, err)
		}
	}
	// Nothing of ours propagates to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail("make / private: %v", err)
	}
	for _, m := range s.Mounts {
		target := filepath.Join(s.Root, m.Target)
		var err error
		switch m.Kind {
		case "bind", "rbind":
			flags := uintptr(unix.MS_BIND)
			if m.Kind == "rbind" {
				flags |= unix.MS_REC
			}
			err = unix.Mount(m.Source, target, "", flags, "")
			if err == nil && m.ReadOnly {
				err = unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
			}
		case "proc":
			err = unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		case "tmpfs":
			err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
		default:
			err = fmt.Errorf("unknown kind %q", m.Kind)
		}
		if err != nil {
			fail("mount %s on %s: %v", m.Source, m.Target, err)
		}
	}
	if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
		fail("hostname: %v", err)
	}
	if err := unix.Chroot(s.Root); err != nil {
		fail("chroot: %v", err)
	}
	if err := os.Chdir(s.Dir); err != nil {
		fail("chdir %s: %v", s.Dir, err)
	}
	if len(s.Argv) == 0 || !filepath.IsAbs(s.Argv[0]) {
		fail("command %q: the stand-in kubelet runs absolute paths only", s.Argv)
	}
	err := syscall.Exec(s.Argv[0], s.Argv, s.Env)
	fail("exec %s: %v", s.Argv[0], err)
}

// hostRootSkipped are the host's top-level directories a container does
// not see (it gets its own /proc, /dev, /tmp and /run).
var hostRootSkipped = map[string]bool{
	"proc": true, "sys": true, "dev": true, "tmp": true, "run": true, "home": true, "root": true,
	"mnt": true, "media": true, "lost+found": true, "boot": true, "srv": true,
}

// prepareRoot makes root a container root over the host's: the host's
// top-level directories (but hostRootSkipped) read-only, symlinks copied,
// fresh /proc, /dev (the host's), /tmp and /run, then the volumes (target
// in the container: host source) and the image's files. It creates only
// directories and empty files under root; the mounts are made in the
// container's own namespace. Volumes and files must not lie in a host
// directory the container sees.
func prepareRoot(root string, volumes map[string]mount, files map[string]string) ([]mount, error) {
	own := map[string]bool{} // top-level names the container does not take from the host
	for target := range volumes {
		own[topLevel(target)] = true
	}
	for target := range files {
		own[topLevel(target)] = true
	}
	var mounts []mount
	entries, err := os.ReadDir("/")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(root, name)
		switch {
		case hostRootSkipped[name] || own[name]:
		case e.Type()&os.ModeSymlink != 0:
			dest, err := os.Readlink("/" + name)
			if err != nil {
				return nil, err
			}
			if err := os.Symlink(dest, path); err != nil {
				return nil, err
			}
		case e.IsDir():
			if err := os.Mkdir(path, 0o755); err != nil {
				return nil, err
			}
			mounts = append(mounts, mount{Kind: "rbind", Source: "/" + name, Target: "/" + name, ReadOnly: true})
		}
	}
	for _, d := range []string{"proc", "dev", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	mounts = append(mounts,
		mount{Kind: "proc", Target: "/proc"},
		mount{Kind: "rbind", Source: "/dev", Target: "/dev"},
		mount{Kind: "tmpfs", Target: "/tmp"},
		mount{Kind: "tmpfs", Target: "/run"})
	var targets []string
	for t := range volumes {
		targets = append(targets, t)
	}
	sort.Strings(targets) // parents first
	for _, t := range targets {
		switch topLevel(t) {
		case "proc", "sys", "dev", "tmp", "run":
			return nil, fmt.Errorf("volume at %s: the stand-in kubelet mounts volumes only outside /proc, /sys, /dev, /tmp and /run", t)
		}
		if err := os.MkdirAll(filepath.Join(root, t), 0o755); err != nil {
			return nil, err
		}
		m := volumes[t]
		m.Target = t
		mounts = append(mounts, m)
	}
	for t, src := range files {
		p := filepath.Join(root, t)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			return nil, err
		}
		mounts = append(mounts, mount{Kind: "bind", Source: src, Target: t, ReadOnly: true})
	}
	return mounts, nil
}

func topLevel(p string) string {
	p = strings.TrimPrefix(filepath.Clean(p), "/")
	first, _, _ := strings.Cut(p, "/")
	return first
}
