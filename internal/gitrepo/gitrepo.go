// Package gitrepo keeps a bare mirror of each app's repository on the
// server, from which commits are resolved, workflow files read and builders
// clone.
package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Mirrors manages mirrors under Dir.
type Mirrors struct {
	Dir string

	mu    sync.Mutex
	locks map[string]*sync.Mutex // guarded by mu; one per mirror
}

func (m *Mirrors) lock(name string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks == nil {
		m.locks = make(map[string]*sync.Mutex)
	}
	l := m.locks[name]
	if l == nil {
		l = new(sync.Mutex)
		m.locks[name] = l
	}
	return l
}

// Path is where the mirror of app name lives.
func (m *Mirrors) Path(name string) string { return filepath.Join(m.Dir, name+".git") }

// Fetch brings the mirror of app name up to date with url, creating it on
// first use, and returns its path. The mirror's config holds url without
// its credentials (StripCredentials): machines mount the mirror.
func (m *Mirrors) Fetch(ctx context.Context, name, url string) (string, error) {
	l := m.lock(name)
	l.Lock()
	defer l.Unlock()
	path := m.Path(name)
	if _, err := os.Stat(filepath.Join(path, "HEAD")); err != nil {
		tmp := path + ".new"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(m.Dir, 0o755); err != nil {
			return "", err
		}
		if _, err := git(ctx, "", "clone", "--quiet", "--mirror", "--", url, tmp); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("cannot clone %s: %w", Redact(url), err)
		}
		// Machines see the mirror: its config must not keep credentials.
		if _, err := git(ctx, tmp, "remote", "set-url", "origin", StripCredentials(url)); err != nil {
			os.RemoveAll(tmp)
			return "", err
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", err
		}
		return path, nil
	}
	// The URL with its credentials is given to this fetch only; the config
	// keeps it without (and mirrors of earlier versions lose them here).
	if _, err := git(ctx, path, "remote", "set-url", "origin", StripCredentials(url)); err != nil {
		return "", err
	}
	if _, err := git(ctx, path, "fetch", "--quiet", "--prune", "--", url, "+refs/*:refs/*"); err != nil {
		return "", fmt.Errorf("cannot fetch %s: %w", Redact(url), err)
	}
	return path, nil
}

// Remove deletes the mirror of app name.
func (m *Mirrors) Remove(name string) error {
	l := m.lock(name)
	l.Lock()
	defer l.Unlock()
	return os.RemoveAll(m.Path(name))
}

// Redact hides the password or token of a repository URL
// ("https://user:secret@host/x" -> "https://user:xxxxx@host/x"), for logs
// and messages.
func Redact(repo string) string {
	u, err := url.Parse(repo)
	if err != nil || u.User == nil {
		return repo
	}
	if _, ok := u.User.Password(); !ok && !strings.Contains(repo, "://") {
		return repo
	}
	if _, ok := u.User.Password(); !ok {
		// A token given as the user name alone (https://TOKEN@host/x).
		u.User = url.User("xxxxx")
		return u.String()
	}
	return u.Redacted()
}

// StripCredentials removes the credentials from a repository URL, for the
// origin of a build's checkout: the machine must not hold them (fetching
// is the server's job). An http(s) or ftp(s) URL loses its whole user info
// ("https://bot:TOKEN@host/x" and "https://TOKEN@host/x" become
// "https://host/x"); an ssh URL keeps its user name (an account such as
// git, not a secret) and loses a password; paths and scp-like addresses
// ("git@host:o/x.git") carry no credentials and are kept.
func StripCredentials(repo string) string {
	if !strings.Contains(repo, "://") {
		return repo
	}
	u, err := url.Parse(repo)
	if err != nil {
		// Unparsable: keep nothing between the scheme and the host.
		scheme, rest, _ := strings.Cut(repo, "://")
		if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
			rest = rest[at+1:]
		}
		return scheme + "://" + rest
	}
	if u.User == nil {
		return repo
	}
	switch strings.ToLower(u.Scheme) {
	case "ssh", "git+ssh", "ssh+git":
		u.User = url.User(u.User.Username())
	default:
		u.User = nil
	}
	return u.String()
}

// ErrNoBranch is returned by Resolve for a branch the repository lacks.
var ErrNoBranch = errors.New("no such branch")

// Resolve returns the commit at the tip of branch.
func Resolve(ctx context.Context, mirror, branch string) (string, error) {
	if branch == "" || strings.HasPrefix(branch, "-") {
		return "", ErrNoBranch
	}
	// Only a real branch name, not a revision expression like main^ or @{1}.
	if _, err := git(ctx, mirror, "check-ref-format", "--branch", branch); err != nil || strings.Contains(branch, "@{") {
		return "", ErrNoBranch
	}
	out, err := git(ctx, mirror, "rev-parse", "--verify", "--quiet", "refs/heads/"+branch+"^{commit}")
	if err != nil {
		return "", ErrNoBranch
	}
	return strings.TrimSpace(out), nil
}

// DefaultBranch returns the branch the mirror's HEAD names.
func DefaultBranch(ctx context.Context, mirror string) (string, error) {
	out, err := git(ctx, mirror, "symbolic-ref", "--quiet", "--short", "HEAD")
	if err != nil {
		return "", errors.New("the repository has no default branch")
	}
	return strings.TrimSpace(out), nil
}

// Branches returns the mirror's branches, most recently committed to
// first, at most max of them (max <= 0: all).
func Branches(ctx context.Context, mirror string, max int) ([]string, error) {
	args := []string{"for-each-ref", "--sort=-committerdate", "--format=%(refname)"}
	if max > 0 {
		args = append(args, "--count="+strconv.Itoa(max))
	}
	out, err := git(ctx, mirror, append(args, "refs/heads/")...)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ref := range strings.Fields(out) {
		names = append(names, strings.TrimPrefix(ref, "refs/heads/"))
	}
	return names, nil
}

// ReadFile returns the first of names that exists at commit, with its name.
func ReadFile(ctx context.Context, mirror, commit string, names []string) (string, []byte, error) {
	for _, n := range names {
		out, err := git(ctx, mirror, "cat-file", "blob", commit+":"+n)
		if err == nil {
			return n, []byte(out), nil
		}
	}
	return "", nil, fmt.Errorf("no %s at the root of the repository at commit %.10s", strings.Join(names, " or "), commit)
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			msg = err.Error()
		}
		return "", errors.New(strings.TrimPrefix(msg, "fatal: "))
	}
	return stdout.String(), nil
}

// ResolveCommit returns the commit that rev (a commit or tag object id, or
// a ref) names in the mirror.
func ResolveCommit(ctx context.Context, mirror, rev string) (string, error) {
	if rev == "" || strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("no commit %q in the repository", rev)
	}
	out, err := git(ctx, mirror, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("no commit %.12s in the repository", rev)
	}
	return strings.TrimSpace(out), nil
}

// ChangedFiles returns the paths (relative to the repository's root) that
// differ between commits from and to: added, changed and removed files,
// both sides of a rename.
func ChangedFiles(ctx context.Context, mirror, from, to string) ([]string, error) {
	for _, c := range []string{from, to} {
		if c == "" || strings.HasPrefix(c, "-") {
			return nil, fmt.Errorf("no commit %q in the repository", c)
		}
	}
	out, err := git(ctx, mirror, "diff", "--name-only", "--no-renames", "-z", "--end-of-options", from, to, "--")
	if err != nil {
		return nil, fmt.Errorf("compare %.10s with %.10s: %w", from, to, err)
	}
	var files []string
	for _, f := range strings.Split(out, "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files, nil
}

// CommitMessage returns the message of commit.
func CommitMessage(ctx context.Context, mirror, commit string) (string, error) {
	if commit == "" || strings.HasPrefix(commit, "-") {
		return "", fmt.Errorf("no commit %q in the repository", commit)
	}
	return git(ctx, mirror, "log", "-1", "--format=%B", "--end-of-options", commit, "--")
}

// Identity is what names the same repository whichever way it is written:
// host and path, lower case, without credentials, port, scheme or a
// trailing ".git" ("git@Host:o/r.git" and "https://bot:T@host/o/r" are
// both "host/o/r"); a local path is its cleaned absolute form.
func Identity(repo string) string {
	repo = strings.TrimSpace(repo)
	var host, path string
	switch {
	case strings.Contains(repo, "://"):
		u, err := url.Parse(repo)
		if err != nil {
			return strings.ToLower(repo)
		}
		if u.Scheme == "file" {
			return filepath.Clean(u.Path)
		}
		host, path = u.Hostname(), u.Path
	case strings.HasPrefix(repo, "/") || strings.HasPrefix(repo, "."):
		abs, err := filepath.Abs(repo)
		if err != nil {
			return repo
		}
		return strings.TrimSuffix(filepath.Clean(abs), "/.git")
	default:
		// scp-like: [user@]host:path
		h, p, ok := strings.Cut(repo, ":")
		if !ok {
			return strings.ToLower(repo)
		}
		if at := strings.LastIndex(h, "@"); at >= 0 {
			h = h[at+1:]
		}
		host, path = h, p
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	return strings.ToLower(host + "/" + path)
}
