package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// OCI whiteouts (image-spec layer.md): ".wh.NAME" deletes NAME of the
// layers below; ".wh..wh..opq" in a directory hides everything the layers
// below have in it.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// overlayOpaque is the xattr that makes an overlayfs directory opaque.
	overlayOpaque = "trusted.overlay.opaque"
)

// unpackLayer unpacks ly into the new directory dir, atomically: into a
// temporary sibling first, renamed to dir once complete. OCI whiteouts
// become overlayfs ones (a 0/0 character device for a deleted entry, the
// trusted.overlay.opaque xattr for an opaque directory), so that the
// unpacked layers stack as overlay lower layers.
func unpackLayer(ly v1.Layer, dir string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	rc, err := ly.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := unpackTar(rc, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// unpackTar extracts the layer tar r into the empty directory dir, as root:
// owners, modes, times, device nodes and xattrs as in the tar. An entry
// that would land outside dir (a "..", a path through a symlink, a hard
// link to outside) fails the extraction.
func unpackTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path  string
		mtime time.Time
	}
	var dirTimes []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		rel, err := entryPath(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			// The layer's root: its attributes are the root directory's.
			if hdr.Typeflag == tar.TypeDir {
				if err := setAttrs(dir, hdr); err != nil {
					return err
				}
				dirTimes = append(dirTimes, dirTime{dir, hdr.ModTime})
			}
			continue
		}
		parent, base := path.Split(rel)
		if err := makeParents(dir, parent); err != nil {
			return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
		}
		target := filepath.Join(dir, rel)
		switch {
		case base == whiteoutOpaque:
			if err := unix.Lsetxattr(filepath.Join(dir, parent), overlayOpaque, []byte("y"), 0); err != nil {
				return fmt.Errorf("layer entry %s: mark opaque: %w", hdr.Name, err)
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			gone := filepath.Join(dir, parent, strings.TrimPrefix(base, whiteoutPrefix))
			if err := removeExisting(gone); err != nil {
				return err
			}
			if err := unix.Mknod(gone, unix.S_IFCHR, 0); err != nil {
				return fmt.Errorf("layer entry %s: whiteout: %w", hdr.Name, err)
			}
			continue
		}
		if err := unpackEntry(tr, hdr, dir, target); err != nil {
			return fmt.Errorf("layer entry %s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirTimes = append(dirTimes, dirTime{target, hdr.ModTime})
		}
	}
	// Directories' times last: creating their entries changed them.
	for i := len(dirTimes) - 1; i >= 0; i-- {
		t := unix.NsecToTimespec(dirTimes[i].mtime.UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dirTimes[i].path, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// entryPath returns the relative, clean path of a tar entry name ("" for
// the root), refusing names that climb out.
func entryPath(name string) (string, error) {
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("layer entry %q: NUL in name", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("layer entry %q: climbs out with '..'", name)
		}
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), nil
}

// makeParents creates the missing directories of rel (relative to dir),
// root-owned 0755 as OCI layers expect for implied parents, and fails if
// one is not a directory (a symlink, say).
func makeParents(dir, rel string) error {
	cur := dir
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory in this layer (entries through symlinks are not supported)", strings.TrimPrefix(cur, dir))
		}
	}
	return nil
}

// removeExisting removes what is at p, unless it is a directory (a
// directory entry over an existing one keeps its contents).
func removeExisting(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.RemoveAll(p)
	}
	return os.Remove(p)
}

// unpackEntry creates one non-whiteout entry at target.
func unpackEntry(tr *tar.Reader, hdr *tar.Header, dir, target string) error {
	if hdr.Typeflag != tar.TypeDir {
		if err := removeExisting(target); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := os.Lstat(target)
		if err == nil && !fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return err
			}
			err = os.ErrNotExist
		}
		if errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	case tar.TypeReg: // the reader turns old tars' TypeRegA into TypeReg
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
	case tar.TypeLink:
		rel, err := entryPath(hdr.Linkname)
		if err != nil || rel == "" {
			return fmt.Errorf("hard link to %q: not a file of the layer", hdr.Linkname)
		}
		parent, _ := path.Split(rel)
		if err := makeParents(dir, parent); err != nil {
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		src := filepath.Join(dir, rel)
		if fi, err := os.Lstat(src); err != nil || fi.IsDir() {
			return fmt.Errorf("hard link to %q: not a file of this layer", hdr.Linkname)
		}
		return os.Link(src, target) // the link shares the source's attributes
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(target, mode|0o600, int(dev)); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if err := setAttrs(target, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeDir {
		t := unix.NsecToTimespec(hdr.ModTime.UnixNano())
		return unix.UtimesNanoAt(unix.AT_FDCWD, target, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// setAttrs gives p the owner, mode and xattrs of hdr. The mode comes after
// the owner: chown clears set-user-ID bits.
func setAttrs(p string, hdr *tar.Header) error {
	if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		mode := os.FileMode(hdr.Mode) & os.ModePerm
		if hdr.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if hdr.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if hdr.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(attr, "trusted.overlay.") {
			continue // never let a layer forge overlayfs metadata
		}
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", attr, err)
		}
	}
	return nil
}
