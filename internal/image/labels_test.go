package image

import (
	"reflect"
	"testing"
)

func TestToolchainLabels(t *testing.T) {
	got := toolchainLabels(map[string]string{
		"openjdk-17-jdk-headless": "17.0.21.1+2-1~deb12u1",
		"openjdk-17-jre-headless": "17.0.21.1+2-1~deb12u1",
		"nodejs":                  "18.20.4+dfsg-1~deb12u1",
		"python3":                 "3.11.2-1+b1",
		"bash":                    "5.2.15-2+b7",
	})
	want := map[string]string{"io.hangar.java": "17.0.21.1", "io.hangar.node": "18.20.4", "io.hangar.python": "3.11.2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("labels %v, want %v", got, want)
	}
	if got := toolchainLabels(map[string]string{"bash": "5"}); len(got) != 0 {
		t.Errorf("labels of an image without toolchains: %v", got)
	}
	for in, want := range map[string]string{"1:2.3-4": "2.3", "17.0.13+11": "17.0.13", "3.": "3", "abc": ""} {
		if got := upstreamVersion(in); got != want {
			t.Errorf("upstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDebianSpecKey(t *testing.T) {
	a := DebianSpec{Release: "bookworm", Packages: []string{"git", "bash"}}
	b := DebianSpec{Release: "bookworm", Packages: []string{"bash", "git"}}
	c := DebianSpec{Release: "trixie", Packages: []string{"bash", "git"}}
	if a.Key() != b.Key() || a.Key() == c.Key() {
		t.Errorf("keys %s %s %s: want the package order not to matter and the release to", a.Key(), b.Key(), c.Key())
	}
	bad := DebianSpec{Packages: []string{"git; rm -rf /"}}
	if err := bad.setDefaults(); err == nil {
		t.Error("a package name with a shell command was accepted")
	}
}
