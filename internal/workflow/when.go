package workflow

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// When is a workflow's or a step's when: it runs only if its changeset
// has changes and its condition is true (both, when both are given).
type When struct {
	// Condition is when.condition; nil when there is none.
	Condition *Condition
	// Changeset is when.changeset; nil when there is none.
	Changeset *Changeset
}

// Changeset is when.changeset: the files whose changes since the last
// successful build of the same workflow and branch make the workflow (or
// step) run.
type Changeset struct {
	// Includes are the watched paths; "." (everything) when the file
	// gives none.
	Includes []string
	// Excludes are paths whose changes do not count.
	Excludes []string
}

// Selects reports whether the changed files (paths relative to the
// repository's root) include a change the changeset watches: a path that
// matches an include and no exclude. A change to the workflow file itself
// always counts, as on Codemagic.
func (c *Changeset) Selects(changed []string) bool {
	for _, f := range changed {
		if slices.Contains(FileNames, f) {
			return true
		}
		if slices.ContainsFunc(c.Includes, func(p string) bool { return PathMatch(p, f) }) &&
			!slices.ContainsFunc(c.Excludes, func(p string) bool { return PathMatch(p, f) }) {
			return true
		}
	}
	return false
}

// Describe writes the changeset for messages, e.g. "includes android/,
// excludes **/*.md".
func (c *Changeset) Describe() string {
	s := "includes " + strings.Join(c.Includes, ", ")
	if len(c.Excludes) > 0 {
		s += "; excludes " + strings.Join(c.Excludes, ", ")
	}
	return s
}

// PathMatch reports whether file (a slash-separated path relative to the
// repository's root) is selected by pattern, a changeset path: "." is
// every file; a pattern selects the files it matches and every file under
// a directory it matches ("android" and "android/" select android/app/x);
// in a pattern, * and ? and [a-z] match within one path segment and **
// any number of segments ("**/*.md" matches README.md and docs/a/b.md).
func PathMatch(pattern, file string) bool {
	pattern = strings.TrimPrefix(strings.TrimSpace(pattern), "./")
	pattern = strings.TrimSuffix(pattern, "/")
	if pattern == "" || pattern == "." || pattern == "**" {
		return true
	}
	if len(pattern) > maxGlobPattern || len(file) > 4096 {
		return false
	}
	ps, fs := strings.Split(pattern, "/"), strings.Split(file, "/")
	// A match of a leading part of the file's path is a directory that
	// the pattern selects.
	for n := 1; n <= len(fs); n++ {
		if segMatch(ps, fs[:n], 0) {
			return true
		}
	}
	return false
}

// segMatch matches path segments against pattern segments; steps bounds
// the work of ** backtracking.
func segMatch(ps, fs []string, depth int) bool {
	if depth > 32 {
		return false
	}
	for len(ps) > 0 {
		if ps[0] == "**" {
			for i := 0; i <= len(fs); i++ {
				if segMatch(ps[1:], fs[i:], depth+1) {
					return true
				}
			}
			return false
		}
		if len(fs) == 0 {
			return false
		}
		if ok, err := path.Match(ps[0], fs[0]); err != nil || !ok {
			return false
		}
		ps, fs = ps[1:], fs[1:]
	}
	return len(fs) == 0
}

// validPathPattern reports a changeset pattern path.Match cannot read.
func validPathPattern(p string) error {
	for _, seg := range strings.Split(p, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("%q is not a valid path pattern (%v)", p, err)
		}
	}
	return nil
}
