package builder

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// keptFiles stands in for the runner's end of the file channels: it
// keeps what the builder uploads, by name, and answers each upload; it
// serves cache as the workflow's cache.
type keptFiles struct {
	kept  []string
	cache []byte
}

func (k *keptFiles) OpenFile(h link.FileHeader) (link.Stream, error) {
	if h.Op == link.GetCache {
		info, _ := json.Marshal(link.CacheInfo{Size: int64(len(k.cache)), Build: 1, Created: "2026-11-28 01:00:00 UTC"})
		return &keptStream{k: k, answer: io.MultiReader(bytes.NewReader(append(info, '\n')), bytes.NewReader(k.cache))}, nil
	}
	return &keptStream{k: k, name: h.Name}, nil
}

type keptStream struct {
	k      *keptFiles
	name   string
	data   bytes.Buffer
	answer io.Reader
}

func (s *keptStream) Write(p []byte) (int, error) { return s.data.Write(p) }
func (s *keptStream) Close() error                { return nil }

func (s *keptStream) CloseWrite() error {
	s.k.kept = append(s.k.kept, s.name+"="+s.data.String())
	res, _ := json.Marshal(link.FileResult{Size: int64(s.data.Len())})
	s.answer = bytes.NewReader(append(res, '\n'))
	return nil
}

func (s *keptStream) Read(p []byte) (int, error) {
	if s.answer == nil {
		return 0, io.EOF
	}
	return s.answer.Read(p)
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestArtifactsStayInTheClone: a symbolic link among the artifacts is
// uploaded if it leads to a file of the clone, and refused if it leads
// out of it (a file, or a directory the pattern goes through).
func TestArtifactsStayInTheClone(t *testing.T) {
	home, outside := t.TempDir(), t.TempDir()
	clone := filepath.Join(home, "clone")
	write(t, filepath.Join(outside, "secret.txt"), "outside")
	write(t, filepath.Join(outside, "keys", "key.pem"), "outside key")
	write(t, filepath.Join(clone, "out", "app.apk"), "apk")
	write(t, filepath.Join(clone, "notes.txt"), "in")
	for link, target := range map[string]string{
		"out/in.apk":     "../notes.txt",
		"out/secret.apk": filepath.Join(outside, "secret.txt"),
		"out/keys":       filepath.Join(outside, "keys"),
		"out/up.apk":     "../../../" + filepath.Base(outside) + "/secret.txt",
	} {
		if err := os.Symlink(target, filepath.Join(clone, link)); err != nil {
			t.Fatal(err)
		}
	}
	k := &keptFiles{}
	r := &run{job: &link.Job{Artifacts: []string{"out/*.apk", "out/keys/*.pem", "out/**/*.pem"},
		Limits: &link.FileLimits{ArtifactFile: 1 << 20, ArtifactBuild: 1 << 20, Cache: 1 << 20}}, home: home, dir: clone, files: k}
	var out bytes.Buffer
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	slices.Sort(k.kept)
	if want := []string{"out/app.apk=apk", "out/in.apk=in"}; !slices.Equal(k.kept, want) {
		t.Errorf("uploaded %q, want %q; log:\n%s", k.kept, want, out.String())
	}
	for _, name := range []string{"out/secret.apk", "out/up.apk"} {
		if !strings.Contains(out.String(), name+": it is a symbolic link to a file outside the clone: not uploaded") {
			t.Errorf("log does not say why %s was left out:\n%s", name, out.String())
		}
	}
}

// TestCacheRestoreStaysInPaths: an archive cannot write, or change the
// mode of, anything through a symbolic link it made.
func TestCacheRestoreStaysInPaths(t *testing.T) {
	home, outside := t.TempDir(), t.TempDir()
	if err := os.Chmod(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data string) {
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: ".gradle/caches/evil", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777}, "")
	add(&tar.Header{Name: ".gradle/caches/evil/pwned", Typeflag: tar.TypeReg, Mode: 0o644}, "x")
	add(&tar.Header{Name: ".gradle/caches/evil/", Typeflag: tar.TypeDir, Mode: 0o777}, "")
	add(&tar.Header{Name: ".gradle/caches/ok.txt", Typeflag: tar.TypeReg, Mode: 0o644}, "ok")
	// Out of the paths by "..", by an absolute name, by a hard link; a
	// link in place of a path itself (later entries would go through it).
	abs := filepath.Join(t.TempDir(), "pub-cache")
	trav, _ := filepath.Rel(home, filepath.Join(outside, "trav"))
	add(&tar.Header{Name: ".gradle/caches/../../" + filepath.ToSlash(trav), Typeflag: tar.TypeReg, Mode: 0o644}, "x")
	add(&tar.Header{Name: filepath.ToSlash(trav), Typeflag: tar.TypeReg, Mode: 0o644}, "x")
	add(&tar.Header{Name: filepath.Join(outside, "abs"), Typeflag: tar.TypeReg, Mode: 0o644}, "x")
	add(&tar.Header{Name: abs, Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777}, "")
	add(&tar.Header{Name: abs + "/hard", Typeflag: tar.TypeLink, Linkname: filepath.Join(outside, "secret")}, "")
	add(&tar.Header{Name: abs + "/ok.txt", Typeflag: tar.TypeReg, Mode: 0o644}, "ok2")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	r := &run{home: home}
	files, _, skipped, err := r.untar(tar.NewReader(&buf), []string{filepath.Join(home, ".gradle", "caches"), abs})
	if err != nil || files != 2 || skipped != 7 {
		t.Errorf("untar: %d files, %d skipped, %v; want 2 files, 7 skipped", files, skipped, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the paths: %v", entries)
	}
	if fi, err := os.Lstat(abs); err != nil || !fi.IsDir() {
		t.Errorf("%s: %v %v; want the directory the archive's ok.txt made", abs, fi, err)
	}
	if data, _ := os.ReadFile(filepath.Join(abs, "ok.txt")); string(data) != "ok2" {
		t.Errorf("pub-cache/ok.txt: %q", data)
	}
	if fi, err := os.Stat(outside); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the directory the archive's link points to: %v, %v; want its mode untouched (0700)", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Error("a file was written through the archive's link")
	}
	if data, _ := os.ReadFile(filepath.Join(home, ".gradle", "caches", "ok.txt")); string(data) != "ok" {
		t.Errorf("ok.txt: %q", data)
	}
}

// TestArtifactDirectoryZipped: a pattern matching a directory, as
// Codemagic's build/ios/xcarchive/*.xcarchive, uploads it as one zip
// archive named after it (Runner.xcarchive.zip) holding the directory,
// its symbolic links kept as links (never followed, even out of the
// clone); what else matches inside it is not uploaded again; an archive
// over the server's limit is left out and said.
func TestArtifactDirectoryZipped(t *testing.T) {
	home, outside := t.TempDir(), t.TempDir()
	clone := filepath.Join(home, "clone")
	if err := os.MkdirAll(filepath.Join(home, ".hangar"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(outside, "secret.txt"), "outside")
	arch := filepath.Join(clone, "build", "ios", "xcarchive", "Runner.xcarchive")
	write(t, filepath.Join(arch, "Info.plist"), "<plist/>")
	write(t, filepath.Join(arch, "Products", "Applications", "Runner.app", "Runner"), strings.Repeat("binary", 1000))
	if err := os.Symlink("Applications", filepath.Join(arch, "Products", "Current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(arch, "leak")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(clone, "build", "app.ipa"), "ipa")
	k := &keptFiles{}
	r := &run{job: &link.Job{Artifacts: []string{"build/ios/xcarchive/*.xcarchive", "build/**/*.plist", "build/*.ipa"},
		Limits: &link.FileLimits{ArtifactFile: 1 << 20, ArtifactBuild: 1 << 20}}, home: home, dir: clone, files: k}
	var out bytes.Buffer
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if len(k.kept) != 2 || !strings.HasPrefix(k.kept[0], "build/ios/xcarchive/Runner.xcarchive.zip=") || k.kept[1] != "build/app.ipa=ipa" {
		t.Fatalf("uploaded %d artifacts, want the zip and the ipa; log:\n%s", len(k.kept), out.String())
	}
	data := strings.TrimPrefix(k.kept[0], "build/ios/xcarchive/Runner.xcarchive.zip=")
	zr, err := zip.NewReader(strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		kind := "file"
		switch {
		case f.Mode()&os.ModeSymlink != 0:
			kind = "link"
		case f.Mode().IsDir():
			kind = "dir"
		}
		got[f.Name] = kind + ":" + string(b)
	}
	want := map[string]string{
		"Runner.xcarchive/":                                        "dir:",
		"Runner.xcarchive/Info.plist":                              "file:<plist/>",
		"Runner.xcarchive/Products/":                               "dir:",
		"Runner.xcarchive/Products/Applications/":                  "dir:",
		"Runner.xcarchive/Products/Applications/Runner.app/":       "dir:",
		"Runner.xcarchive/Products/Applications/Runner.app/Runner": "file:" + strings.Repeat("binary", 1000),
		"Runner.xcarchive/Products/Current":                        "link:Applications",
		"Runner.xcarchive/leak":                                    "link:" + filepath.Join(outside, "secret.txt"),
	}
	if !maps.Equal(got, want) {
		t.Errorf("zip entries:\n got %q\nwant %q", got, want)
	}
	if len(r.links) != 2 || r.links[0].Name != "Runner.xcarchive.zip" || r.links[0].Type != "xcarchive" {
		t.Errorf("CM_ARTIFACT_LINKS: %s", r.artifactLinks())
	}
	if entries, _ := os.ReadDir(filepath.Join(home, ".hangar")); len(entries) != 0 {
		t.Errorf("left in ~/.hangar: %v", entries)
	}

	// Over the limit per artifact: said, and the build goes on.
	k2 := &keptFiles{}
	r = &run{job: &link.Job{Artifacts: []string{"build/ios/xcarchive/*.xcarchive"},
		Limits: &link.FileLimits{ArtifactFile: 100, ArtifactBuild: 1 << 20}}, home: home, dir: clone, files: k2}
	out.Reset()
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if len(k2.kept) != 0 || !strings.Contains(out.String(), "build/ios/xcarchive/Runner.xcarchive/ zipped is over the server's limit of 100 bytes per artifact: not uploaded") {
		t.Errorf("over the limit: uploaded %q; log:\n%s", k2.kept, out.String())
	}
}

// TestCachePathsAnywhere: as on Codemagic, a cache path may be under
// $HOME, in the clone (by $CM_BUILD_DIR or relative) or absolute; what
// cannot be cached is refused, saying why; the archive saved by one build
// is restored by the next into the same places.
func TestCachePathsAnywhere(t *testing.T) {
	home := t.TempDir()
	clone := filepath.Join(home, "clone")
	abs := filepath.Join(t.TempDir(), "opt", "flutter", ".pub-cache")
	linked := filepath.Join(t.TempDir(), "linked")
	if err := os.Symlink(t.TempDir(), linked); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(home, ".gradle", "caches", "modules", "a.jar"): "jar",
		filepath.Join(clone, "node_modules", "left-pad", "index.js"): "js",
		filepath.Join(clone, "deps", "d.txt"):                        "dep",
		filepath.Join(abs, "hosted", "pkg.tar"):                      "pkg",
	}
	for p, data := range files {
		write(t, p, data)
	}
	if err := os.Symlink("index.js", filepath.Join(clone, "node_modules", "left-pad", "main.js")); err != nil {
		t.Fatal(err)
	}
	k := &keptFiles{}
	r := &run{home: home, dir: clone, files: k, env: []string{"HOME=" + home, "CM_BUILD_DIR=" + clone, "PUB=" + abs},
		job: &link.Job{Limits: &link.FileLimits{Cache: 1 << 20}, CachePaths: []string{
			"~/.gradle/caches", "$CM_BUILD_DIR/node_modules", "deps", "$PUB", "~/.gradle/caches/modules",
			"/", "$HOME", "~/.hangar/keystores", "$CM_BUILD_DIR", "/proc/self", "$FLUTTER_ROOT/.pub-cache", linked,
		}}}
	var out bytes.Buffer
	if err := r.saveCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Cache path / (/) is not cached: it is the whole file system",
		"Cache path $HOME (" + home + ") is not cached: it holds the build's home",
		"Cache path ~/.hangar/keystores (" + filepath.Join(home, ".hangar", "keystores") + ") is not cached: it is Hangar's own directory of the build",
		"Cache path $CM_BUILD_DIR (" + clone + ") is not cached: it is the clone itself",
		"Cache path /proc/self (/proc/self) is not cached: it is in /proc, a file system of the kernel",
		"Cache path $FLUTTER_ROOT/.pub-cache is not cached: $FLUTTER_ROOT is not set on this machine",
		"Cache path " + linked + " is not cached: it is a symbolic link",
		"Saved the cache: 4 files",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("save log lacks %q:\n%s", want, out.String())
		}
	}
	if len(k.kept) != 1 {
		t.Fatalf("uploaded %d caches", len(k.kept))
	}
	k.cache = []byte(strings.TrimPrefix(k.kept[0], "="))

	// The next build's machine: none of it yet.
	for _, d := range []string{filepath.Join(home, ".gradle"), clone, filepath.Dir(filepath.Dir(abs))} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(clone, "README"), "fresh clone")
	out.Reset()
	if err := r.restoreCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Restored 4 files") {
		t.Errorf("restore log:\n%s", out.String())
	}
	for p, data := range files {
		if got, err := os.ReadFile(p); err != nil || string(got) != data {
			t.Errorf("%s: %q %v; want %q", p, got, err, data)
		}
	}
	if target, err := os.Readlink(filepath.Join(clone, "node_modules", "left-pad", "main.js")); err != nil || target != "index.js" {
		t.Errorf("the link in node_modules: %q %v", target, err)
	}
}

// TestCacheStepsRights: when the builder is root and the steps another
// user, the cache holds only what that user can read, and a restored
// entry outside $HOME belongs to whom it belonged (the user's stay the
// user's, root's stay root's); under $HOME everything is the user's.
func TestCacheStepsRights(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as the builder of a sandbox is, to give files to another user")
	}
	const uid, gid = 4242, 4242
	home := t.TempDir()
	abs := filepath.Join(t.TempDir(), "opt", "cache")
	for p, mode := range map[string]os.FileMode{
		filepath.Join(abs, "users.txt"):        0o600,
		filepath.Join(abs, "roots-public.txt"): 0o644,
		filepath.Join(abs, "roots-secret.txt"): 0o600,
		filepath.Join(home, "c", "mine.txt"):   0o600,
	} {
		write(t, p, filepath.Base(p))
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(abs, "users.txt"), filepath.Join(home, "c", "mine.txt"), filepath.Join(home, "c")} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	// t.TempDir's directories are the test's own (0700): let the user in.
	for _, d := range []string{filepath.Dir(home), home, filepath.Dir(filepath.Dir(abs)), filepath.Dir(abs), abs} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k := &keptFiles{}
	r := &run{home: home, dir: filepath.Join(home, "clone"), files: k, env: []string{"HOME=" + home}, uid: uid, gid: gid,
		cred: &syscall.Credential{Uid: uid, Gid: gid},
		job:  &link.Job{Limits: &link.FileLimits{Cache: 1 << 20}, CachePaths: []string{abs, "~/c"}}}
	var out bytes.Buffer
	if err := r.saveCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Saved the cache: 3 files") || !strings.Contains(out.String(), "Left out 1 entries of the cache paths that the steps' user cannot read") {
		t.Fatalf("save log:\n%s", out.String())
	}
	k.cache = []byte(strings.TrimPrefix(k.kept[0], "="))
	for _, d := range []string{filepath.Dir(abs), filepath.Join(home, "c")} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	if err := r.restoreCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]uint32{
		filepath.Join(abs, "users.txt"):        uid,
		filepath.Join(abs, "roots-public.txt"): 0,
		filepath.Join(home, "c", "mine.txt"):   uid,
		filepath.Join(home, "c"):               uid,
		filepath.Dir(abs):                      0, // made for the path, not in the archive
	} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v\n%s", p, err, out.String())
			continue
		}
		if got := fi.Sys().(*syscall.Stat_t).Uid; got != want {
			t.Errorf("%s belongs to %d, want %d", p, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(abs, "roots-secret.txt")); err == nil {
		t.Error("a file the steps' user cannot read was cached")
	}
}

// TestArtifactsOutsideClone: as on Codemagic, an absolute pattern
// (/tmp/xcodebuild_logs/*.log, $HOME/Library/**/*.dSYM) collects files and
// directories from outside the clone, named by their name, suffixed _N
// when another artifact has it; a pattern that would search the whole
// file system or the kernel's, and Hangar's own files, are refused.
func TestArtifactsOutsideClone(t *testing.T) {
	home, logs := t.TempDir(), filepath.Join(t.TempDir(), "xcodebuild_logs")
	clone := filepath.Join(home, "clone")
	write(t, filepath.Join(logs, "a.log"), "tmp a")
	write(t, filepath.Join(logs, "b.log"), "tmp b")
	write(t, filepath.Join(home, "logs", "a.log"), "home a")
	write(t, filepath.Join(clone, "a.log"), "clone a")
	write(t, filepath.Join(home, ".hangar", "env"), "SECRET=1")
	write(t, filepath.Join(home, "Library", "DerivedData", "App", "Build", "Runner.app.dSYM", "Contents", "Info.plist"), "dsym")
	// A link to the home, from elsewhere: zipped without ~/.hangar.
	homeLink := filepath.Join(filepath.Dir(logs), "homelink")
	if err := os.Symlink(home, homeLink); err != nil {
		t.Fatal(err)
	}
	k := &keptFiles{}
	r := &run{home: home, dir: clone, files: k, env: []string{"HOME=" + home},
		job: &link.Job{Artifacts: []string{logs + "/*.log", "~/logs/*.log", "a.log", "$HOME/Library/**/*.dSYM", "~/.hangar/*", "/**/*.log", "/proc/self/status", "~", filepath.Dir(home), homeLink},
			Limits: &link.FileLimits{ArtifactFile: 1 << 20, ArtifactBuild: 1 << 20}}}
	var out bytes.Buffer
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, kept := range k.kept {
		name, data, _ := strings.Cut(kept, "=")
		if !strings.HasSuffix(name, ".zip") {
			name += "=" + data
		}
		names = append(names, name)
	}
	if want := []string{"a.log=tmp a", "b.log=tmp b", "a_1.log=home a", "a_2.log=clone a", "Runner.app.dSYM.zip", "homelink.zip"}; !slices.Equal(names, want) {
		t.Errorf("uploaded %q, want %q; log:\n%s", names, want, out.String())
	}
	data := strings.TrimPrefix(k.kept[len(k.kept)-1], "homelink.zip=")
	zr, err := zip.NewReader(strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		if strings.Contains(f.Name, ".hangar") {
			t.Errorf("homelink.zip holds %s", f.Name)
		}
	}
	if len(zr.File) < 5 {
		t.Errorf("homelink.zip holds %d entries", len(zr.File))
	}
	for _, want := range []string{
		filepath.Join(home, ".hangar", "env") + ": it is Hangar's own file of the build: not uploaded",
		"Pattern /**/*.log (/**/*.log) is not collected: it would search the whole file system",
		"Pattern /proc/self/status (/proc/self/status) is not collected: it is in /proc, a file system of the kernel",
		"Pattern ~ (" + home + ") is not collected: it holds the build's home",
		"Pattern " + filepath.Dir(home) + " (" + filepath.Dir(home) + ") is not collected: it holds the build's home",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
}

// TestArtifactsStepsRights: when the builder is root and the steps
// another user, an artifact from outside the clone that this user cannot
// read is not uploaded, and a zipped directory leaves out what it cannot
// read.
func TestArtifactsStepsRights(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as the builder of a sandbox is")
	}
	home, dir := t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Dir(home), home, filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(dir, "secret.log"), "root only")
	write(t, filepath.Join(dir, "public.log"), "public")
	write(t, filepath.Join(dir, "out.d", "secret.txt"), "root only")
	write(t, filepath.Join(dir, "out.d", "public.txt"), "public")
	for _, p := range []string{filepath.Join(dir, "secret.log"), filepath.Join(dir, "out.d", "secret.txt")} {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k := &keptFiles{}
	r := &run{home: home, dir: filepath.Join(home, "clone"), files: k, cred: &syscall.Credential{Uid: 4242, Gid: 4242},
		job: &link.Job{Artifacts: []string{dir + "/*.log", dir + "/*.d"}, Limits: &link.FileLimits{ArtifactFile: 1 << 20, ArtifactBuild: 1 << 20}}}
	if err := os.MkdirAll(filepath.Join(home, ".hangar"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if len(k.kept) != 2 || k.kept[0] != "public.log=public" || !strings.Contains(out.String(), filepath.Join(dir, "secret.log")+": the steps' user cannot read it: not uploaded") {
		t.Fatalf("uploaded %d: log:\n%s", len(k.kept), out.String())
	}
	data := strings.TrimPrefix(k.kept[1], "out.d.zip=")
	zr, err := zip.NewReader(strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if want := []string{"out.d/", "out.d/public.txt"}; !slices.Equal(names, want) {
		t.Errorf("out.d.zip holds %q, want %q", names, want)
	}
}

// TestCodemagicArtifactsAndCache runs the artifacts and cache of a file
// written as Codemagic's documentation shows them
// (internal/workflow/testdata/codemagic/artifacts-cache.yaml) on a
// machine laid out as a Flutter build leaves it.
func TestCodemagicArtifactsAndCache(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "workflow", "testdata", "codemagic", "artifacts-cache.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := workflow.Parse("codemagic.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	w := f.Workflows[0]
	home := t.TempDir()
	clone := filepath.Join(home, "clone")
	for p, data := range map[string]string{
		"clone/build/app/outputs/apk/release/app-release.apk":    "apk",
		"clone/build/app/outputs/bundle/release/app-release.aab": "aab",
		"clone/build/app/outputs/mapping/release/mapping.txt":    "map",
		"clone/build/ios/xcarchive/Runner.xcarchive/Info.plist":  "plist",
		"clone/flutter_drive.log":                                "drive",
		"clone/node_modules/left-pad/index.js":                   "js",
		".gradle/caches/modules-2/a.jar":                         "jar",
		".pub-cache/hosted/pub.dev/http-1.0.0/pubspec.yaml":      "pub",
	} {
		write(t, filepath.Join(home, p), data)
	}
	if err := os.MkdirAll(filepath.Join(home, ".hangar"), 0o755); err != nil {
		t.Fatal(err)
	}
	k := &keptFiles{}
	r := &run{home: home, dir: clone, files: k, env: []string{"HOME=" + home, "CM_BUILD_DIR=" + clone},
		job: &link.Job{Artifacts: w.Artifacts, CachePaths: w.CachePaths,
			Limits: &link.FileLimits{ArtifactFile: 1 << 20, ArtifactBuild: 1 << 20, Cache: 1 << 20}}}
	var out bytes.Buffer
	if err := r.uploadArtifacts(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, kept := range k.kept {
		name, _, _ := strings.Cut(kept, "=")
		names = append(names, name)
	}
	want := []string{"build/app/outputs/apk/release/app-release.apk", "build/app/outputs/bundle/release/app-release.aab",
		"build/app/outputs/mapping/release/mapping.txt", "build/ios/xcarchive/Runner.xcarchive.zip", "flutter_drive.log"}
	if !slices.Equal(names, want) {
		t.Errorf("uploaded %q, want %q; log:\n%s", names, want, out.String())
	}
	for _, want := range []string{"Pattern build/ios/ipa/*.ipa matched no files", "Pattern /tmp/xcodebuild_logs/*.log matched no files"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	k.kept = nil
	if err := r.saveCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Cache path $FLUTTER_ROOT/.pub-cache is not cached: $FLUTTER_ROOT is not set on this machine",
		"Cache path " + filepath.Join(home, "Library", "Caches", "CocoaPods") + " does not exist: not cached",
		"Saved the cache: 3 files",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("cache log lacks %q:\n%s", want, out.String())
		}
	}
}

// TestCacheRootThroughLink: a cache path that goes through a symbolic
// link the build could have made (one committed in the clone, say) is
// neither saved nor restored: the archive of a build where it was a
// directory is not written where the link leads in the next.
func TestCacheRootThroughLink(t *testing.T) {
	home, outside := t.TempDir(), t.TempDir()
	clone := filepath.Join(home, "clone")
	write(t, filepath.Join(clone, "link", "cache", "x.txt"), "cached")
	k := &keptFiles{}
	r := &run{home: home, dir: clone, files: k, env: []string{"HOME=" + home, "CM_BUILD_DIR=" + clone},
		job: &link.Job{Limits: &link.FileLimits{Cache: 1 << 20}, CachePaths: []string{"$CM_BUILD_DIR/link/cache"}}}
	var out bytes.Buffer
	if err := r.saveCache(context.Background(), &out); err != nil || !strings.Contains(out.String(), "Saved the cache: 1 files") {
		t.Fatalf("save: %v\n%s", err, out.String())
	}
	k.cache = []byte(strings.TrimPrefix(k.kept[0], "="))
	// The next build's clone has link -> outside.
	if err := os.RemoveAll(filepath.Join(clone, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(clone, "link")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := r.restoreCache(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "Cache path " + filepath.Join(clone, "link", "cache") + " is not restored: it goes through the symbolic link " + filepath.Join(clone, "link")
	if !strings.Contains(out.String(), want) {
		t.Errorf("restore log lacks %q:\n%s", want, out.String())
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written where the link leads: %v", entries)
	}
	write(t, filepath.Join(outside, "cache", "y.txt"), "where the link leads")
	out.Reset()
	k.kept = nil
	if err := r.saveCache(context.Background(), &out); err != nil || len(k.kept) != 0 || !strings.Contains(out.String(), "is not cached: it goes through the symbolic link") {
		t.Errorf("save through the link: %v, %d uploads\n%s", err, len(k.kept), out.String())
	}
}
