// Package artifact keeps what builds leave behind: their artifacts (files
// collected after the steps, kept with the build for a retention period)
// and the workflows' caches (one compressed archive per app and workflow,
// saved by a successful build and restored before the next one's steps).
// Their metadata rows are in the store. The files are under Dir (one
// server on SQLite), or, with InDatabase (servers sharing PostgreSQL), in
// the database as chunked blobs that every replica reads, streamed in and
// out a chunk at a time (blob.go). A background sweep (Run) deletes what
// has expired and files or blobs no row names.
package artifact

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// Defaults of the Keeper's settings.
const (
	DefaultMaxFile        = 2 << 30 // 2 GiB per artifact
	DefaultMaxBuild       = 5 << 30 // 5 GiB of artifacts per build
	DefaultRetention      = 30 * 24 * time.Hour
	DefaultMaxCache       = 5 << 30             // 5 GiB per cache archive
	DefaultCacheRetention = 14 * 24 * time.Hour // Codemagic's
	DefaultSweepInterval  = 10 * time.Minute
)

// Store is what the Keeper needs of the store.
type Store interface {
	AddArtifactWithin(ctx context.Context, id int64, a build.Artifact, file string, max int64) error
	Artifacts(ctx context.Context, id int64) ([]build.Artifact, error)
	Artifact(ctx context.Context, id int64, name string) (build.Artifact, string, error)
	TakeExpiredArtifacts(ctx context.Context, now time.Time) ([]string, error)
	ArtifactFiles(ctx context.Context) (map[string]bool, error)
	PutCache(ctx context.Context, c build.Cache, file string) (string, error)
	Cache(ctx context.Context, app, workflow string) (build.Cache, string, error)
	Caches(ctx context.Context, app string) ([]build.Cache, error)
	DeleteCaches(ctx context.Context, app, workflow string) ([]string, error)
	TakeExpiredCaches(ctx context.Context, now time.Time) ([]string, error)
	CacheFiles(ctx context.Context) (map[string]bool, error)
	BlobStore
	AddTicket(ctx context.Context, kind, ticket string, id int64, name string, expires time.Time) error
	TakeTicket(ctx context.Context, kind, ticket string) (int64, string, error)
}

// Keeper keeps artifacts in Dir/artifacts/<build id>/ and caches in
// Dir/caches/<build id>/, or with InDatabase as blobs in the store. Set Dir
// and Store; zero limits take the defaults. Files kept either way are
// read whatever InDatabase says now.
type Keeper struct {
	Dir   string
	Store Store
	// InDatabase keeps new files in the database, where every server of
	// it reads them; ChunkSize is their chunks' size (default 1 MiB).
	InDatabase bool
	ChunkSize  int
	// MaxFile and MaxBuild bound one artifact and a build's artifacts
	// together; Retention is how long artifacts are kept.
	MaxFile, MaxBuild int64
	Retention         time.Duration
	// MaxCache bounds a cache archive (compressed); CacheRetention is how
	// long a cache is kept after it was saved.
	MaxCache       int64
	CacheRetention time.Duration
	Logger         *slog.Logger
}

// ErrTooLarge is the error of an upload past its bound.
var ErrTooLarge = errors.New("over the size bound")

// ErrBuildFull is the error of an artifact that would take its build's
// artifacts past MaxBuild (an ErrTooLarge).
var ErrBuildFull = fmt.Errorf("%w: the build's artifacts would pass their bound", ErrTooLarge)

func (k *Keeper) maxFile() int64  { return orDefault(k.MaxFile, DefaultMaxFile) }
func (k *Keeper) maxBuild() int64 { return orDefault(k.MaxBuild, DefaultMaxBuild) }
func (k *Keeper) maxCache() int64 { return orDefault(k.MaxCache, DefaultMaxCache) }
func (k *Keeper) retention() time.Duration {
	return time.Duration(orDefault(int64(k.Retention), int64(DefaultRetention)))
}
func (k *Keeper) cacheRetention() time.Duration {
	return time.Duration(orDefault(int64(k.CacheRetention), int64(DefaultCacheRetention)))
}

func orDefault(v, def int64) int64 {
	if v <= 0 {
		return def
	}
	return v
}

// Limits are the bounds a build's uploads are held to.
type Limits struct {
	ArtifactFile, ArtifactBuild, Cache int64
}

// Limits returns the Keeper's bounds.
func (k *Keeper) Limits() Limits {
	return Limits{ArtifactFile: k.maxFile(), ArtifactBuild: k.maxBuild(), Cache: k.maxCache()}
}

func (k *Keeper) log() *slog.Logger {
	if k.Logger != nil {
		return k.Logger
	}
	return slog.Default()
}

// CheckName says what is wrong with an artifact name: a relative path
// with '/' separators, without "." or ".." components, control
// characters or a trailing '/'.
func CheckName(name string) error {
	if name == "" || len(name) > 1024 {
		return errors.New("an artifact name must be 1-1024 bytes")
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "\\") {
		return fmt.Errorf("artifact name %q is not a relative path with '/' separators", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("artifact name %q has an empty, '.' or '..' component", name)
		}
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("artifact name %q has a control character", name)
		}
	}
	return nil
}

// write copies r into a new file under dir (a random name), hashing it,
// and hands done the byte count: the file is kept only if done accepts
// it. It returns the file's path relative to k.Dir.
func (k *Keeper) write(ctx context.Context, dir string, r io.Reader, limit int64, done func(n int64) error) (rel string, n int64, md5sum, sha string, err error) {
	if k.InDatabase {
		return k.writeBlob(ctx, r, limit, done)
	}
	abs := filepath.Join(k.Dir, dir)
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", 0, "", "", err
	}
	name := randomID()
	f, err := os.CreateTemp(abs, name+".*.part")
	if err != nil {
		return "", 0, "", "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			_ = os.Remove(abs) // only if empty: made for this upload
		}
	}()
	hm, hs := md5.New(), sha256.New()
	n, err = io.Copy(io.MultiWriter(f, hm, hs), io.LimitReader(r, limit+1))
	if err != nil {
		return "", 0, "", "", err
	}
	if n > limit {
		return "", 0, "", "", ErrTooLarge
	}
	if err = done(n); err != nil {
		return "", 0, "", "", err
	}
	if err = f.Close(); err != nil {
		return "", 0, "", "", err
	}
	if err = os.Rename(f.Name(), filepath.Join(abs, name)); err != nil {
		return "", 0, "", "", err
	}
	return filepath.Join(dir, name), n, hex.EncodeToString(hm.Sum(nil)), hex.EncodeToString(hs.Sum(nil)), nil
}

// PutArtifact stores artifact name of build id from r, at most limit
// bytes (ErrTooLarge past it), if done accepts its byte count and the
// build's artifacts stay within MaxBuild (ErrBuildFull).
func (k *Keeper) PutArtifact(ctx context.Context, id int64, name string, r io.Reader, limit int64, done func(n int64) error) (build.Artifact, error) {
	if err := CheckName(name); err != nil {
		return build.Artifact{}, err
	}
	rel, n, m, s, err := k.write(ctx, filepath.Join("artifacts", strconv.FormatInt(id, 10)), r, limit, done)
	if err != nil {
		return build.Artifact{}, err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	a := build.Artifact{Name: name, Size: n, MD5: m, SHA256: s, CreatedAt: now, ExpiresAt: now.Add(k.retention())}
	if err := k.Store.AddArtifactWithin(ctx, id, a, rel, k.maxBuild()); err != nil {
		k.remove(rel)
		switch {
		case errors.Is(err, store.ErrExists):
			return a, &existsError{name}
		case errors.Is(err, store.ErrFull):
			return a, ErrBuildFull
		}
		return a, err
	}
	return a, nil
}

// existsError is a second artifact of a name in a build (store.ErrExists).
type existsError struct{ name string }

func (e *existsError) Error() string { return "the build has an artifact named " + e.name + " already" }
func (e *existsError) Unwrap() error { return store.ErrExists }

// Artifacts lists build id's artifacts.
func (k *Keeper) Artifacts(ctx context.Context, id int64) ([]build.Artifact, error) {
	return k.Store.Artifacts(ctx, id)
}

// OpenArtifact opens build id's artifact name (store.ErrNotFound if it
// does not exist or has expired).
func (k *Keeper) OpenArtifact(ctx context.Context, id int64, name string) (io.ReadSeekCloser, build.Artifact, error) {
	a, rel, err := k.Store.Artifact(ctx, id, name)
	if err != nil {
		return nil, a, err
	}
	f, err := k.open(ctx, rel)
	return f, a, err
}

// open opens a kept file (store.ErrNotFound if it is gone).
func (k *Keeper) open(ctx context.Context, rel string) (io.ReadSeekCloser, error) {
	if id, ok := strings.CutPrefix(rel, store.BlobFilePrefix); ok {
		return k.openBlob(ctx, id)
	}
	f, err := os.Open(filepath.Join(k.Dir, rel))
	if errors.Is(err, os.ErrNotExist) {
		return nil, store.ErrNotFound
	}
	return f, err
}

// PutCache stores app's cache of workflow, saved by build id, from r (at
// most MaxCache bytes: ErrTooLarge past it), if done accepts its byte
// count; it replaces the one before.
func (k *Keeper) PutCache(ctx context.Context, app, workflow string, id int64, r io.Reader, done func(n int64) error) (build.Cache, error) {
	rel, n, _, _, err := k.write(ctx, filepath.Join("caches", strconv.FormatInt(id, 10)), r, k.maxCache(), done)
	if err != nil {
		return build.Cache{}, err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	c := build.Cache{App: app, Workflow: workflow, Size: n, Build: id, CreatedAt: now, ExpiresAt: now.Add(k.cacheRetention())}
	old, err := k.Store.PutCache(ctx, c, rel)
	if err != nil {
		k.remove(rel)
		return c, err
	}
	k.remove(old)
	return c, nil
}

// OpenCache opens app's cache of workflow (store.ErrNotFound if none).
func (k *Keeper) OpenCache(ctx context.Context, app, workflow string) (io.ReadCloser, build.Cache, error) {
	c, rel, err := k.Store.Cache(ctx, app, workflow)
	if err != nil {
		return nil, c, err
	}
	f, err := k.open(ctx, rel)
	return f, c, err
}

// Caches lists app's caches ("": every app's).
func (k *Keeper) Caches(ctx context.Context, app string) ([]build.Cache, error) {
	return k.Store.Caches(ctx, app)
}

// ClearCaches deletes app's cache of workflow ("": all of app's) and
// says how many it deleted.
func (k *Keeper) ClearCaches(ctx context.Context, app, workflow string) (int, error) {
	files, err := k.Store.DeleteCaches(ctx, app, workflow)
	for _, f := range files {
		k.remove(f)
	}
	return len(files), err
}

// remove deletes a kept file (a path relative to Dir) and its directory
// once empty.
func (k *Keeper) remove(rel string) {
	if id, ok := strings.CutPrefix(rel, store.BlobFilePrefix); ok {
		// The caller's context may have ended (an upload cut short).
		if err := k.Store.DeleteBlob(context.Background(), id); err != nil {
			k.log().Warn("delete a kept blob", "blob", id, "err", err)
		}
		return
	}
	if rel == "" || filepath.IsAbs(rel) || strings.Contains(rel, "..") {
		return
	}
	p := filepath.Join(k.Dir, rel)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		k.log().Warn("remove a kept file", "file", p, "err", err)
	}
	_ = os.Remove(filepath.Dir(p)) // only if empty
}

// Sweep deletes the artifacts and caches that expired at now, and the
// files and blobs that no row names (their build or app was deleted, an
// upload was cut short) once they are older than an hour (younger ones may
// be uploads not yet recorded).
func (k *Keeper) Sweep(ctx context.Context, now time.Time) error {
	var errs []error
	for _, take := range []func(context.Context, time.Time) ([]string, error){k.Store.TakeExpiredArtifacts, k.Store.TakeExpiredCaches} {
		files, err := take(ctx, now)
		errs = append(errs, err)
		for _, f := range files {
			k.remove(f)
		}
	}
	if _, err := k.Store.DeleteOrphanBlobs(ctx, now.Add(-time.Hour)); err != nil {
		errs = append(errs, err)
	}
	for kind, list := range map[string]func(context.Context) (map[string]bool, error){"artifacts": k.Store.ArtifactFiles, "caches": k.Store.CacheFiles} {
		known, err := list(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		root := filepath.Join(k.Dir, kind)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(k.Dir, p)
			if known[rel] {
				return nil
			}
			if info, err := d.Info(); err == nil && now.Sub(info.ModTime()) > time.Hour {
				k.remove(rel)
			}
			return nil
		})
	}
	return errors.Join(errs...)
}

// Run sweeps every interval (DefaultSweepInterval if 0) until ctx ends.
func (k *Keeper) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := k.Sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
			k.log().Warn("artifact and cache sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
