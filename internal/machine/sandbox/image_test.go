package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/image/imagetest"
	"github.com/hangar-ci/hangar/internal/machine"
)

// TestMachineFromRegistryImage pushes a tiny busybox image to a real
// registry (Debian's docker-registry on loopback), pulls it into a store
// and boots a machine from it: the machine sees the image's files and
// nothing of the host's.
func TestMachineFromRegistryImage(t *testing.T) {
	requireHost(t)
	addr := imagetest.Registry(t)
	ref := addr + "/hangar/busybox:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, imagetest.Busybox(t, nil)); err != nil {
		t.Fatal(err)
	}
	s, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), ref, nil); err != nil {
		t.Fatal(err)
	}
	root, _, err := s.Root(ref)
	if err != nil {
		t.Fatal(err)
	}
	// The builder is a script the image's own shell runs.
	script := filepath.Join(t.TempDir(), "builder")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
cat /etc/os-release
echo "host=$(cat /etc/hostname)"
grep -q '^builder:x:2000:' /etc/passwd && echo builder-account
for f in /usr/bin/sudo /usr/bin/git /etc/debian_version; do test -e $f || echo "absent $f"; done
echo done
`), 0o755); err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, nil)
	out := &syncBuffer{}
	m, err := d.Start(context.Background(), machine.Spec{Name: "busybox", Builder: script, Output: out, Image: root})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("machine: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the machine did not finish:\n%s", out.String())
	}
	for _, want := range []string{"ID=hangar-busybox", "host=busybox", "builder-account",
		"absent /usr/bin/sudo", "absent /usr/bin/git", "absent /etc/debian_version", "done"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStartWithoutImage: a sandbox machine boots from an image or not at
// all.
func TestStartWithoutImage(t *testing.T) {
	d := newTestDriver(t, nil)
	_, err := d.Start(context.Background(), machine.Spec{Name: "noimage", Builder: "/bin/sh"})
	if err == nil || !strings.Contains(err.Error(), "image") {
		t.Errorf("Start without an image: %v", err)
	}
}
