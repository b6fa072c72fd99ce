package build

import "testing"

func TestAlias(t *testing.T) {
	for _, id := range []int64{1, 12, 9223372036854775807} {
		a := Alias(id)
		got, err := ParseAlias(a)
		if err != nil || got != id {
			t.Errorf("ParseAlias(Alias(%d) = %q) = %d, %v", id, a, got, err)
		}
	}
	if a := Alias(12); a != "build-12" {
		t.Errorf("Alias(12) = %q", a)
	}
	if id, err := ParseAlias("build-012"); err != nil || id != 12 {
		t.Errorf("ParseAlias(build-012) = %d, %v", id, err)
	}
	for _, s := range []string{"", "12", "build-", "build-0", "build--1", "build-+1", "build-1x", "build-1 ", " build-1",
		"Build-1", "build-9223372036854775808", "build-12.0", "build-١٢"} {
		if id, err := ParseAlias(s); err == nil {
			t.Errorf("ParseAlias(%q) = %d, want an error", s, id)
		}
	}
}
