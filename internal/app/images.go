package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/runner"
)

// instanceImages maps instance types to the images of a store: the
// runner's Images.
type instanceImages struct {
	store *image.Store
	// refs are the instance types' images, every type included.
	refs map[string]string
}

// openImages opens the image store and makes sure that every instance
// type's image is there, unpacked: a registry image missing from the
// store is pulled, a missing local one (the default image, made by
// `hangar image build`) fails the start with what to do.
func openImages(ctx context.Context, cfg Config, data string, types []string, log *slog.Logger) (*instanceImages, error) {
	dir := cfg.Images
	if dir == "" {
		dir = filepath.Join(data, "images")
	}
	store, err := image.Open(dir)
	if err != nil {
		return nil, err
	}
	def := cfg.DefaultImage
	if def == "" {
		def = image.DefaultName
	}
	ii := &instanceImages{store: store, refs: map[string]string{}}
	for _, t := range types {
		ref := cfg.InstanceImages[t]
		if ref == "" {
			ref = def
		}
		if ref, err = image.Canonical(ref); err != nil {
			return nil, fmt.Errorf("instance type %s: %w", t, err)
		}
		ii.refs[t] = ref
	}
	for t := range cfg.InstanceImages {
		if _, ok := ii.refs[t]; !ok {
			return nil, fmt.Errorf("instance types: image for %s, which is not an instance type", t)
		}
	}
	kc, err := image.Keychain(cfg.RegistryAuth)
	if err != nil {
		return nil, fmt.Errorf("--registry-auth: %w", err)
	}
	pulled := map[string]bool{}
	for _, t := range types {
		ref := ii.refs[t]
		if pulled[ref] {
			continue
		}
		pulled[ref] = true
		_, err := store.Get(ref)
		switch {
		case errors.Is(err, image.ErrNotFound) && ref == image.DefaultName:
			return nil, fmt.Errorf("the default image %s is not built in %s: run `hangar image build --images %s` (`make run` does it), or name a registry image with --default-image",
				ref, store.Dir(), store.Dir())
		case errors.Is(err, image.ErrNotFound):
			log.Info("pulling the image of an instance type", "instance_type", t, "image", ref)
			if _, err := store.Pull(ctx, ref, kc); err != nil {
				return nil, fmt.Errorf("instance type %s: %w", t, err)
			}
		case err != nil:
			return nil, fmt.Errorf("instance type %s: %w", t, err)
		}
		_, info, err := store.Root(ref) // unpacked before the first build
		if err != nil {
			return nil, fmt.Errorf("instance type %s: %w", t, err)
		}
		log.Info("instance type image", "instance_type", t, "image", ref, "digest", info.Digest.String(), "toolchains", image.Versions(info.Labels))
	}
	return ii, nil
}

// ForInstanceType returns the root and labels of instance type name's image.
func (ii *instanceImages) ForInstanceType(name string) (*machine.Image, map[string]string, error) {
	ref, ok := ii.refs[name]
	if !ok {
		return nil, nil, fmt.Errorf("instance type %s has no image on this server", name)
	}
	root, info, err := ii.store.Root(ref)
	if errors.Is(err, image.ErrNotFound) {
		return nil, nil, fmt.Errorf("the image %s of instance type %s was removed from this server: an admin can run `hangar image pull %s` (or `hangar image build` for the default image)", ref, name, ref)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the image %s of instance type %s: %w", ref, name, err)
	}
	return root, info.Labels, nil
}

// driverImages returns the images of the instance types named types for
// driver d: the cluster pulls the kube driver's, the other isolated
// drivers boot them from the image store; the host driver has none (nil).
func driverImages(ctx context.Context, cfg Config, data string, d machine.Driver, types []string, log *slog.Logger) (runner.Images, error) {
	switch {
	case d.Name() == "kube":
		return newKubeImages(cfg, types)
	case d.Isolated():
		return openImages(ctx, cfg, data, types, log)
	}
	return nil, nil
}
