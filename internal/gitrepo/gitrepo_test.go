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

func TestStripCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"https://bot:s3cret@example.com/x.git": "https://example.com/x.git",
		"https://ghp_token@example.com/x.git":  "https://example.com/x.git",
		"http://u:p@127.0.0.1:8080/r.git":      "http://127.0.0.1:8080/r.git",
		"HTTPS://u:p@example.com/x.git":        "https://example.com/x.git",
		"https://example.com/x.git":            "https://example.com/x.git",
		"ssh://git:pw@example.com/o/x.git":     "ssh://git@example.com/o/x.git",
		"ssh://git@example.com/o/x.git":        "ssh://git@example.com/o/x.git",
		"git@example.com:o/x.git":              "git@example.com:o/x.git",
		"/srv/git/x.git":                       "/srv/git/x.git",
		"https://u:p%zz@example.com/x.git":     "https://example.com/x.git",
	} {
		if got := StripCredentials(in); got != want {
			t.Errorf("StripCredentials(%q) = %q, want %q", in, got, want)
		}
	}
}
