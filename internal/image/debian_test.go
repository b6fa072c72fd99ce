package image_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/image/imagetest"
)

// TestDebianImage builds (once per host) the Debian test image with
// mmdebstrap and checks what BuildDebian made of it: labels of the
// toolchains it holds, and a root with the builder's needs and no copy of
// the host's resolver or host name.
func TestDebianImage(t *testing.T) {
	s, n := imagetest.Debian(t)
	info, err := s.Get(n)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Labels[image.KeyLabel]; got != imagetest.Spec().Key() {
		t.Errorf("build key label %q, want %q", got, imagetest.Spec().Key())
	}
	if v := info.Labels[image.LabelPrefix+"python"]; !strings.HasPrefix(v, "3.") {
		t.Errorf("python label %q, want 3.x (python3 is installed); labels %v", v, info.Labels)
	}
	if v := info.Labels[image.LabelPrefix+"java"]; v != "" {
		t.Errorf("java label %q on an image without Java", v)
	}
	root, _, err := s.Root(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Layers) != 1 {
		t.Fatalf("layers %v, want one", root.Layers)
	}
	for _, p := range []string{"usr/bin/bash", "usr/bin/git", "usr/bin/sudo", "usr/bin/env"} {
		if _, err := os.Stat(filepath.Join(root.Layers[0], p)); err != nil {
			t.Errorf("the image lacks %s: %v", p, err)
		}
	}
	for _, p := range []string{"etc/resolv.conf", "etc/hostname"} {
		if _, err := os.Lstat(filepath.Join(root.Layers[0], p)); err == nil {
			t.Errorf("the image has %s (a copy of the build host's)", p)
		}
	}
	// sudo must keep its set-user-ID bit through the layer.
	if fi, err := os.Stat(filepath.Join(root.Layers[0], "usr/bin/sudo")); err == nil && fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("sudo mode %v: lost its set-user-ID bit", fi.Mode())
	}
}
