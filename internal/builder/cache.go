package builder

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
)

// The cache is one tar archive compressed with zstd, of the workflow's
// cache.cache_paths. As on Codemagic a path may be anywhere on the
// machine: under $HOME (~/.gradle/caches), in the clone
// ($CM_BUILD_DIR/node_modules, or relative), or absolute
// (/opt/flutter/.pub-cache). Entries under $HOME are named relative to
// it, others by their absolute path. The archive is restored only into
// the paths the workflow lists now, never through a symbolic link, and
// never into the build's home itself, the clone itself, Hangar's own
// files (~/.hangar), / or the kernel's file systems.

// cachePaths returns the workflow's cache paths, absolute, clean and none
// under another, that can be cached, saying in out why others cannot.
func (r *run) cachePaths(out io.Writer) []string {
	env := mergeEnv(r.env, readEnvFile(r.cmEnv))
	var paths []string
	for _, p := range r.job.CachePaths {
		abs, unset := r.expandPathUnset(p, env)
		if len(unset) > 0 {
			fmt.Fprintf(out, "Cache path %s is not cached: $%s is not set on this machine\n", p, strings.Join(unset, ", $"))
			continue
		}
		if why := r.refuseCachePath(abs); why != "" {
			fmt.Fprintf(out, "Cache path %s (%s) is not cached: %s\n", p, abs, why)
			continue
		}
		if slices.ContainsFunc(paths, func(q string) bool { return within(abs, q) }) {
			continue // cached with the path it is under
		}
		paths = slices.DeleteFunc(paths, func(q string) bool { return within(q, abs) })
		paths = append(paths, abs)
	}
	return paths
}

// kernelDirs hold the kernel's file systems: nothing to cache or restore.
var kernelDirs = []string{"/proc", "/sys", "/dev"}

// refuseCachePath says why the absolute path abs cannot be a cache path
// ("" if it can).
func (r *run) refuseCachePath(abs string) string {
	hangar := filepath.Join(r.home, ".hangar")
	switch {
	case abs == "/":
		return "it is the whole file system; list the directories to cache"
	case within(r.home, abs):
		return "it holds the build's home ($HOME: the clone and Hangar's own files); list directories under it, such as ~/.gradle/caches"
	case within(abs, hangar):
		return "it is Hangar's own directory of the build (steps, variables, keystores)"
	case abs == r.dir:
		return "it is the clone itself, which each build checks out; list directories of it, such as $CM_BUILD_DIR/node_modules"
	}
	for _, d := range kernelDirs {
		if within(abs, d) {
			return "it is in " + d + ", a file system of the kernel with nothing to cache"
		}
	}
	return ""
}

// cacheRootProblem says why the cache path root cannot be restored into
// or saved ("" if it can): a symbolic link (Codemagic does not cache
// links either), a path that goes through a link the build could have
// made (in $HOME, the clone's included, or not root's), or, to restore, a
// directory the builder cannot write.
func (r *run) cacheRootProblem(root string, restore bool) string {
	fi, err := os.Lstat(root)
	if err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return "it is a symbolic link; list the directory it leads to"
	}
	for p := filepath.Dir(root); p != filepath.Dir(p); p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); within(p, r.home) || !ok || st.Uid != 0 {
			return "it goes through the symbolic link " + p + ", which the build could have made; list the directory it leads to"
		}
	}
	if !restore {
		return ""
	}
	p := root
	for err != nil && p != filepath.Dir(p) {
		p = filepath.Dir(p)
		_, err = os.Stat(p)
	}
	if err := syscall.Access(p, 2 /* W_OK */); err != nil {
		return fmt.Sprintf("%s cannot be written on this machine (%v)", p, err)
	}
	return ""
}

// restoreCache is the step before the scripts: it unpacks the workflow's
// cache, if the server has one. Nothing in it fails the build.
func (r *run) restoreCache(ctx context.Context, out io.Writer) error {
	paths := r.cachePaths(out)
	if len(paths) == 0 || r.files == nil {
		return nil
	}
	start := time.Now()
	st, err := r.files.OpenFile(link.FileHeader{Op: link.GetCache})
	if err != nil {
		fmt.Fprintf(out, "No cache restored: %v\n", err)
		return nil
	}
	defer st.Close()
	br := bufio.NewReaderSize(st, 256<<10)
	line, err := br.ReadBytes('\n')
	var info link.CacheInfo
	if err == nil {
		err = json.Unmarshal(line, &info)
	}
	if err != nil {
		fmt.Fprintf(out, "No cache restored: the runner's answer was unreadable (%v)\n", err)
		return nil
	}
	fmt.Fprintf(out, "Restoring the cache saved by build %d at %s (%s compressed)\n", info.Build, info.Created, build.HumanBytes(info.Size))
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
	if err != nil {
		fmt.Fprintf(out, "No cache restored: %v\n", err)
		return nil
	}
	defer zr.Close()
	var roots []string
	for _, p := range paths {
		if why := r.cacheRootProblem(p, true); why != "" {
			fmt.Fprintf(out, "Cache path %s is not restored: %s\n", p, why)
			continue
		}
		roots = append(roots, p)
	}
	files, size, skipped, err := r.untar(tar.NewReader(zr), roots)
	if err != nil {
		fmt.Fprintf(out, "The cache was restored only in part (%d files, %s): %v\n", files, build.HumanBytes(size), err)
		return nil
	}
	fmt.Fprintf(out, "Restored %d files (%s) in %s\n", files, build.HumanBytes(size), time.Since(start).Round(time.Millisecond))
	if skipped > 0 {
		fmt.Fprintf(out, "Left out %d entries of the cache that are not under the workflow's cache paths, or would be written through a symbolic link\n", skipped)
	}
	return nil
}

// untar unpacks tr, keeping only the entries under paths (each one of
// them, or under one) that are not written through a symbolic link.
func (r *run) untar(tr *tar.Reader, paths []string) (files int, size int64, skipped int, err error) {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, size, skipped, nil
		}
		if err != nil {
			return files, size, skipped, err
		}
		target := filepath.Clean(filepath.FromSlash(h.Name))
		if !filepath.IsAbs(target) {
			target = filepath.Join(r.home, target)
		}
		i := slices.IndexFunc(paths, func(p string) bool { return within(target, p) })
		if i < 0 || throughLink(paths[i], target) || (target == paths[i] && h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg) {
			skipped++
			continue
		}
		mode := os.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(target); err == nil && !fi.IsDir() {
				// A link (perhaps the archive's own) or a file: making
				// or chmodding it would act on what it points to.
				skipped++
				continue
			}
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return files, size, skipped, err
			}
			_ = os.Chmod(target, mode|0o700)
		case tar.TypeReg:
			if err := r.mkdirs(filepath.Dir(target)); err != nil {
				return files, size, skipped, err
			}
			_ = os.Remove(target)
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return files, size, skipped, err
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return files, size, skipped, err
			}
			files++
			size += n
			_ = os.Chtimes(target, h.ModTime, h.ModTime)
		case tar.TypeSymlink:
			if err := r.mkdirs(filepath.Dir(target)); err != nil {
				return files, size, skipped, err
			}
			_ = os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return files, size, skipped, err
			}
		default:
			skipped++
			continue
		}
		if err := r.restoreOwner(target, h); err != nil {
			return files, size, skipped, err
		}
	}
}

// mkdirs makes dir and its missing parents, owned by the steps' user
// under $HOME (theirs), by the builder elsewhere.
func (r *run) mkdirs(dir string) error {
	if _, err := os.Lstat(dir); err == nil {
		return nil
	}
	if err := r.mkdirs(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if !within(dir, r.home) {
		return nil
	}
	return r.chown(dir)
}

// throughLink reports whether root, or a directory between root and
// target, is a symbolic link (writing there would leave the paths).
func throughLink(root, target string) bool {
	if target == root {
		return false
	}
	p := root
	for _, c := range append([]string{""}, strings.Split(mustRel(root, filepath.Dir(target)), string(filepath.Separator))...) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return false // missing from here on: made as directories
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return true
		}
	}
	return false
}

// mustRel is filepath.Rel of a path known to be under (or at) base.
func mustRel(base, p string) string {
	rel, _ := filepath.Rel(base, p)
	if rel == "." {
		return ""
	}
	return rel
}

// errTooLarge stops an archive (a cache's, a directory's) past its bound.
var errTooLarge = errors.New("over the bound")

// boundedWriter fails once more than max bytes were written.
type boundedWriter struct {
	w   io.Writer
	n   int64
	max int64
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	if b.n+int64(len(p)) > b.max {
		return 0, errTooLarge
	}
	n, err := b.w.Write(p)
	b.n += int64(n)
	return n, err
}

// saveCache is the last step of a successful build: it archives the
// workflow's cache paths and uploads them. Nothing in it fails the build.
func (r *run) saveCache(ctx context.Context, out io.Writer) error {
	var paths []string
	for _, p := range r.cachePaths(out) {
		if _, err := os.Lstat(p); err != nil {
			fmt.Fprintf(out, "Cache path %s does not exist: not cached\n", p)
			continue
		}
		why := r.cacheRootProblem(p, false)
		if why == "" && !r.stepsReach(p) {
			why = "the steps' user cannot reach it"
		}
		if why != "" {
			fmt.Fprintf(out, "Cache path %s is not cached: %s\n", p, why)
			continue
		}
		paths = append(paths, p)
	}
	if len(paths) == 0 || r.files == nil || r.job.Limits == nil {
		fmt.Fprintln(out, "Nothing to cache")
		return nil
	}
	start := time.Now()
	st, err := r.files.OpenFile(link.FileHeader{Op: link.PutCache})
	if err != nil {
		fmt.Fprintf(out, "The cache was not saved: %v\n", err)
		return nil
	}
	defer st.Close()
	bw := &boundedWriter{w: st, max: r.job.Limits.Cache}
	zw, err := zstd.NewWriter(bw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	files, size, unreadable, err := r.tarPaths(tw, paths)
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if errors.Is(err, errTooLarge) {
		fmt.Fprintf(out, "The cache was not saved: its archive grew past the server's bound of %s (compressed) after %d files, %s; cache less (cache.cache_paths) or ask the admin for a higher --cache-max-size\n",
			build.HumanBytes(r.job.Limits.Cache), files, build.HumanBytes(size))
		return nil
	}
	if err != nil {
		fmt.Fprintf(out, "The cache was not saved: %v\n", err)
		return nil
	}
	res, err := finishUpload(st)
	if err != nil {
		fmt.Fprintf(out, "The cache was not saved: %v\n", err)
		return nil
	}
	if res.Error != "" {
		fmt.Fprintf(out, "The cache was not saved: %s\n", res.Error)
		return nil
	}
	fmt.Fprintf(out, "Saved the cache: %d files, %s (%s compressed) in %s\n", files, build.HumanBytes(size), build.HumanBytes(res.Size), time.Since(start).Round(time.Millisecond))
	if unreadable > 0 {
		fmt.Fprintf(out, "Left out %d entries of the cache paths that the steps' user cannot read\n", unreadable)
	}
	return nil
}

// tarPaths writes paths into tw, named relative to the home when under
// it, else by their absolute path; symbolic links under them are kept as
// links, not followed.
func (r *run) tarPaths(tw *tar.Writer, paths []string) (files int, size int64, unreadable int, err error) {
	for _, root := range paths {
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable: left out
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			if !r.stepsMayArchive(fi) {
				unreadable++
				if fi.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			var linkTarget string
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				if linkTarget, err = os.Readlink(p); err != nil {
					return nil
				}
			case fi.IsDir(), fi.Mode().IsRegular():
			default:
				return nil // sockets, devices, pipes
			}
			h, err := tar.FileInfoHeader(fi, linkTarget)
			if err != nil {
				return nil
			}
			h.Name = filepath.ToSlash(p)
			if within(p, r.home) {
				h.Name = filepath.ToSlash(mustRel(r.home, p))
			}
			if fi.IsDir() {
				h.Name += "/"
			}
			r.setOwner(h, fi)
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				n, err := io.CopyN(tw, f, fi.Size())
				f.Close()
				if err != nil {
					return err
				}
				files++
				size += n
			}
			return nil
		})
		if err != nil {
			return files, size, unreadable, err
		}
	}
	return files, size, unreadable, nil
}
