package gitrepo

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFetchOverHTTPKeepsNoCredentials: a mirror fetched from a URL with
// credentials (smart HTTP with basic auth, the real git-http-backend) is
// up to date and holds the credentials nowhere: machines mount it.
func TestFetchOverHTTPKeepsNoCredentials(t *testing.T) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skip("git is not installed")
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	const token = "ghp_FETCHTOKEN42"
	root := t.TempDir()
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run(root, "init", "--quiet", "--bare", "--initial-branch", "main", "repo.git")
	work := filepath.Join(root, "work")
	run(root, "clone", "--quiet", "repo.git", work)
	commit := func() string {
		run(work, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "--allow-empty", "-m", "c")
		run(work, "push", "--quiet", "origin", "HEAD:main")
		return run(work, "rev-parse", "HEAD")
	}
	first := commit()
	git := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		git.ServeHTTP(w, r)
	}))
	defer srv.Close()
	url := strings.Replace(srv.URL, "http://", "http://bot:"+token+"@", 1) + "/repo.git"

	m := &Mirrors{Dir: filepath.Join(t.TempDir(), "repos")}
	ctx := context.Background()
	for i, want := range []string{first, ""} {
		if i == 1 {
			want = commit() // the second fetch updates the mirror
		}
		path, err := m.Fetch(ctx, "demo", url)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if got, err := Resolve(ctx, path, "main"); err != nil || got != want {
			t.Fatalf("fetch %d: main at %s, %v; want %s", i, got, err, want)
		}
		_ = filepath.WalkDir(path, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if b, _ := os.ReadFile(p); strings.Contains(string(b), token) {
					t.Errorf("fetch %d: the mirror holds the token in %s", i, p)
				}
			}
			return nil
		})
	}
}
