package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

// A machine directory, StateDir/<name>, holds:
//
//	config.json  the OCI bundle's config
//	rootfs/      the machine's root: an overlay of the image's layers
//	             (read-only, shared) under upper/
//	upper/       the machine's writable layer
//	work/        its overlay work dir
//	home/        bound on /home; holds builder/
//	pid, runc.log  written by runc
//
// With a disk limit, upper/, work/ and home/ are in disk/, the mount of
// the machine's own file system (disk.img, see makeDisk).
const (
	rootfsDir = "rootfs"
	upperDir  = "upper"
	workDir   = "work"
	homeDir   = "home"
	diskDir   = "disk"
	diskImg   = "disk.img"
	pidFile   = "pid"
	runcLog   = "runc.log"
)

// maxOverlayOptions is the longest overlay option string the kernel takes
// (one page).
const maxOverlayOptions = 4095

// layout gives the paths of one machine directory.
type layout struct {
	dir string
	// disk is the size of the machine's own file system for what it
	// writes, 0 for none (the writable layer is then on StateDir's).
	disk int64
}

// writable is the directory of the writable layer and home.
func (l layout) writable() string {
	if l.disk > 0 {
		return filepath.Join(l.dir, diskDir)
	}
	return l.dir
}

func (l layout) rootfs() string  { return filepath.Join(l.dir, rootfsDir) }
func (l layout) upper() string   { return filepath.Join(l.writable(), upperDir) }
func (l layout) work() string    { return filepath.Join(l.writable(), workDir) }
func (l layout) home() string    { return filepath.Join(l.writable(), homeDir) }
func (l layout) config() string  { return filepath.Join(l.dir, "config.json") }
func (l layout) pidFile() string { return filepath.Join(l.dir, pidFile) }
func (l layout) runcLog() string { return filepath.Join(l.dir, runcLog) }

// machineFiles is what prepareDir writes for one machine.
type machineFiles struct {
	name  string
	ip    netip.Addr
	uid   int
	image *machine.Image
	dns   []netip.Addr
	// volatile skips the overlay's syncs: its upper layer is thrown away
	// with the machine, and dpkg syncs a lot.
	volatile bool
	// gitSafe are directories (read-only mounts of root-owned repository
	// mirrors) that git must trust although builder does not own them.
	gitSafe []string
}

// overlayOptions returns the mount options of a root overlay with the
// image layers lower (lowest first), or an error if they are too long.
func overlayOptions(lower []string, upper, work string, volatile bool) (string, error) {
	dirs := make([]string, len(lower))
	for i, d := range lower {
		if strings.ContainsAny(d, ",:") {
			return "", fmt.Errorf("image layer dir %s: must not contain ',' or ':'", d)
		}
		dirs[len(lower)-1-i] = d // overlayfs lists the top layer first
	}
	opts := "lowerdir=" + strings.Join(dirs, ":") + ",upperdir=" + upper + ",workdir=" + work
	if volatile {
		opts += ",volatile"
	}
	if len(opts) > maxOverlayOptions {
		return "", fmt.Errorf("the image has too many layers (%d) for one overlay mount", len(lower))
	}
	return opts, nil
}

// prepareDir creates the machine directory, mounts its root (the image's
// layers under the machine's writable layer) and writes the machine's /etc
// files and the builder's home into it.
func (l layout) prepareDir(mf machineFiles) error {
	_ = removeDir(l.dir) // a leftover: StateDir is ours alone
	if err := os.Mkdir(l.dir, 0o700); err != nil {
		return fmt.Errorf("create machine dir: %w", err)
	}
	if l.disk > 0 {
		if err := makeDisk(filepath.Join(l.dir, diskImg), l.writable(), l.disk); err != nil {
			return err
		}
	}
	for _, d := range []string{l.rootfs(), l.upper(), l.work()} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	opts, err := overlayOptions(mf.image.Layers, l.upper(), l.work(), mf.volatile)
	if err != nil {
		return err
	}
	for _, d := range mf.image.Layers {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return fmt.Errorf("image %s: layer %s is not unpacked", mf.image.Name, d)
		}
	}
	if err := unix.Mount("overlay", l.rootfs(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount the root of image %s: %w", mf.image.Name, err)
	}
	root, err := openRoot(l.rootfs())
	if err != nil {
		return err
	}
	defer root.close()
	if err := root.writeEtc(mf); err != nil {
		return fmt.Errorf("write /etc files: %w", err)
	}
	// The mount point of the builder binary.
	if err := root.writeFile(builderPath, nil, 0o755, 0, 0); err != nil {
		return err
	}
	if err := l.makeHome(root, mf.uid); err != nil {
		return fmt.Errorf("create builder home: %w", err)
	}
	return nil
}

// rootFS is a directory opened as the root of every path given to its
// methods: absolute symlinks and ".." inside it never lead out of it
// (openat2 RESOLVE_IN_ROOT), so an image's files cannot redirect the
// host's writes.
type rootFS struct{ fd int }

func openRoot(dir string) (rootFS, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return rootFS{}, err
	}
	return rootFS{fd}, nil
}

func (r rootFS) close() { unix.Close(r.fd) }

// open opens p (relative to the root) with flags.
func (r rootFS) open(p string, flags int, mode uint32) (int, error) {
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(r.fd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// readFile returns the contents of p, nil if it does not exist.
func (r rootFS) readFile(p string) ([]byte, error) {
	fd, err := r.open(p, unix.O_RDONLY, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return data, nil
}

// mkdirAll creates directory p and its missing parents (root-owned, 0755)
// and returns an fd of it.
func (r rootFS) mkdirAll(p string) (int, error) {
	cur := "/"
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		pfd, err := r.open(cur, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", cur, err)
		}
		err = unix.Mkdirat(pfd, part, 0o755)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", filepath.Join(cur, part), err)
		}
		cur = filepath.Join(cur, part)
	}
	return r.open(cur, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// writeFile replaces p (whatever it was: a symlink is replaced, not
// followed) with a file holding data, with mode and owner.
func (r rootFS) writeFile(p string, data []byte, mode os.FileMode, uid, gid int) error {
	pfd, err := r.mkdirAll(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	base := filepath.Base(p)
	if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("replace %s: %w", p, err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	return f.Chmod(mode) // after chown, and not subject to the umask
}

// accountFile is one of the image's account files and the builder's entry.
type accountFile struct {
	path     string
	mode     os.FileMode
	gid      int // owning group (shadow's)
	addition string
}

// writeEtc writes the machine's account, sudo, host name and resolver files.
func (r rootFS) writeEtc(mf machineFiles) error {
	days := strconv.FormatInt(time.Now().Unix()/86400, 10)
	id := strconv.Itoa(mf.uid)
	passwd, err := r.readFile("/etc/passwd")
	if err != nil {
		return err
	}
	if owner := uidOwner(passwd, mf.uid); owner != "" && owner != builderUser {
		return fmt.Errorf("the image's account %s has uid %d, the builder's: choose another builder uid", owner, mf.uid)
	}
	shadowGID := 0
	if g := groupID(r, "shadow"); g >= 0 {
		shadowGID = g
	}
	accounts := []accountFile{
		{"/etc/passwd", 0o644, 0, builderUser + ":x:" + id + ":" + id + ":Hangar builder:" + builderHome + ":/bin/bash"},
		{"/etc/group", 0o644, 0, builderUser + ":x:" + id + ":"},
		{"/etc/shadow", 0o640, shadowGID, builderUser + ":*:" + days + ":0:99999:7:::"},
		{"/etc/gshadow", 0o640, shadowGID, builderUser + ":!::"},
	}
	for _, a := range accounts {
		data, err := r.readFile(a.path)
		if err != nil {
			return err
		}
		if data == nil && a.path == "/etc/passwd" {
			data = []byte("root:x:0:0:root:/root:/bin/sh\n")
		}
		if data == nil && a.path == "/etc/group" {
			data = []byte("root:x:0:\n")
		}
		var out bytes.Buffer
		for _, line := range strings.Split(string(data), "\n") {
			if line == "" || strings.HasPrefix(line, builderUser+":") {
				continue
			}
			out.WriteString(line)
			out.WriteByte('\n')
		}
		out.WriteString(a.addition)
		out.WriteByte('\n')
		if err := r.writeFile(a.path, out.Bytes(), a.mode, 0, a.gid); err != nil {
			return err
		}
	}
	files := []etcFile{
		{"/etc/sudoers.d/" + builderUser, builderUser + " ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440},
		{"/etc/hostname", mf.name + "\n", 0o644},
		{"/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
			mf.ip.String() + "\t" + mf.name + "\n", 0o644},
		{"/etc/resolv.conf", resolvConf(mf.dns), 0o644},
	}
	if len(mf.gitSafe) > 0 {
		conf, err := r.readFile("/etc/gitconfig")
		if err != nil {
			return err
		}
		var b strings.Builder
		b.Write(conf)
		b.WriteString("\n[safe]\n")
		for _, dir := range mf.gitSafe {
			b.WriteString("\tdirectory = " + dir + "\n")
		}
		files = append(files, etcFile{"/etc/gitconfig", b.String(), 0o644})
	}
	for _, f := range files {
		if err := r.writeFile(f.path, []byte(f.data), f.mode, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// uidOwner returns the account of passwd data with uid, or "".
func uidOwner(passwd []byte, uid int) string {
	for _, line := range strings.Split(string(passwd), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) > 2 && fields[2] == strconv.Itoa(uid) {
			return fields[0]
		}
	}
	return ""
}

// groupID returns the gid of group name in the root's /etc/group, or -1.
func groupID(r rootFS, name string) int {
	data, _ := r.readFile("/etc/group")
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) > 2 && fields[0] == name {
			if g, err := strconv.Atoi(fields[2]); err == nil {
				return g
			}
		}
	}
	return -1
}

// etcFile is a root-owned file written into a machine's /etc.
type etcFile struct {
	path string
	data string
	mode os.FileMode
}

// makeHome creates home/ and home/builder, owned by the builder, with the
// image's /etc/skel files.
func (l layout) makeHome(root rootFS, uid int) error {
	if err := os.Mkdir(l.home(), 0o755); err != nil {
		return err
	}
	h := filepath.Join(l.home(), builderUser)
	if err := os.Mkdir(h, 0o755); err != nil {
		return err
	}
	if err := os.Chown(h, uid, uid); err != nil {
		return err
	}
	for _, n := range []string{".bashrc", ".profile", ".bash_logout"} {
		data, err := root.readFile("/etc/skel/" + n)
		if err != nil || data == nil {
			continue
		}
		dst := filepath.Join(h, n)
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		if err := os.Chown(dst, uid, uid); err != nil {
			return err
		}
	}
	return nil
}
