package builder

import (
	"io/fs"
	"path"
	"path/filepath"
	"strings"
)

// A glob is an artifacts pattern relative to the clone, read as
// Codemagic reads them (Python's glob with recursive=True): '/'
// separates components; "**" alone in a component matches any number of
// directories (none included); in other components '*', '?' and [...]
// match within one name, {a,b} picks alternatives; names starting with
// '.' are matched only by a pattern component that starts with '.'.

// expandBraces expands the first {a,b,...} of p, recursively.
func expandBraces(p string) []string {
	open := strings.IndexByte(p, '{')
	if open < 0 {
		return []string{p}
	}
	closing := strings.IndexByte(p[open:], '}')
	if closing < 0 {
		return []string{p}
	}
	closing += open
	var out []string
	for _, alt := range strings.Split(p[open+1:closing], ",") {
		out = append(out, expandBraces(p[:open]+alt+p[closing+1:])...)
	}
	return out
}

func hasMeta(s string) bool { return strings.ContainsAny(s, "*?[") }

// matchParts reports whether the path components name match the pattern
// components pat.
func matchParts(pat, name []string) bool {
	if len(pat) == 0 {
		return len(name) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if i > 0 && strings.HasPrefix(name[i-1], ".") {
				return false // ** does not enter hidden directories
			}
			if matchParts(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	if strings.HasPrefix(name[0], ".") && !strings.HasPrefix(pat[0], ".") {
		return false
	}
	ok, err := path.Match(pat[0], name[0])
	return err == nil && ok && matchParts(pat[1:], name[1:])
}

// splitPattern returns a clean pattern's components.
func splitPattern(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// globMatch is one entry a pattern matched, relative to the root.
type globMatch struct {
	rel string
	dir bool
}

// glob returns what pattern (relative to root, clean, inside it) matches
// under root, in walk order. Symbolic links are reported as what they
// are (not followed).
func glob(root, pattern string) []globMatch {
	var out []globMatch
	seen := map[string]bool{}
	for _, p := range expandBraces(pattern) {
		pat := splitPattern(p)
		if len(pat) == 0 {
			continue
		}
		// Walk from the longest prefix without wildcards.
		n := 0
		for n < len(pat) && !hasMeta(pat[n]) && pat[n] != "**" {
			n++
		}
		start := filepath.Join(root, filepath.FromSlash(strings.Join(pat[:n], "/")))
		_ = filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			rel, rerr := filepath.Rel(root, p)
			if rerr != nil || rel == "." {
				return nil
			}
			rel = filepath.ToSlash(rel)
			parts := strings.Split(rel, "/")
			if matchParts(pat, parts) && !seen[rel] {
				seen[rel] = true
				out = append(out, globMatch{rel: rel, dir: d.IsDir()})
			}
			if d.IsDir() && !couldMatchBelow(pat, parts) {
				return filepath.SkipDir
			}
			return nil
		})
	}
	return out
}

// couldMatchBelow reports whether something under the directory dir
// (components) may match pat.
func couldMatchBelow(pat, dir []string) bool {
	if len(pat) == 0 {
		return false
	}
	if pat[0] == "**" {
		return true
	}
	if len(dir) == 0 {
		return true
	}
	if strings.HasPrefix(dir[0], ".") && !strings.HasPrefix(pat[0], ".") {
		return false
	}
	ok, err := path.Match(pat[0], dir[0])
	return err == nil && ok && couldMatchBelow(pat[1:], dir[1:])
}
