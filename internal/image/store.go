// Package image keeps the OCI images that build machines boot from: a Store
// is a directory holding an OCI image layout (every image's manifest, config
// and compressed layers, each image under its name) and the images' layers
// unpacked once per layer digest, which machines share read-only as the
// lower layers of their overlay root.
//
// Images come from any OCI registry (Pull), from another OCI image layout
// (Pull of "oci:DIR"), or from Debian packages (BuildDebian, with
// mmdebstrap). Their labels declare the toolchains they hold
// (io.hangar.java, io.hangar.node, io.hangar.python), which CheckToolchains
// compares with what a workflow asks for.
package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/machine"
)

// A store directory holds:
//
//	oci/                 an OCI image layout; index.json names each image
//	                     with the org.opencontainers.image.ref.name annotation
//	_layers/<alg>-<hex>/ one unpacked layer per diff ID (uncompressed digest),
//	                     OCI whiteouts turned into overlayfs ones; the "_"
//	                     keeps the go tool out of the Go files of images in
//	                     a data dir inside a clone (`go vet ./...`)
//	lock                 flock: shared to read, exclusive to change
const (
	ociDir    = "oci"
	layersDir = "_layers"
	lockFile  = "lock"
	// refAnnotation names an image in an OCI layout's index.
	refAnnotation = "org.opencontainers.image.ref.name"
)

// Store is a directory of images. Several processes (servers, `hangar
// image` commands) may use one store at once. Its methods need root
// (unpacking layers creates device nodes and overlayfs xattrs).
type Store struct {
	dir string
}

// ErrNotFound is returned for an image the store does not have.
var ErrNotFound = errors.New("no such image")

// Open opens the store in dir, creating it if needed.
func Open(dir string) (*Store, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(dir, ",:") {
		return nil, fmt.Errorf("image store %s: must not contain ',' or ':' (overlay options)", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, layersDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	s := &Store{dir: dir}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, ociDir, "index.json")); errors.Is(err, os.ErrNotExist) {
		if _, err := layout.Write(filepath.Join(dir, ociDir), empty.Index); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// lock takes the store's flock (unix.LOCK_SH or LOCK_EX) and returns its
// release.
func (s *Store) lock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

func (s *Store) layout() layout.Path { return layout.Path(filepath.Join(s.dir, ociDir)) }

// Canonical returns the name an image reference is stored under: the
// reference as written, with ":latest" added when it names neither a tag
// nor a digest. It fails on what is not an image reference.
func Canonical(ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: not an image reference such as debian:12 or registry.example.com/team/image:1", ref)
	}
	if _, ok := r.(name.Tag); ok {
		last := ref[strings.LastIndex(ref, "/")+1:]
		if !strings.Contains(last, ":") {
			ref += ":latest"
		}
	}
	return ref, nil
}

// Info describes an image of the store.
type Info struct {
	// Name is what the image is stored under.
	Name string
	// Digest is its manifest's digest.
	Digest v1.Hash
	// Size is the total size of its compressed layers in bytes.
	Size int64
	// Labels are its config's labels.
	Labels map[string]string
	// Env is its config's environment (PATH...).
	Env []string
	// Layers are its layers' diff IDs, lowest first.
	Layers []v1.Hash
}

// List returns the store's images, sorted by name.
func (s *Store) List() ([]Info, error) {
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.layout().ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	var out []Info
	for _, d := range im.Manifests {
		n := d.Annotations[refAnnotation]
		if n == "" {
			continue
		}
		info, err := s.info(n, d.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Get returns the image stored under ref (see Canonical), or ErrNotFound.
func (s *Store) Get(ref string) (Info, error) {
	n, err := Canonical(ref)
	if err != nil {
		return Info{}, err
	}
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return Info{}, err
	}
	defer unlock()
	d, err := s.find(n)
	if err != nil {
		return Info{}, err
	}
	return s.info(n, d.Digest)
}

// find returns the index descriptor of image n; the lock is held.
func (s *Store) find(n string) (v1.Descriptor, error) {
	idx, err := s.layout().ImageIndex()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("image store: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("image store: %w", err)
	}
	for _, d := range im.Manifests {
		if d.Annotations[refAnnotation] == n {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("image %s: %w", n, ErrNotFound)
}

// info reads image n's manifest and config; the lock is held.
func (s *Store) info(n string, digest v1.Hash) (Info, error) {
	img, err := s.layout().Image(digest)
	if err != nil {
		return Info{}, fmt.Errorf("image %s: %w", n, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Info{}, fmt.Errorf("image %s: config: %w", n, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return Info{}, fmt.Errorf("image %s: manifest: %w", n, err)
	}
	info := Info{Name: n, Digest: digest, Labels: cf.Config.Labels, Env: cf.Config.Env, Layers: cf.RootFS.DiffIDs}
	for _, l := range m.Layers {
		info.Size += l.Size
	}
	if len(info.Layers) != len(m.Layers) {
		return Info{}, fmt.Errorf("image %s: %d layers but %d diff IDs in its config", n, len(m.Layers), len(info.Layers))
	}
	return info, nil
}

// add stores img under name n (replacing what n named) and unpacks its
// layers. The exclusive lock is held.
func (s *Store) add(n string, img v1.Image) (Info, error) {
	l := s.layout()
	ann := map[string]string{refAnnotation: n}
	if err := l.ReplaceImage(img, match.Name(n), layout.WithAnnotations(ann)); err != nil {
		return Info{}, fmt.Errorf("image %s: store: %w", n, err)
	}
	d, err := s.find(n)
	if err != nil {
		return Info{}, err
	}
	info, err := s.info(n, d.Digest)
	if err != nil {
		return Info{}, err
	}
	if err := s.unpackAll(n, d.Digest); err != nil {
		// Not an image machines could boot from: forget it.
		if rerr := s.layout().RemoveDescriptors(match.Name(n)); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return Info{}, errors.Join(err, s.collect())
	}
	// What n named before may be unreferenced now.
	return info, s.collect()
}

// Remove removes the image stored under ref and the blobs and unpacked
// layers no other image uses. Machines running from it keep their layers
// mounted; remove an image only when no build uses it.
func (s *Store) Remove(ref string) error {
	n, err := Canonical(ref)
	if err != nil {
		return err
	}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.find(n); err != nil {
		return err
	}
	if err := s.layout().RemoveDescriptors(match.Name(n)); err != nil {
		return fmt.Errorf("image %s: %w", n, err)
	}
	return s.collect()
}

// collect removes the blobs and unpacked layers that no image of the index
// references; the exclusive lock is held.
func (s *Store) collect() error {
	l := s.layout()
	idx, err := l.ImageIndex()
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	keep := map[v1.Hash]bool{}
	keepLayers := map[string]bool{}
	for _, d := range im.Manifests {
		img, err := l.Image(d.Digest)
		if err != nil {
			return err
		}
		m, err := img.Manifest()
		if err != nil {
			return err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		keep[d.Digest], keep[m.Config.Digest] = true, true
		for _, ld := range m.Layers {
			keep[ld.Digest] = true
		}
		for _, id := range cf.RootFS.DiffIDs {
			keepLayers[layerDirName(id)] = true
		}
	}
	var errs []error
	algs, err := os.ReadDir(filepath.Join(string(l), "blobs"))
	if err != nil {
		return err
	}
	for _, a := range algs {
		blobs, err := os.ReadDir(filepath.Join(string(l), "blobs", a.Name()))
		if err != nil {
			return err
		}
		for _, b := range blobs {
			h := v1.Hash{Algorithm: a.Name(), Hex: b.Name()}
			if !keep[h] {
				if err := l.RemoveBlob(h); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	dirs, err := os.ReadDir(filepath.Join(s.dir, layersDir))
	if err != nil {
		return err
	}
	for _, e := range dirs {
		if !keepLayers[e.Name()] {
			if err := os.RemoveAll(filepath.Join(s.dir, layersDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// layerDirName is the directory, under _layers/, of the layer with diff ID id.
func layerDirName(id v1.Hash) string { return id.Algorithm + "-" + id.Hex }

// Root returns what a machine needs to boot from the image stored under
// ref: its unpacked layers (unpacking what is missing), its environment
// and its labels.
func (s *Store) Root(ref string) (*machine.Image, Info, error) {
	info, err := s.Get(ref)
	if err != nil {
		return nil, Info{}, err
	}
	root := &machine.Image{Name: info.Name, Env: info.Env}
	missing := false
	for _, id := range info.Layers {
		dir := filepath.Join(s.dir, layersDir, layerDirName(id))
		if _, err := os.Stat(dir); err != nil {
			missing = true
		}
		root.Layers = append(root.Layers, dir)
	}
	if missing {
		unlock, err := s.lock(unix.LOCK_EX)
		if err != nil {
			return nil, Info{}, err
		}
		defer unlock()
		if err := s.unpackAll(info.Name, info.Digest); err != nil {
			return nil, Info{}, err
		}
	}
	return root, info, nil
}

// unpackAll unpacks the layers of image n (manifest digest) that are not
// unpacked yet; the exclusive lock is held.
func (s *Store) unpackAll(n string, digest v1.Hash) error {
	img, err := s.layout().Image(digest)
	if err != nil {
		return fmt.Errorf("image %s: %w", n, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image %s: %w", n, err)
	}
	for _, ly := range layers {
		id, err := ly.DiffID()
		if err != nil {
			return fmt.Errorf("image %s: %w", n, err)
		}
		dir := filepath.Join(s.dir, layersDir, layerDirName(id))
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := unpackLayer(ly, dir); err != nil {
			return fmt.Errorf("image %s: unpack layer %s: %w", n, id, err)
		}
	}
	return nil
}

// Image returns the image stored under ref, e.g. to push it to a registry
// with go-containerregistry's remote.Write.
func (s *Store) Image(ref string) (v1.Image, error) {
	info, err := s.Get(ref)
	if err != nil {
		return nil, err
	}
	return s.layout().Image(info.Digest)
}
