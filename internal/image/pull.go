package image

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// LayoutPrefix starts a Pull reference that names an OCI image layout
// directory rather than a registry: "oci:DIR" (its only image) or
// "oci:DIR@NAME" (the image it names NAME).
const LayoutPrefix = "oci:"

// Pull fetches ref into the store and unpacks its layers: an image of any
// OCI registry (credentials from auth, a Docker config.json; nil:
// anonymous), or of an OCI image layout ("oci:DIR[@NAME]"). A registry
// image is stored under its reference (Canonical), a layout's under its
// NAME or, without one, under DIR's base name. For a multi-platform image
// it picks this host's platform.
func (s *Store) Pull(ctx context.Context, ref string, auth authn.Keychain) (Info, error) {
	var img v1.Image
	var n string
	if src, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		var err error
		if img, n, err = fromLayout(src); err != nil {
			return Info{}, err
		}
	} else {
		var err error
		if n, err = Canonical(ref); err != nil {
			return Info{}, err
		}
		r, err := name.ParseReference(n)
		if err != nil {
			return Info{}, fmt.Errorf("image %q: %w", ref, err)
		}
		if auth == nil {
			auth = authn.NewMultiKeychain() // anonymous
		}
		img, err = remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(auth),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
		if err != nil {
			return Info{}, fmt.Errorf("pull %s: %w", n, err)
		}
	}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return Info{}, err
	}
	defer unlock()
	return s.add(n, img)
}

// fromLayout returns the image of the OCI layout "DIR[@NAME]" and the name
// to store it under.
func fromLayout(src string) (v1.Image, string, error) {
	dir, want, _ := strings.Cut(src, "@")
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		if want == "" || d.Annotations[refAnnotation] == want {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0 && want != "":
		return nil, "", fmt.Errorf("OCI layout %s has no image named %q", dir, want)
	case len(found) == 0:
		return nil, "", fmt.Errorf("OCI layout %s holds no image", dir)
	case len(found) > 1:
		return nil, "", fmt.Errorf("OCI layout %s holds %d images: pick one with %s%s@NAME", dir, len(found), LayoutPrefix, dir)
	}
	n := found[0].Annotations[refAnnotation]
	if n == "" {
		n = strings.TrimSuffix(dir, "/")
		n = n[strings.LastIndex(n, "/")+1:]
	}
	if n, err = Canonical(n); err != nil {
		return nil, "", err
	}
	img, err := p.Image(found[0].Digest)
	if err != nil {
		return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return img, n, nil
}

// Keychain returns the registry credentials of the Docker config.json at
// path ("": none, anonymous pulls).
func Keychain(path string) (authn.Keychain, error) {
	if path == "" {
		return authn.NewMultiKeychain(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("registry auth: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("registry auth %s: not a Docker config.json: %w", path, err)
	}
	return configKeychain{cf}, nil
}

// configKeychain finds a registry's credentials in a Docker config file,
// by repository first, then by registry, as authn.DefaultKeychain does.
type configKeychain struct{ cf *configfile.ConfigFile }

func (k configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		c, err := k.cf.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		if c.Username != "" || c.Password != "" || c.Auth != "" || c.IdentityToken != "" || c.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{
				Username: c.Username, Password: c.Password, Auth: c.Auth,
				IdentityToken: c.IdentityToken, RegistryToken: c.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}
