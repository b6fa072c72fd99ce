package builder

import (
	"archive/zip"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// zipDir writes the directory dir into a temporary zip file of the
// builder's own (~/.hangar), its entries under top/ as `zip -r -y` and
// Finder write them (Runner.xcarchive/Info.plist): regular files
// compressed, symbolic links kept as links (never followed), other files
// and what the steps' user cannot read left out. It stops with
// errTooLarge past limit bytes of archive. The file has no name (it is
// gone once closed); the caller closes it.
func (r *run) zipDir(dir, top string, limit int64) (*os.File, error) {
	tmp, err := os.CreateTemp(filepath.Join(r.home, ".hangar"), "artifact-*.zip")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(tmp.Name()); err != nil {
		tmp.Close()
		return nil, err
	}
	zw := zip.NewWriter(&boundedWriter{w: tmp, max: limit})
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if p == filepath.Join(r.home, ".hangar") {
			return filepath.SkipDir // Hangar's own files of the build
		}
		if !r.stepsMayArchive(fi) {
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil // what the steps' user cannot read
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		h, err := zip.FileInfoHeader(fi)
		if err != nil {
			return err
		}
		h.Name = path.Join(top, filepath.ToSlash(rel))
		switch {
		case fi.IsDir():
			h.Name += "/"
			h.Method = zip.Store
			_, err = zw.CreateHeader(h)
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Method = zip.Store
			w, err := zw.CreateHeader(h)
			if err == nil {
				_, err = io.WriteString(w, target)
			}
			return err
		case fi.Mode().IsRegular():
			h.Method = zip.Deflate
			w, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyN(w, f, fi.Size())
			return err
		}
		return nil // sockets, devices, pipes
	})
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		tmp.Close()
		return nil, err
	}
	return tmp, nil
}
