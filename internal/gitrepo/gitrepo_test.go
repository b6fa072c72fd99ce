package gitrepo

import "testing"

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:s3cret@example.com/x.git": "https://user:xxxxx@example.com/x.git",
		"https://ghp_token@example.com/x.git":   "https://xxxxx@example.com/x.git",
		"https://example.com/x.git":             "https://example.com/x.git",
		"git@example.com:o/x.git":               "git@example.com:o/x.git",
		"/srv/git/x.git":                        "/srv/git/x.git",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
