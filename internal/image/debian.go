package image

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// DefaultName is the name `hangar image build` gives the default image,
// and the image of instance types that name none.
const DefaultName = "hangar/default:latest"

// DefaultRelease is the Debian release of the default image.
const DefaultRelease = "bookworm"

// DefaultPackages are the Debian packages of the default image: what
// builds commonly need (a shell, git, curl, compilers, Java, Node.js,
// Python) and what the builder needs in the machine (bash, git, sudo; its
// SSH server is Hangar's own binary, mounted in). procps and
// openssh-client are for users in an SSH session and for git over SSH.
var DefaultPackages = []string{
	"bash", "git", "curl", "sudo", "ca-certificates", "build-essential",
	"default-jdk-headless", "nodejs", "npm", "python3",
	"procps", "openssh-client", "unzip", "zip", "xz-utils",
}

// Labels of images made by BuildDebian besides the toolchains'.
const (
	// KeyLabel holds the Debian build's key (DebianSpec.Key).
	KeyLabel = LabelPrefix + "build-key"
	// ReleaseLabel holds the Debian release.
	ReleaseLabel = LabelPrefix + "debian"
)

// DebianSpec says what BuildDebian makes.
type DebianSpec struct {
	// Name is what the image is stored under (default DefaultName).
	Name string
	// Release is the Debian release (default DefaultRelease).
	Release string
	// Packages are installed on Debian's minbase variant (default
	// DefaultPackages).
	Packages []string
	// Log receives mmdebstrap's output; may be nil.
	Log io.Writer
}

func (sp *DebianSpec) setDefaults() error {
	if sp.Name == "" {
		sp.Name = DefaultName
	}
	if sp.Release == "" {
		sp.Release = DefaultRelease
	}
	if sp.Packages == nil {
		sp.Packages = DefaultPackages
	}
	n, err := Canonical(sp.Name)
	if err != nil {
		return err
	}
	sp.Name = n
	if !debNameRE.MatchString(sp.Release) {
		return fmt.Errorf("debian release %q: want a name such as bookworm", sp.Release)
	}
	for _, p := range sp.Packages {
		if !debNameRE.MatchString(p) {
			return fmt.Errorf("debian package %q: not a package name", p)
		}
	}
	return nil
}

var debNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*$`)

// debianRecipe versions how BuildDebian makes an image: change it when the
// recipe changes, so that the images it made before are rebuilt.
const debianRecipe = "hangar-debian-1"

// Key identifies the image sp makes: the recipe, the release and the
// package list. The image records it in its KeyLabel.
func (sp DebianSpec) Key() string {
	pkgs := slices.Clone(sp.Packages)
	slices.Sort(pkgs)
	sum := sha256.Sum256([]byte(debianRecipe + "\n" + sp.Release + "\n" + strings.Join(pkgs, ",")))
	return hex.EncodeToString(sum[:])[:16]
}

// UpToDate returns the image sp names if the store has it made from the
// same key.
func (s *Store) UpToDate(sp DebianSpec) (Info, bool, error) {
	if err := sp.setDefaults(); err != nil {
		return Info{}, false, err
	}
	info, err := s.Get(sp.Name)
	if errors.Is(err, ErrNotFound) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, err
	}
	return info, info.Labels[KeyLabel] == sp.Key(), nil
}

// BuildDebian makes an image of Debian packages with mmdebstrap (root, the
// mmdebstrap package, and Debian's package mirror reachable) and stores it
// under sp.Name: one layer, labelled with the versions of Java, Node.js
// and Python it holds. The image has no /etc/resolv.conf or /etc/hostname:
// each machine gets its own.
func (s *Store) BuildDebian(ctx context.Context, sp DebianSpec) (Info, error) {
	if err := sp.setDefaults(); err != nil {
		return Info{}, err
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return Info{}, errors.New("mmdebstrap not found: install it with `apt-get install mmdebstrap`")
	}
	if os.Geteuid() != 0 {
		return Info{}, errors.New("building an image needs root")
	}
	tmp, err := os.MkdirTemp("", "hangar-image-")
	if err != nil {
		return Info{}, err
	}
	defer removeTree(tmp)
	rootTar := filepath.Join(tmp, "root.tar")
	pkgList := filepath.Join(tmp, "packages")
	hook := `rm -f "$1/etc/resolv.conf" "$1/etc/hostname"; ` +
		`dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Package}\t${Version}\n' > '` + pkgList + `'`
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
		"--include="+strings.Join(sp.Packages, ","), "--customize-hook="+hook, sp.Release, rootTar)
	cmd.Stdout, cmd.Stderr = sp.Log, sp.Log
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// Interrupted, mmdebstrap unmounts what it mounted in its chroot
	// (/proc, /sys, device nodes) before it exits: let it.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err != nil {
		return Info{}, fmt.Errorf("mmdebstrap %s: %w", sp.Release, err)
	}
	versions, err := packageVersions(pkgList)
	if err != nil {
		return Info{}, err
	}
	gz := rootTar + ".gz"
	if err := gzipFile(rootTar, gz); err != nil {
		return Info{}, err
	}
	_ = os.Remove(rootTar)
	labels := toolchainLabels(versions)
	labels[KeyLabel] = sp.Key()
	labels[ReleaseLabel] = sp.Release
	img, err := imageFromLayer(gz, labels)
	if err != nil {
		return Info{}, err
	}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return Info{}, err
	}
	defer unlock()
	return s.add(sp.Name, img)
}

// imageFromLayer makes a linux image of this host's architecture from one
// gzipped layer tar, with labels and a standard PATH.
func imageFromLayer(gz string, labels map[string]string) (v1.Image, error) {
	layer, err := tarball.LayerFromFile(gz, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Labels = labels
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = []string{"/bin/bash"}
	return mutate.ConfigFile(img, cf)
}

// gzipFile compresses src into dst, fast: the layer is stored once and
// read back locally.
func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// packageVersions reads "package<TAB>version" lines.
func packageVersions(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("installed packages: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, v, ok := strings.Cut(sc.Text(), "\t"); ok && v != "" {
			out[p] = v
		}
	}
	return out, sc.Err()
}

var openjdkRE = regexp.MustCompile(`^openjdk-[0-9]+-(jdk|jre)-headless$`)

// toolchainLabels returns the toolchain labels of an image holding the
// Debian packages versions (package -> version): the upstream versions of
// OpenJDK, Node.js and Python 3.
func toolchainLabels(versions map[string]string) map[string]string {
	labels := map[string]string{}
	var jdks []string
	for p := range versions {
		if openjdkRE.MatchString(p) {
			jdks = append(jdks, p)
		}
	}
	slices.Sort(jdks) // jdk before jre: either gives the version
	if len(jdks) > 0 {
		labels[LabelPrefix+"java"] = upstreamVersion(versions[jdks[0]])
	}
	if v := versions["nodejs"]; v != "" {
		labels[LabelPrefix+"node"] = upstreamVersion(v)
	}
	if v := versions["python3"]; v != "" {
		labels[LabelPrefix+"python"] = upstreamVersion(v)
	}
	return labels
}

// upstreamVersion returns the leading dotted number of a Debian version:
// "17.0.13+11-1~deb12u1" -> "17.0.13", "1:2.3-4" -> "2.3".
func upstreamVersion(v string) string {
	if _, after, ok := strings.Cut(v, ":"); ok {
		v = after
	}
	end := 0
	for end < len(v) && (v[end] >= '0' && v[end] <= '9' || v[end] == '.') {
		end++
	}
	return strings.TrimRight(v[:end], ".")
}

// removeTree removes dir after unmounting, deepest first, whatever is
// mounted below it (what an interrupted mmdebstrap may have left in its
// chroot), so that the removal never reaches into the host's /dev or
// /proc. If an unmount fails, dir stays.
func removeTree(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return
		}
	}
	_ = os.RemoveAll(dir)
}
