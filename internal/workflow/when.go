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
	pattern = strings.TrimPrefix(pattern, "./")
	pattern = strings.TrimSuffix(pattern, "/")
	if pattern == "" || pattern == "." || pattern == "**" {
		return true
	}
	if len(pattern) > maxGlobPattern || len(file) > 4096 {
		return false
	}
	// A pattern also selects what lies under the directories it matches.
	ps, fs := append(strings.Split(pattern, "/"), "**"), strings.Split(file, "/")
	return segMatch(ps, fs)
}

// segMatch matches path segments against pattern segments, ** matching any
// number of segments, in time proportional to their product (memoized).
func segMatch(ps, fs []string) bool {
	memo := make([]int8, (len(ps)+1)*(len(fs)+1)) // 0 unknown, 1 match, 2 no match
	var match func(i, j int) bool
	match = func(i, j int) bool {
		k := i*(len(fs)+1) + j
		if memo[k] != 0 {
			return memo[k] == 1
		}
		var ok bool
		switch {
		case i == len(ps):
			ok = j == len(fs)
		case ps[i] == "**":
			ok = match(i+1, j) || j < len(fs) && match(i, j+1)
		case j < len(fs):
			m, err := path.Match(ps[i], fs[j])
			ok = err == nil && m && match(i+1, j+1)
		}
		memo[k] = 2
		if ok {
			memo[k] = 1
		}
		return ok
	}
	return match(0, 0)
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
