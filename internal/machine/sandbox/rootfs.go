package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A machine directory, StateDir/<name>, holds:
//
//	config.json       the OCI bundle's config
//	rootfs/           the skeleton root: mount points and the /bin... links
//	layers/<i>/upper  upper layer of the overlay of BaseDirs[i]
//	layers/<i>/work   its overlay work dir
//	home/             bound on /home; holds builder/
//	pid, runc.log     written by runc
const (
	rootfsDir = "rootfs"
	layersDir = "layers"
	homeDir   = "home"
	pidFile   = "pid"
	runcLog   = "runc.log"
)

// rootLinkNames are the top-level host entries that merged-/usr systems
// make symlinks into /usr.
var rootLinkNames = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// skeletonDirs are the top-level directories of every skeleton root.
var skeletonDirs = []string{"usr", "etc", "var", "opt", "home", "proc", "sys", "dev", "tmp", "run", "root", ".hangar"}

// sensitiveGlobs are host files under the base dirs that hold secrets. Each
// machine's upper layer gets a whiteout for them, so they do not exist inside.
// /etc/shadow and /etc/gshadow are rewritten without hashes instead.
var sensitiveGlobs = []string{
	"/etc/shadow-", "/etc/gshadow-", "/etc/security/opasswd",
	"/etc/ssh/ssh_host_*_key", "/etc/ssl/private",
	"/var/backups/shadow.bak*", "/var/backups/gshadow.bak*",
	// Other services' secrets and data, and the host's logs (which hold
	// the server's own log and thus other builds' output).
	"/etc/letsencrypt", "/etc/wireguard", "/etc/NetworkManager/system-connections",
	"/etc/ppp/*-secrets", "/etc/krb5.keytab",
	"/var/log/journal", "/var/log/syslog*", "/var/log/messages*", "/var/log/auth.log*",
	"/var/log/kern.log*", "/var/log/daemon.log*", "/var/log/user.log*", "/var/log/postgresql",
	"/var/lib/postgresql", "/var/lib/mysql", "/var/lib/docker", "/var/lib/containerd",
	"/var/lib/redis", "/var/lib/sudo", "/var/lib/private", "/var/mail/*", "/var/spool/cron",
	"/var/backups/*",
}

// checkBuilderUID checks that uid is free for the builder account.
func checkBuilderUID(uid int) error {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 2 && fields[2] == strconv.Itoa(uid) && fields[0] != builderUser {
			return fmt.Errorf("builder uid %d is host user %s's: choose a free one", uid, fields[0])
		}
	}
	return sc.Err()
}

// hostRootLayout finds how the host's / holds /bin, /lib...: symlinks are
// mirrored in the skeleton, real directories outside the base dirs are bound
// read-only.
func hostRootLayout(baseDirs []string) (links map[string]string, binds []string, err error) {
	links = map[string]string{}
	for _, n := range rootLinkNames {
		p := "/" + n
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return nil, nil, err
		case fi.Mode()&fs.ModeSymlink != 0:
			if links[n], err = os.Readlink(p); err != nil {
				return nil, nil, err
			}
		case fi.IsDir() && baseDirOf(baseDirs, p) == "":
			binds = append(binds, p)
		}
	}
	return links, binds, nil
}

// baseDirOf returns the base dir holding host path p, or "".
func baseDirOf(baseDirs []string, p string) string {
	best := ""
	for _, b := range baseDirs {
		if within(p, b) && len(b) > len(best) {
			best = b
		}
	}
	return best
}

// layout gives the paths of one machine directory.
type layout struct {
	dir      string
	baseDirs []string
}

func (l layout) rootfs() string       { return filepath.Join(l.dir, rootfsDir) }
func (l layout) home() string         { return filepath.Join(l.dir, homeDir) }
func (l layout) upper(i int) string   { return filepath.Join(l.dir, layersDir, strconv.Itoa(i), "upper") }
func (l layout) work(i int) string    { return filepath.Join(l.dir, layersDir, strconv.Itoa(i), "work") }
func (l layout) config() string       { return filepath.Join(l.dir, "config.json") }
func (l layout) pidFile() string      { return filepath.Join(l.dir, pidFile) }
func (l layout) runcLog() string      { return filepath.Join(l.dir, runcLog) }
func (l layout) builderMount() string { return filepath.Join(l.rootfs(), builderPath) }

// hostView returns where, on the host, a file written before the start
// appears at host path p inside the machine: in the upper layer of the
// base dir holding p, else in the skeleton. It also returns the lower
// directory the parents should be modelled on ("" for the skeleton).
func (l layout) hostView(p string) (dst, lowerRoot, upperRoot string) {
	for i := len(l.baseDirs) - 1; i >= 0; i-- {
		if b := l.baseDirs[i]; within(p, b) {
			return filepath.Join(l.upper(i), strings.TrimPrefix(p, b)), b, l.upper(i)
		}
	}
	return filepath.Join(l.rootfs(), p), "", l.rootfs()
}

// machineFiles is what prepareDir writes for one machine.
type machineFiles struct {
	name      string
	ip        netip.Addr
	uid       int
	rootLinks map[string]string
	dns       []netip.Addr
	// gitSafe are directories (read-only mounts of root-owned repository
	// mirrors) that git must trust although builder does not own them.
	gitSafe []string
}

// prepareDir creates the machine directory: skeleton, layers, /etc files
// and the builder's home.
func (l layout) prepareDir(mf machineFiles) error {
	_ = os.RemoveAll(l.dir) // a leftover: StateDir is ours alone
	if err := os.Mkdir(l.dir, 0o700); err != nil {
		return fmt.Errorf("create machine dir: %w", err)
	}
	root := l.rootfs()
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	for _, d := range skeletonDirs {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"root", "tmp"} {
		mode := os.FileMode(0o700)
		if d == "tmp" {
			mode = os.ModeSticky | 0o777
		}
		if err := os.Chmod(filepath.Join(root, d), mode); err != nil {
			return err
		}
	}
	for n, target := range mf.rootLinks {
		if err := os.Symlink(target, filepath.Join(root, n)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(l.builderMount(), nil, 0o755); err != nil {
		return err
	}
	for i, b := range l.baseDirs {
		if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(l.work(i), 0o700); err != nil {
			return err
		}
		if err := mkdirLike(l.upper(i), b); err != nil {
			return err
		}
	}
	if err := l.writeEtc(mf); err != nil {
		return fmt.Errorf("write /etc files: %w", err)
	}
	if err := l.makeHome(mf.uid); err != nil {
		return fmt.Errorf("create builder home: %w", err)
	}
	return nil
}

// mkdirLike creates dir with the mode and owner of the host directory model.
func mkdirLike(dir, model string) error {
	fi, err := os.Stat(model)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	return copyAttrs(dir, fi)
}

func copyAttrs(p string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return os.Chmod(p, fi.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky|fs.ModeSetuid))
}

// writeFile writes data at host path p as seen inside the machine,
// creating missing parents like the host's.
func (l layout) writeFile(p string, data []byte, mode fs.FileMode, uid, gid int) error {
	dst, err := l.makeParents(p)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		return err
	}
	if err := os.Chown(dst, uid, gid); err != nil {
		return err
	}
	return os.Chmod(dst, mode) // WriteFile's mode is subject to umask
}

// whiteout hides host path p inside the machine (an overlay whiteout in the
// upper layer of its base dir). Paths outside the base dirs are not visible
// anyway.
func (l layout) whiteout(p string) error {
	dst, lower, _ := l.hostView(p)
	if lower == "" {
		return nil
	}
	if _, err := l.makeParents(p); err != nil {
		return err
	}
	err := unix.Mknod(dst, unix.S_IFCHR, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// makeParents creates the missing parents of p's host view, each with the
// attributes of its counterpart on the host, and returns the view.
func (l layout) makeParents(p string) (string, error) {
	dst, lower, upper := l.hostView(p)
	rel := strings.TrimPrefix(filepath.Dir(dst), upper)
	cur := upper
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		if _, err := os.Lstat(cur); err == nil {
			continue
		}
		model := filepath.Join(lower, strings.TrimPrefix(cur, upper))
		if _, err := os.Stat(model); lower == "" || err != nil {
			model = "/" // root-owned, 0755
		}
		if err := mkdirLike(cur, model); err != nil {
			return "", err
		}
	}
	return dst, nil
}

// writeEtc writes the machine's account, sudo, host name and resolver files.
func (l layout) writeEtc(mf machineFiles) error {
	days := strconv.FormatInt(time.Now().Unix()/86400, 10)
	id := strconv.Itoa(mf.uid)
	accounts := []struct {
		file     string
		scrub    bool // replace the password field by "*"
		addition string
	}{
		{"/etc/passwd", false, builderUser + ":x:" + id + ":" + id + ":Hangar builder:" + builderHome + ":/bin/bash"},
		{"/etc/group", false, builderUser + ":x:" + id + ":"},
		{"/etc/shadow", true, builderUser + ":*:" + days + ":0:99999:7:::"},
		{"/etc/gshadow", true, builderUser + ":!::"},
	}
	for _, a := range accounts {
		data, fi, err := readHost(a.file)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Split(line, ":")
			if line == "" || fields[0] == builderUser {
				continue
			}
			if a.scrub && len(fields) > 1 {
				fields[1] = "*"
			}
			out.WriteString(strings.Join(fields, ":"))
			out.WriteByte('\n')
		}
		out.WriteString(a.addition)
		out.WriteByte('\n')
		st := fi.Sys().(*syscall.Stat_t)
		if err := l.writeFile(a.file, out.Bytes(), fi.Mode().Perm(), int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	for _, g := range sensitiveGlobs {
		matches, _ := filepath.Glob(g)
		for _, p := range matches {
			if err := l.whiteout(p); err != nil {
				return fmt.Errorf("hide %s: %w", p, err)
			}
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
		conf, _ := os.ReadFile("/etc/gitconfig")
		var b strings.Builder
		b.Write(conf)
		b.WriteString("\n[safe]\n")
		for _, dir := range mf.gitSafe {
			b.WriteString("\tdirectory = " + dir + "\n")
		}
		files = append(files, etcFile{"/etc/gitconfig", b.String(), 0o644})
	}
	for _, f := range files {
		if err := l.writeFile(f.path, []byte(f.data), f.mode, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// etcFile is a root-owned file written into a machine's /etc.
type etcFile struct {
	path string
	data string
	mode fs.FileMode
}

func readHost(p string) ([]byte, fs.FileInfo, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(p)
	return data, fi, err
}

// makeHome creates home/ and home/builder, owned by the builder, with the
// host's /etc/skel files.
func (l layout) makeHome(uid int) error {
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
	entries, _ := os.ReadDir("/etc/skel")
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/etc/skel", e.Name()))
		if err != nil {
			continue
		}
		dst := filepath.Join(h, e.Name())
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		if err := os.Chown(dst, uid, uid); err != nil {
			return err
		}
	}
	return nil
}
