package sandbox

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// refusedSyscalls are refused in every machine whatever its capabilities,
// on top of Docker's default profile (which allows most of them to a
// container holding CAP_SYS_ADMIN or CAP_SYS_MODULE): no new namespaces
// (user namespaces open the nf_tables and other kernel surfaces to
// unprivileged code), no kernel keyring (not namespaced), no kernel
// modules, no mounts.
var refusedSyscalls = []string{
	"unshare", "setns",
	"keyctl", "add_key", "request_key",
	"init_module", "finit_module", "delete_module",
	"mount", "umount", "umount2", "mount_setattr", "pivot_root",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
}

// namespaceFlags are the clone flags that create namespaces.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// seccompProfile returns Docker's default seccomp profile for a process
// with the bounding capabilities caps, made stricter: the refusedSyscalls
// are refused, clone is allowed only without namespaceFlags, and clone3
// (whose flags seccomp cannot see) fails with ENOSYS so that libc falls
// back to clone.
func seccompProfile(caps []string) (*specs.LinuxSeccomp, error) {
	p, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: caps},
	}})
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	if p == nil || !refuses(p.DefaultAction) {
		return nil, fmt.Errorf("seccomp profile: its default action allows every syscall")
	}
	refused := append(slices.Clone(refusedSyscalls), "clone3")
	var syscalls []specs.LinuxSyscall
	cloneMasked, clone3Nosys := false, false
	for _, s := range p.Syscalls {
		if !refuses(s.Action) {
			s.Names = slices.DeleteFunc(slices.Clone(s.Names), func(n string) bool {
				return slices.Contains(refused, n) || n == "clone" && !checksCloneFlags(s)
			})
			if len(s.Names) == 0 {
				continue
			}
			cloneMasked = cloneMasked || slices.Contains(s.Names, "clone")
		} else if slices.Contains(s.Names, "clone3") && s.Action == specs.ActErrno &&
			s.ErrnoRet != nil && *s.ErrnoRet == uint(unix.ENOSYS) {
			clone3Nosys = true
		}
		syscalls = append(syscalls, s)
	}
	// Docker's profile gives the two rules below only to containers
	// without CAP_SYS_ADMIN.
	if !cloneMasked {
		syscalls = append(syscalls, specs.LinuxSyscall{
			Names:  []string{"clone"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: cloneFlagsArg(), Value: namespaceFlags, Op: specs.OpMaskedEqual}},
		})
	}
	if !clone3Nosys {
		nosys := uint(unix.ENOSYS)
		syscalls = append(syscalls, specs.LinuxSyscall{
			Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &nosys,
		})
	}
	p.Syscalls = syscalls
	return p, nil
}

// refuses reports whether a seccomp action keeps the syscall from running.
func refuses(a specs.LinuxSeccompAction) bool {
	switch a {
	case specs.ActErrno, specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap:
		return true
	}
	return false
}

// checksCloneFlags reports whether rule s matches clone only when none of
// the namespaceFlags is set.
func checksCloneFlags(s specs.LinuxSyscall) bool {
	return slices.ContainsFunc(s.Args, func(a specs.LinuxSeccompArg) bool {
		return a.Index == cloneFlagsArg() && a.Op == specs.OpMaskedEqual && a.Value&namespaceFlags == namespaceFlags && a.ValueTwo == 0
	})
}

// cloneFlagsArg is the index of clone's flags argument.
func cloneFlagsArg() uint {
	if runtime.GOARCH == "s390x" {
		return 1 // clone's arguments come in another order there
	}
	return 0
}
