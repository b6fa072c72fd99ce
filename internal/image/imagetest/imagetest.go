// Package imagetest provides images for tests that boot machines: a small
// Debian image, built once per host with mmdebstrap and cached under
// CacheDir (keyed by its package list and release), and a tiny busybox
// image made in memory.
package imagetest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/machine"
)

// CacheDir holds the image store of the tests, outside any clone, so that
// only the first test run on a host pays for building the Debian image.
const CacheDir = "/var/cache/hangar"

// Packages are the test image's: what the builder needs (bash, git, sudo)
// and what tests run in machines (nc, ps, ip, curl, python3 for syscalls).
var Packages = []string{
	"bash", "git", "curl", "sudo", "ca-certificates", "netcat-openbsd", "procps", "iproute2", "python3",
}

// Spec is the test image's Debian spec.
func Spec() image.DebianSpec {
	sp := image.DebianSpec{Release: image.DefaultRelease, Packages: Packages}
	sp.Name = "hangar/test:" + sp.Key()
	return sp
}

// Debian returns the store of CacheDir and the name of the test Debian
// image in it, building the image first if the store lacks it (about two
// minutes, once per host; concurrent test processes wait for one build).
// It skips the test without root or mmdebstrap.
func Debian(tb testing.TB) (*image.Store, string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("machine images need root")
	}
	sp := Spec()
	dir := filepath.Join(CacheDir, "images")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		tb.Fatal(err)
	}
	s, err := image.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if _, ok, err := s.UpToDate(sp); err != nil {
		tb.Fatal(err)
	} else if !ok {
		if _, err := exec.LookPath("mmdebstrap"); err != nil {
			tb.Skip("the test image needs mmdebstrap (make test installs it)")
		}
		var log bytes.Buffer
		sp.Log = &log
		start := time.Now()
		tb.Logf("building the test image %s with mmdebstrap (once per host)", sp.Name)
		if _, err := s.BuildDebian(context.Background(), sp); err != nil {
			tb.Fatalf("build the test image: %v\n%s", err, log.String())
		}
		tb.Logf("built the test image in %v", time.Since(start).Round(time.Second))
	}
	return s, sp.Name
}

// DebianRoot returns the root of the test Debian image.
func DebianRoot(tb testing.TB) *machine.Image {
	tb.Helper()
	s, n := Debian(tb)
	root, _, err := s.Root(n)
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// Busybox returns a one-layer image holding Debian's static busybox
// (package busybox-static) as /bin/busybox, /bin/sh and /bin/cat, and
// labels. It skips the test without busybox.
func Busybox(tb testing.TB, labels map[string]string) v1.Image {
	tb.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		tb.Skip("needs /bin/busybox (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(1700000000, 0)
	entries := []tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "bin/cat", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len("ID=hangar-busybox\n"))},
	}
	for _, h := range entries {
		h.ModTime = mod
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatal(err)
		}
		switch h.Name {
		case "bin/busybox":
			_, err = tw.Write(bb)
		case "etc/os-release":
			_, err = tw.Write([]byte("ID=hangar-busybox\n"))
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return FromTars(tb, labels, buf.Bytes())
}

// FromTars returns an OCI image of the given layer tars, lowest first,
// with labels.
func FromTars(tb testing.TB, labels map[string]string, layers ...[]byte) v1.Image {
	tb.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, data := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			tb.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			tb.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Labels = labels
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		tb.Fatal(err)
	}
	return img
}

// Registry starts Debian's docker-registry (package docker-registry) on a
// free loopback port with its storage in a temporary directory, and
// returns its address (host:port); it is stopped when the test ends. It
// skips the test without docker-registry.
func Registry(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		tb.Skip("needs docker-registry (make test installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := tb.TempDir()
	conf := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}
http: {addr: "%s", secret: hangar-test}
`, filepath.Join(dir, "data"), addr)), 0o600); err != nil {
		tb.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, "serve", conf)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-exited:
			tb.Fatalf("docker-registry exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("docker-registry did not answer within 30s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
