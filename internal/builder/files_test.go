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
	"testing"

	"github.com/hangar-ci/hangar/internal/link"
)

// keptFiles stands in for the runner's end of the file channels: it
// keeps what the builder uploads, by name, and answers each upload.
type keptFiles struct{ kept []string }

func (k *keptFiles) OpenFile(h link.FileHeader) (link.Stream, error) {
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
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	r := &run{home: home}
	files, _, skipped, err := r.untar(tar.NewReader(&buf), []string{filepath.Join(home, ".gradle", "caches")})
	if err != nil || files != 1 || skipped != 2 {
		t.Errorf("untar: %d files, %d skipped, %v; want 1 file, 2 skipped", files, skipped, err)
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
