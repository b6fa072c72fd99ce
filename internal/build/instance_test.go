package build

import (
	"strings"
	"testing"
)

func TestParseInstanceTypes(t *testing.T) {
	types, err := ParseInstanceTypes([]byte(`
small:
  cpus: 0.5
  memory: 256MiB
  pids: 128
  disk: 64 MiB
big:
  cpus: 8
  memory: 17179869184
  pids: 0
  disk: 1TiB
`))
	if err != nil {
		t.Fatal(err)
	}
	want := InstanceTypes{
		"small": {CPUs: 0.5, Memory: 256 << 20, Pids: 128, Disk: 64 << 20},
		"big":   {CPUs: 8, Memory: 16 << 30, Disk: 1 << 40},
	}
	if len(types) != len(want) || types["small"] != want["small"] || types["big"] != want["big"] {
		t.Errorf("got %+v, want %+v", types, want)
	}
	for _, bad := range []string{
		``,
		`linux: {cpus: 2, memory: 4GiB, pids: 2048}`,                       // no disk
		`linux: {cpus: 2, memory: 4GB, pids: 2048, disk: 8GiB}`,            // GB
		`linux: {cpus: 2, memory: 4GiB, pids: 2048, disk: 8GiB, gpu: 1}`,   // unknown field
		`linux: {cpus: -1, memory: 4GiB, pids: 2048, disk: 8GiB}`,          // negative
		`linux: {cpus: 2, memory: 1MiB, pids: 2048, disk: 8GiB}`,           // too small
		`linux: {cpus: 2, memory: 4GiB, pids: 3, disk: 8GiB}`,              // too few pids
		`"bad name": {cpus: 2, memory: 4GiB, pids: 2048, disk: 8GiB}`,      // name
		`linux: {cpus: 2, memory: 99999999999TiB, pids: 2048, disk: 8GiB}`, // overflow
	} {
		if _, err := ParseInstanceTypes([]byte(bad)); err == nil {
			t.Errorf("ParseInstanceTypes(%q) accepted", bad)
		}
	}
}

func TestLookup(t *testing.T) {
	types := DefaultInstanceTypes()
	if r, err := types.Lookup(""); err != nil || r != types["linux"] {
		t.Errorf(`Lookup("") = %+v, %v; want linux`, r, err)
	}
	if r, err := types.Lookup("linux_x2"); err != nil || r.CPUs != 4 || r.Memory != 8<<30 {
		t.Errorf("Lookup(linux_x2) = %+v, %v", r, err)
	}
	_, err := types.Lookup("mac_mini_m2")
	if err == nil || err.Error() != `instance_type "mac_mini_m2" is not available on this server; available instance types: linux, linux_x2` {
		t.Errorf("Lookup(mac_mini_m2) error %v", err)
	}
}

func TestResourcesString(t *testing.T) {
	got := DefaultInstanceTypes()["linux"].String()
	if got != "2 vCPU, 4 GiB memory, 2048 processes, 8 GiB disk and /tmp each" {
		t.Errorf("got %q", got)
	}
	if got := (Resources{Memory: 1536 << 20}).String(); !strings.Contains(got, "1536 MiB memory") {
		t.Errorf("got %q", got)
	}
	if got := (Resources{}).String(); got != "no limits" {
		t.Errorf("got %q", got)
	}
}

func TestInstanceImages(t *testing.T) {
	data := []byte("linux:\n  cpus: 2\n  memory: 4GiB\n  pids: 2048\n  disk: 8GiB\nandroid:\n  cpus: 4\n  memory: 8GiB\n  pids: 2048\n  disk: 16GiB\n  image: registry.example.com/ci/android:34\n")
	types, err := ParseInstanceTypes(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(types) != 2 {
		t.Errorf("types %v", types)
	}
	images, err := InstanceImages(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 || images["android"] != "registry.example.com/ci/android:34" {
		t.Errorf("images %v, want android's only", images)
	}
}
