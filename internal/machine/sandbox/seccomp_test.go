package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

// moreCapabilities are the machines' capabilities plus those for which
// Docker's profile allows namespaces, mounts and kernel modules.
var moreCapabilities = append(slices.Clone(capabilities), "CAP_SYS_ADMIN", "CAP_SYS_MODULE")

func TestSeccompProfile(t *testing.T) {
	for _, caps := range [][]string{capabilities, moreCapabilities} {
		p, err := seccompProfile(caps)
		if err != nil {
			t.Fatal(err)
		}
		if p.DefaultAction != specs.ActErrno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != uint(unix.EPERM) {
			t.Errorf("caps %v: default action %s %v, want EPERM", caps, p.DefaultAction, p.DefaultErrnoRet)
		}
		allowed := map[string]bool{}
		clone3Nosys := false
		for _, s := range p.Syscalls {
			if refuses(s.Action) {
				clone3Nosys = clone3Nosys || slices.Contains(s.Names, "clone3") &&
					s.Action == specs.ActErrno && *s.ErrnoRet == uint(unix.ENOSYS)
				continue
			}
			for _, n := range s.Names {
				allowed[n] = true
				if n == "clone" && !checksCloneFlags(s) {
					t.Errorf("caps %v: a rule allows clone whatever its flags: %+v", caps, s)
				}
			}
		}
		for _, n := range append(slices.Clone(refusedSyscalls), "clone3") {
			if allowed[n] {
				t.Errorf("caps %v: %s is allowed", caps, n)
			}
		}
		if !clone3Nosys {
			t.Errorf("caps %v: clone3 does not fail with ENOSYS (libc would not fall back to clone)", caps)
		}
		for _, n := range []string{"read", "clone", "socket", "setresuid", "chroot"} {
			if !allowed[n] {
				t.Errorf("caps %v: %s is refused", caps, n)
			}
		}
	}
	// With the machines' own capabilities Docker's profile already refuses
	// all of the above: it is used unchanged.
	ours, err := seccompProfile(capabilities)
	if err != nil {
		t.Fatal(err)
	}
	docker, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: capabilities}}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ours, docker) {
		t.Errorf("the profile for the machines' capabilities differs from Docker's")
	}
}

// syscallChecks are the syscalls the seccomp tests make with harmless
// arguments, and the errno each must fail with ("ok": it must succeed).
// Without the filter, the refused ones succeed or fail with another errno
// (for root with CAP_SYS_ADMIN and CAP_SYS_MODULE: all of them).
var syscallChecks = []struct {
	label string
	nr    uintptr
	args  []any // int64, or string passed as a char pointer
	want  string
}{
	{"getpid", unix.SYS_GETPID, nil, "ok"},
	{"clone-fork", unix.SYS_CLONE, []any{int64(unix.SIGCHLD), 0, 0, 0, 0}, "ok"},
	{"clone-newuser", unix.SYS_CLONE, []any{int64(unix.CLONE_NEWUSER | unix.SIGCHLD), 0, 0, 0, 0}, "EPERM"},
	{"clone3", unix.SYS_CLONE3, []any{0, 0}, "ENOSYS"},
	{"unshare-newuser", unix.SYS_UNSHARE, []any{int64(unix.CLONE_NEWUSER)}, "EPERM"},
	{"unshare-newns", unix.SYS_UNSHARE, []any{int64(unix.CLONE_NEWNS)}, "EPERM"},
	{"setns", unix.SYS_SETNS, []any{-1, 0}, "EPERM"},
	{"keyctl", unix.SYS_KEYCTL, []any{unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 1}, "EPERM"},
	{"add_key", unix.SYS_ADD_KEY, []any{"user", "hangar-test", "x", 1, unix.KEY_SPEC_PROCESS_KEYRING}, "EPERM"},
	{"request_key", unix.SYS_REQUEST_KEY, []any{"user", "hangar-test-absent", 0, 0}, "EPERM"},
	{"init_module", unix.SYS_INIT_MODULE, []any{0, 0, ""}, "EPERM"},
	{"finit_module", unix.SYS_FINIT_MODULE, []any{-1, "", 0}, "EPERM"},
	{"delete_module", unix.SYS_DELETE_MODULE, []any{"hangar_test_absent", unix.O_NONBLOCK}, "EPERM"},
	{"mount", unix.SYS_MOUNT, []any{"x", "/tmp/hangar-mnt", "tmpfs", 0, 0}, "EPERM"},
	{"umount2", unix.SYS_UMOUNT2, []any{"/tmp/hangar-mnt", 0}, "EPERM"},
	{"pivot_root", unix.SYS_PIVOT_ROOT, []any{"/hangar-absent", "/hangar-absent"}, "EPERM"},
	{"mount_setattr", unix.SYS_MOUNT_SETATTR, []any{unix.AT_FDCWD, "/tmp", 0, 0, 0}, "EPERM"},
	{"fsopen", unix.SYS_FSOPEN, []any{"tmpfs", 0}, "EPERM"},
	{"fsconfig", unix.SYS_FSCONFIG, []any{-1, 0, 0, 0, 0}, "EPERM"},
	{"fsmount", unix.SYS_FSMOUNT, []any{-1, 0, 0}, "EPERM"},
	{"fspick", unix.SYS_FSPICK, []any{unix.AT_FDCWD, "/tmp", 0}, "EPERM"},
	{"open_tree", unix.SYS_OPEN_TREE, []any{unix.AT_FDCWD, "/tmp", 0}, "EPERM"},
	{"move_mount", unix.SYS_MOVE_MOUNT, []any{-1, "", -1, "", 0}, "EPERM"},
}

// syscallsPy makes each call of the JSON file argv[1] in a process of its
// own (a call that succeeds may change what the next ones can do) and
// prints "label=ok" or "label=ERRNO" for each.
const syscallsPy = `import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for label, nr, args in json.load(open(sys.argv[1])):
    cargs = [ctypes.c_char_p(a.encode()) if isinstance(a, str) else ctypes.c_long(a) for a in args or []]
    pid = os.fork()
    if pid == 0:
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *cargs)
        e = ctypes.get_errno()
        if r == 0 and label.startswith("clone"):
            os._exit(0)  # the clone's child
        if r > 0 and label.startswith("clone"):
            os.waitpid(r, 0)
        print("%s=%s" % (label, "ok" if r >= 0 else errno.errorcode.get(e, e)), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
`

// checksSh runs the checks as whoever runs it, labelled $1.
const checksSh = `w=$1
say() { echo "$w.$1=$2"; }
try() { n=$1; shift; if "$@" >/dev/null 2>&1; then say $n ok; else say $n refused; fi; }
say seccomp "$(awk '/^Seccomp:/ {print $2}' /proc/self/status)"
mkdir -p /tmp/hangar-mnt
try unshare-user unshare -Urn true
try unshare-mount unshare -m true
try mount-tmpfs mount -t tmpfs x /tmp/hangar-mnt
python3 /hangar-test/syscalls.py /hangar-test/syscalls.json | sed "s/^/$w./"
try pipes bash -c 'echo abc | tr a-z A-Z | grep -q ABC'
try git git --version
try curl curl --version
`

// seccompTestDir returns a directory with the scripts of the seccomp
// tests and a package to install, to mount on /hangar-test.
func seccompTestDir(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"/usr/bin/python3", "/usr/bin/dpkg-deb", "/usr/bin/apt-get", "/usr/bin/unshare"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("the seccomp tests need %s on the host", bin)
		}
	}
	dir := t.TempDir()
	calls := make([][]any, len(syscallChecks))
	for i, c := range syscallChecks {
		calls[i] = []any{c.label, c.nr, c.args}
	}
	js, err := json.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(t.TempDir(), "pkg")
	for p, data := range map[string]string{
		filepath.Join(dir, "syscalls.py"):   syscallsPy,
		filepath.Join(dir, "syscalls.json"): string(js),
		filepath.Join(dir, "checks.sh"):     checksSh,
		filepath.Join(pkg, "DEBIAN", "control"): "Package: hangar-seccomp-test\nVersion: 1.0\n" +
			"Architecture: all\nMaintainer: Hangar <hangar@example.com>\nDescription: Hangar seccomp test\n",
		filepath.Join(pkg, "usr", "share", "hangar-seccomp-test", "installed"): "yes\n",
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg,
		filepath.Join(dir, "hangar-seccomp-test.deb")).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// wantLines checks that out has each of want as a whole line.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	var missing []string
	for _, w := range want {
		if !slices.Contains(lines, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Errorf("output lacks %q:\n%s", missing, out)
	}
}

// TestSeccompRefusals: the builder user and root through sudo run under
// the filter and are refused new namespaces, the keyring, kernel modules
// and mounts, while sudo, apt-get and ordinary tools work. Without the
// filter the checks of namespaces, the keyring and kernel modules fail
// here; most mount checks don't, the machine's missing CAP_SYS_ADMIN refuses
// them too, and TestSeccompWithMoreCapabilities is their test.
func TestSeccompRefusals(t *testing.T) {
	dir := seccompTestDir(t)
	d := newTestDriver(t, nil)
	out := runShell(t, d, "seccomp", `
su builder -c 'sh /hangar-test/checks.sh builder'
su builder -c 'sudo -n sh /hangar-test/checks.sh sudo'
su builder -c 'sudo -n true' && echo sudo-true=ok
su builder -c 'sudo -n apt-get --version' >/dev/null && echo apt-version=ok
su builder -c 'sudo -n dpkg -l' | grep '^ii  *dpkg ' >/dev/null && echo dpkg-list=ok
if su builder -c 'sudo -n apt-get install -y /hangar-test/hangar-seccomp-test.deb' >/tmp/apt.log 2>&1 &&
	test -f /usr/share/hangar-seccomp-test/installed; then
	echo apt-install=ok
else
	cat /tmp/apt.log
fi
`, machine.Mount{Source: dir, Target: "/hangar-test"})
	wantLines(t, out, "sudo-true=ok", "apt-version=ok", "dpkg-list=ok", "apt-install=ok")
	for _, who := range []string{"builder", "sudo"} {
		want := []string{who + ".seccomp=2", who + ".unshare-user=refused", who + ".unshare-mount=refused",
			who + ".mount-tmpfs=refused", who + ".pipes=ok", who + ".git=ok", who + ".curl=ok"}
		for _, c := range syscallChecks {
			want = append(want, fmt.Sprintf("%s.%s=%s", who, c.label, c.want))
		}
		wantLines(t, out, want...)
	}
	if _, err := os.Stat("/usr/share/hangar-seccomp-test"); err == nil {
		t.Errorf("the package installed in the machine is on the host")
	}
}

// TestSeccompWithMoreCapabilities: the filter refuses namespaces, mounts
// and kernel modules by itself, also to root holding CAP_SYS_ADMIN and
// CAP_SYS_MODULE (to which Docker's profile allows them).
func TestSeccompWithMoreCapabilities(t *testing.T) {
	dir := seccompTestDir(t)
	d := newTestDriver(t, nil)
	var err error
	d.caps = moreCapabilities
	if d.seccomp, err = seccompProfile(d.caps); err != nil {
		t.Fatal(err)
	}
	out := runShell(t, d, "seccomp-caps", `
grep ^CapEff: /proc/self/status
sh /hangar-test/checks.sh root
`, machine.Mount{Source: dir, Target: "/hangar-test"})
	var eff uint64
	if i := strings.Index(out, "CapEff:"); i < 0 {
		t.Fatalf("no CapEff in the output:\n%s", out)
	} else if _, err := fmt.Sscanf(out[i:], "CapEff: %x", &eff); err != nil {
		t.Fatalf("CapEff: %v\n%s", err, out)
	}
	if eff&(1<<unix.CAP_SYS_ADMIN) == 0 || eff&(1<<unix.CAP_SYS_MODULE) == 0 {
		t.Fatalf("the machine lacks CAP_SYS_ADMIN or CAP_SYS_MODULE (CapEff %x): the test proves nothing", eff)
	}
	want := []string{"root.seccomp=2", "root.unshare-user=refused", "root.unshare-mount=refused",
		"root.mount-tmpfs=refused", "root.pipes=ok"}
	for _, c := range syscallChecks {
		want = append(want, fmt.Sprintf("root.%s=%s", c.label, c.want))
	}
	wantLines(t, out, want...)
}
