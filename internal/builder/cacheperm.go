package builder

import (
	"archive/tar"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// The builder may run as root and the steps as another user (r.cred);
// then the cache is saved and restored with no more rights than the
// steps': a file they cannot read is not saved, and a restored entry
// belongs to whom it belonged when it was saved (to the steps' user when
// it was theirs, and always under $HOME, which is theirs).

// stepsOwner is the user name of an archive entry that belonged to the
// steps' user when it was saved.
const stepsOwner = "hangar-steps"

// stepsMay reports whether the steps' user has the permissions want (a
// mask of 4 read, 2 write, 1 execute) on the file fi describes.
func (r *run) stepsMay(fi fs.FileInfo, want fs.FileMode) bool {
	if r.cred == nil || r.cred.Uid == 0 {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == r.cred.Uid:
		perm >>= 6
	case st.Gid == r.cred.Gid || slices.Contains(r.cred.Groups, st.Gid):
		perm >>= 3
	}
	return perm&want == want
}

// stepsReach reports whether the steps' user can go through every
// directory above root.
func (r *run) stepsReach(root string) bool {
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || !r.stepsMay(fi, 1) {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// stepsMayArchive reports whether the steps' user could read the entry fi
// describes: a file's content, a directory's list (symbolic links are
// always readable).
func (r *run) stepsMayArchive(fi fs.FileInfo) bool {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return true
	case fi.IsDir():
		return r.stepsMay(fi, 5)
	}
	return r.stepsMay(fi, 4)
}

// setOwner records in h, for an entry being saved, who owns it.
func (r *run) setOwner(h *tar.Header, fi fs.FileInfo) {
	h.Uname, h.Gname, h.Uid, h.Gid = "", "", 0, 0
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	if r.cred != nil && st.Uid == r.cred.Uid {
		h.Uname = stepsOwner
		return
	}
	h.Uid, h.Gid = int(st.Uid), int(st.Gid)
}

// restoreOwner gives the restored target the owner h recorded: the steps'
// user for what was theirs and for anything under $HOME, else the ids
// h holds.
func (r *run) restoreOwner(target string, h *tar.Header) error {
	if r.cred == nil {
		return nil
	}
	if h.Uname == stepsOwner || within(target, r.home) {
		return r.chown(target)
	}
	return os.Lchown(target, h.Uid, h.Gid)
}
