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

func TestIdentity(t *testing.T) {
	same := [][]string{
		{"https://github.com/o/r.git", "git@github.com:o/r.git", "ssh://git@github.com:22/o/r", "https://bot:TOKEN@GitHub.com/o/r/", "git@github.com:O/R"},
		{"/srv/git/r.git", "/srv/git/r.git/", "file:///srv/git/r.git"},
	}
	for _, group := range same {
		for _, u := range group[1:] {
			if Identity(u) != Identity(group[0]) {
				t.Errorf("Identity(%q) = %q, Identity(%q) = %q; want the same", u, Identity(u), group[0], Identity(group[0]))
			}
		}
	}
	if Identity("https://github.com/o/r") == Identity("https://github.com/o/r2") || Identity("https://gitlab.com/o/r") == Identity("https://github.com/o/r") {
		t.Error("different repositories have the same identity")
	}
}
