package builder

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestGlob(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		"build/app/outputs/flutter-apk/app-release.apk",
		"build/app/outputs/bundle/release/app-release.aab",
		"build/app/outputs/mapping/release/mapping.txt",
		"build/ios/ipa/Runner.ipa",
		"flutter_drive.log",
		"build/.hidden/x.apk",
		".cache/y.apk",
		"a.apk",
	} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := func(pattern string) []string {
		var out []string
		for _, m := range glob(root, pattern) {
			if !m.dir {
				out = append(out, m.rel)
			}
		}
		return out
	}
	for _, tt := range []struct {
		pattern string
		want    []string
	}{
		{"build/**/outputs/**/*.apk", []string{"build/app/outputs/flutter-apk/app-release.apk"}},
		{"build/**/outputs/**/*.{apk,aab}", []string{"build/app/outputs/flutter-apk/app-release.apk", "build/app/outputs/bundle/release/app-release.aab"}},
		{"build/**/outputs/**/mapping.txt", []string{"build/app/outputs/mapping/release/mapping.txt"}},
		{"build/ios/ipa/*.ipa", []string{"build/ios/ipa/Runner.ipa"}},
		{"flutter_drive.log", []string{"flutter_drive.log"}},
		{"**/*.apk", []string{"a.apk", "build/app/outputs/flutter-apk/app-release.apk"}},
		{"*.apk", []string{"a.apk"}},
		{".cache/*.apk", []string{".cache/y.apk"}},
		{"build/*.apk", nil},
		{"missing/**/*.apk", nil},
	} {
		if got := files(tt.pattern); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("glob(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
	if m := glob(root, "build/ios"); len(m) != 1 || !m[0].dir {
		t.Errorf("a directory: %+v", m)
	}
}
