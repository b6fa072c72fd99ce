package main

import "testing"

func TestParseID(t *testing.T) {
	for s, want := range map[string]int64{"12": 12, "build-12": 12, "1": 1, "build-007": 7} {
		if id, err := parseID(s); err != nil || id != want {
			t.Errorf("parseID(%q) = %d, %v, want %d", s, id, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1", "build-0", "build-", "b-12", "12x", "build-12x"} {
		if id, err := parseID(s); err == nil {
			t.Errorf("parseID(%q) = %d, want an error", s, id)
		}
	}
}
