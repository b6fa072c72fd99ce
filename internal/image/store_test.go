package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/image/imagetest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
}

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func layerTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)),
			ModTime: time.Unix(1700000000, 0)}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLayersStackWithWhiteouts: a two-layer image whose upper layer
// deletes a file (".wh.") and empties a directory (".wh..wh..opq") of the
// lower one, unpacked by the store and stacked as an overlay the way
// machines mount them, shows what the image means: deleted entries gone,
// the rest of both layers there, modes (set-user-ID) and links kept.
func TestLayersStackWithWhiteouts(t *testing.T) {
	requireRoot(t)
	lower := layerTar(t,
		entry{name: "a/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "a/keep", typ: tar.TypeReg, body: "keep"},
		entry{name: "a/gone", typ: tar.TypeReg, body: "gone"},
		entry{name: "d/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "d/old", typ: tar.TypeReg, body: "old"},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/suid", typ: tar.TypeReg, body: "x", mode: 0o4755},
		entry{name: "bin/hard", typ: tar.TypeLink, link: "bin/suid"},
		entry{name: "bin/sym", typ: tar.TypeSymlink, link: "/etc/shadow"},
	)
	upper := layerTar(t,
		entry{name: "a/.wh.gone", typ: tar.TypeReg},
		entry{name: "d/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "d/.wh..wh..opq", typ: tar.TypeReg},
		entry{name: "d/new", typ: tar.TypeReg, body: "new"},
		entry{name: "a/added", typ: tar.TypeReg, body: "added"},
	)
	img := imagetest.FromTars(t, map[string]string{"io.hangar.node": "18.20.4"}, lower, upper)
	src := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "test/whiteouts:1"})); err != nil {
		t.Fatal(err)
	}
	s, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Pull(context.Background(), image.LayoutPrefix+src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "test/whiteouts:1" || info.Labels["io.hangar.node"] != "18.20.4" {
		t.Errorf("pulled %s with labels %v", info.Name, info.Labels)
	}
	root, _, err := s.Root(info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Layers) != 2 {
		t.Fatalf("layers %v", root.Layers)
	}
	merged, work, up := t.TempDir(), t.TempDir(), t.TempDir()
	opts := "lowerdir=" + root.Layers[1] + ":" + root.Layers[0] + ",upperdir=" + up + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	read := func(p string) string {
		data, err := os.ReadFile(filepath.Join(merged, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	for p, want := range map[string]string{"a/keep": "keep", "a/added": "added", "d/new": "new", "bin/hard": "x"} {
		if got := read(p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"a/gone", "d/old", "a/.wh.gone", "d/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists in the merged image (err %v), want it deleted", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(merged, "bin/suid")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("bin/suid: %v %v, want set-user-ID", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(merged, "bin/sym")); err != nil || l != "/etc/shadow" {
		t.Errorf("bin/sym -> %q (%v)", l, err)
	}
}

// TestUnpackRefusesEscapes: a layer entry climbing out with "..", or
// written through a symlink of the layer, fails the pull, and nothing is
// written outside the store.
func TestUnpackRefusesEscapes(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	for name, layer := range map[string][]byte{
		"dotdot": layerTar(t, entry{name: "../../escaped", typ: tar.TypeReg, body: "x"}),
		"symlink": layerTar(t,
			entry{name: "link", typ: tar.TypeSymlink, link: outside},
			entry{name: "link/escaped", typ: tar.TypeReg, body: "x"}),
		"hardlink": layerTar(t, entry{name: "h", typ: tar.TypeLink, link: "../../../etc/passwd"}),
	} {
		t.Run(name, func(t *testing.T) {
			img := imagetest.FromTars(t, nil, layer)
			src := filepath.Join(t.TempDir(), "layout")
			p, err := layout.Write(src, empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.AppendImage(img); err != nil {
				t.Fatal(err)
			}
			s, err := image.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Pull(context.Background(), image.LayoutPrefix+src, nil)
			if err == nil {
				t.Fatalf("a layer with a %s escape was unpacked", name)
			}
			t.Logf("refused: %v", err)
			if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
				t.Errorf("the layer wrote outside the store")
			}
			if list, err := s.List(); err != nil || len(list) != 0 {
				t.Errorf("the store keeps the refused image: %v %v", list, err)
			}
		})
	}
}

// TestPullFromRegistry pushes a small image to a real registry (Debian's
// docker-registry on loopback), pulls it into a store, lists it, pulls it
// again (nothing to unpack) and removes it with its blobs and layers.
func TestPullFromRegistry(t *testing.T) {
	requireRoot(t)
	addr := imagetest.Registry(t)
	img := imagetest.Busybox(t, map[string]string{"io.hangar.python": "3.11.2"})
	ref, err := name.ParseReference(addr + "/hangar/tiny:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), addr+"/hangar/missing:1", nil); err == nil {
		t.Error("pulled an image the registry does not have")
	}
	info, err := s.Pull(context.Background(), addr+"/hangar/tiny:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if info.Digest != want || info.Labels["io.hangar.python"] != "3.11.2" {
		t.Errorf("pulled %s %v, want %s", info.Digest, info.Labels, want)
	}
	root, _, err := s.Root(addr + "/hangar/tiny:1")
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(root.Layers[0], "etc/os-release")); err != nil || !strings.Contains(string(data), "hangar-busybox") {
		t.Errorf("unpacked layer: %q %v", data, err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != addr+"/hangar/tiny:1" {
		t.Errorf("List: %+v %v", list, err)
	}
	if _, err := s.Pull(context.Background(), addr+"/hangar/tiny:1", nil); err != nil {
		t.Errorf("second pull: %v", err)
	}
	if err := s.Remove(addr + "/hangar/tiny"); err == nil {
		t.Errorf("removed hangar/tiny:latest, which the store does not have")
	}
	if err := s.Remove(addr + "/hangar/tiny:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(addr + "/hangar/tiny:1"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	for _, sub := range []string{"_layers", "oci/blobs/sha256"} {
		if entries, _ := os.ReadDir(filepath.Join(dir, sub)); len(entries) != 0 {
			t.Errorf("%s keeps %d entries after the only image was removed", sub, len(entries))
		}
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"debian":             "debian:latest",
		"debian:12":          "debian:12",
		"127.0.0.1:5000/x":   "127.0.0.1:5000/x:latest",
		"127.0.0.1:5000/x:1": "127.0.0.1:5000/x:1",
		"hangar/default":     "hangar/default:latest",
		"r.example.com/a/b@sha256:" + strings.Repeat("a", 64): "r.example.com/a/b@sha256:" + strings.Repeat("a", 64),
	} {
		if got, err := image.Canonical(in); err != nil || got != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := image.Canonical("Not A Ref"); err == nil {
		t.Error("Canonical accepted a bad reference")
	}
}

func TestCheckToolchains(t *testing.T) {
	labels := map[string]string{"io.hangar.java": "17.0.13", "io.hangar.node": "18.20.4", "io.hangar.python": "3.11.2"}
	for _, ok := range []map[string]string{
		nil, {"java": "17"}, {"java": "17.0"}, {"node": "18"}, {"node": "18.x"}, {"node": "v18.20.4"},
		{"python": "3.11"}, {"java": "latest"}, {"java": "17", "node": "18", "python": "3"},
	} {
		if err := image.CheckToolchains(ok, "img", labels); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	err := image.CheckToolchains(map[string]string{"java": "21", "node": "18", "python": "3.1"}, "hangar/default:latest", labels)
	if err == nil {
		t.Fatal("java 21 and python 3.1 accepted on an image with 17 and 3.11.2")
	}
	for _, want := range []string{"environment.java 21", "environment.python 3.1", "hangar/default:latest", "java 17.0.13, node 18.20.4, python 3.11.2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "environment.node") {
		t.Errorf("error %q names node, which the image has", err)
	}
	if err := image.CheckToolchains(map[string]string{"java": "17"}, "bare", nil); err == nil || !strings.Contains(err.Error(), "no toolchains") {
		t.Errorf("an image without labels: %v", err)
	}
}

func TestKeychain(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	// "bot:s3cret" in base64.
	if err := os.WriteFile(p, []byte(`{"auths":{"registry.example.com":{"auth":"Ym90OnMzY3JldA=="}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kc, err := image.Keychain(p)
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]string{"registry.example.com/a/b": "bot", "other.example.com/a": ""} {
		r, _ := name.NewRepository(repo)
		a, err := kc.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != want {
			t.Errorf("%s: user %q, want %q", repo, cfg.Username, want)
		}
		if want == "" && a != authn.Anonymous {
			t.Errorf("%s: not anonymous", repo)
		}
	}
	if _, err := image.Keychain(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing config.json was accepted")
	}
}
