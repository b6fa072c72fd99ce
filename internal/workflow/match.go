package workflow

import (
	"slices"
	"strings"
)

// Matches reports whether a webhook event starts w automatically. event is
// "push", "pull_request" or "tag"; ref is the branch name (push) or the tag
// name (tag), without "refs/heads/" or "refs/tags/".
//
// The rules are Codemagic's. A workflow starts only for the events listed
// in triggering.events; without events it never starts automatically. For
// push, the branch must be selected by branch_patterns (the source flag
// plays no part); for tag, the tag must be selected by tag_patterns (branch
// patterns play no part). An empty pattern list selects every name.
// Otherwise the patterns are applied top to bottom and the last one that
// matches the name decides: include adds it, include: false removes it; a
// name that no pattern matches is not selected.
//
// For "pull_request", ref is taken as both the source and the target branch;
// use MatchesPullRequest when both are known.
func (w *Workflow) Matches(event, ref string) bool {
	switch event {
	case EventPush:
		return w.listens(event) && selects(w.Triggering.BranchPatterns, func(Pattern) string { return ref })
	case EventTag:
		return w.listens(event) && selects(w.Triggering.TagPatterns, func(Pattern) string { return ref })
	case EventPullRequest:
		return w.MatchesPullRequest(ref, ref)
	}
	return false
}

// MatchesPullRequest reports whether a pull request from branch source into
// branch target starts w: pull_request must be among its events, and the
// branch patterns must select the pull request, each pattern being matched
// against the source branch (source: true, the default) or the target
// branch (source: false), with the same last-match-wins rule as Matches.
func (w *Workflow) MatchesPullRequest(source, target string) bool {
	return w.listens(EventPullRequest) && selects(w.Triggering.BranchPatterns, func(p Pattern) string {
		if p.Source {
			return source
		}
		return target
	})
}

func (w *Workflow) listens(event string) bool {
	return slices.Contains(w.Triggering.Events, event)
}

// selects applies patterns in order to the name each one looks at.
func selects(patterns []Pattern, name func(Pattern) string) bool {
	if len(patterns) == 0 {
		return true
	}
	in := false
	for _, p := range patterns {
		if Glob(p.Pattern, name(p)) {
			in = p.Include
		}
	}
	return in
}

// Bounds on Glob's work: git refs and real patterns are far below them, and
// they keep a hostile pattern or ref from costing the server more than a
// moment. A name or pattern past them, or a match that needs more steps,
// does not match.
const (
	maxGlobName    = 1024
	maxGlobPattern = 1024
	maxGlobSteps   = 200_000
)

// Glob reports whether name matches pattern as a whole, in the wildcard
// syntax of Codemagic's branch and tag patterns (which follows Python's
// wcmatch fnmatch with extended and brace patterns):
//
//   - any run of characters, '/' included
//     ?          any one character
//     [abc]      one of the characters; ranges such as [a-z]; [!abc] or [^abc] negates
//     {a,b}      either alternative (alternatives may hold wildcards)
//     @(a|b)     exactly one of the alternatives
//     ?(a|b)     zero or one of them
//     *(a|b)     zero or more of them
//     +(a|b)     one or more of them
//     !(a|b)     anything that matches none of them
//     \x         the character x itself
//
// A bracket, brace or parenthesis that is not closed stands for itself.
// Matching is case-sensitive.
func Glob(pattern, name string) bool {
	if len(name) > maxGlobName || len(pattern) > maxGlobPattern {
		return false
	}
	c := &globCompiler{src: []rune(pattern), groups: map[int]globGroup{}}
	seq := c.seq("")
	m := &globMatcher{s: []rune(name), memo: map[globKey]bool{}, steps: maxGlobSteps}
	ok := m.seq(seq, 0, 0, len(m.s))
	return ok && m.steps >= 0
}

type globKind uint8

const (
	gLit   globKind = iota
	gAny            // ?
	gStar           // *
	gClass          // [...]
	gGroup          // {a,b} and the extended groups
)

type globNode struct {
	kind   globKind
	r      rune      // gLit
	ranges [][2]rune // gClass
	negate bool      // gClass
	op     rune      // gGroup: '@', '?', '*', '+' or '!'
	alts   []*globSeq
	id     int // gGroup: identity in the matcher's memo
}

type globSeq struct {
	id    int
	nodes []globNode
}

// globGroup is the outcome of compiling a group that opens at some position:
// ok is false when it is not closed; end is the position after it.
type globGroup struct {
	node globNode
	end  int
	ok   bool
}

type globCompiler struct {
	src    []rune
	pos    int
	ids    int
	groups map[int]globGroup // by opening position, so each is compiled once
}

// seq compiles nodes until the end of the pattern or, at this nesting level,
// one of the runes in stop (which is left unconsumed).
func (c *globCompiler) seq(stop string) *globSeq {
	c.ids++
	s := &globSeq{id: c.ids}
	for c.pos < len(c.src) && !strings.ContainsRune(stop, c.src[c.pos]) {
		s.nodes = append(s.nodes, c.node())
	}
	return s
}

func (c *globCompiler) node() globNode {
	r := c.src[c.pos]
	next := rune(0)
	if c.pos+1 < len(c.src) {
		next = c.src[c.pos+1]
	}
	if strings.ContainsRune("?*+@!", r) && next == '(' {
		if g := c.group(r, '|', ')', 2); g.ok {
			c.pos = g.end
			return g.node
		}
	}
	switch {
	case r == '{':
		if g := c.group('@', ',', '}', 1); g.ok && len(g.node.alts) > 1 {
			c.pos = g.end
			return g.node
		}
	case r == '\\' && next != 0:
		c.pos += 2
		return globNode{kind: gLit, r: next}
	case r == '?':
		c.pos++
		return globNode{kind: gAny}
	case r == '*':
		c.pos++
		for c.pos < len(c.src) && c.src[c.pos] == '*' && (c.pos+1 >= len(c.src) || c.src[c.pos+1] != '(') {
			c.pos++
		}
		return globNode{kind: gStar}
	case r == '[':
		if n, ok := c.class(); ok {
			return n
		}
	}
	c.pos++
	return globNode{kind: gLit, r: r}
}

// group compiles the group opening at c.pos (its opener is skip runes long),
// with alternatives separated by sep and closed by end. c.pos is left
// unchanged.
func (c *globCompiler) group(op, sep, end rune, skip int) globGroup {
	start := c.pos
	g, done := c.groups[start]
	if !done {
		c.pos += skip
		stop := string([]rune{sep, end})
		var alts []*globSeq
		for {
			alts = append(alts, c.seq(stop))
			if c.pos >= len(c.src) {
				break
			}
			r := c.src[c.pos]
			c.pos++
			if r == end {
				c.ids++
				g = globGroup{node: globNode{kind: gGroup, op: op, alts: alts, id: c.ids}, end: c.pos, ok: true}
				break
			}
		}
		c.groups[start] = g
	}
	c.pos = start
	return g
}

// class compiles a bracket expression at c.pos; ok is false when it is not
// closed.
func (c *globCompiler) class() (globNode, bool) {
	i := c.pos + 1
	n := globNode{kind: gClass}
	if i < len(c.src) && (c.src[i] == '!' || c.src[i] == '^') {
		n.negate = true
		i++
	}
	for first := true; i < len(c.src); first = false {
		r := c.src[i]
		if r == ']' && !first {
			c.pos = i + 1
			return n, true
		}
		if r == '\\' && i+1 < len(c.src) {
			i++
			r = c.src[i]
		}
		lo, hi := r, r
		if i+2 < len(c.src) && c.src[i+1] == '-' && c.src[i+2] != ']' {
			hi = c.src[i+2]
			i += 2
		}
		n.ranges = append(n.ranges, [2]rune{lo, hi})
		i++
	}
	return globNode{}, false
}

type globKey struct {
	id, idx, from, to int
}

type globMatcher struct {
	s     []rune
	memo  map[globKey]bool
	steps int // left; below 0 the match is abandoned as no match
}

// seq reports whether the nodes of q from index idx on match s[from:to].
func (m *globMatcher) seq(q *globSeq, idx, from, to int) bool {
	if idx == len(q.nodes) {
		return from == to
	}
	if m.steps--; m.steps < 0 {
		return false
	}
	key := globKey{q.id, idx, from, to}
	if v, ok := m.memo[key]; ok {
		return v
	}
	ok := false
	switch n := &q.nodes[idx]; n.kind {
	case gLit:
		ok = from < to && m.s[from] == n.r && m.seq(q, idx+1, from+1, to)
	case gAny:
		ok = from < to && m.seq(q, idx+1, from+1, to)
	case gClass:
		ok = from < to && n.inClass(m.s[from]) && m.seq(q, idx+1, from+1, to)
	case gStar:
		for end := from; end <= to && !ok && m.steps >= 0; end++ {
			ok = m.seq(q, idx+1, end, to)
		}
	case gGroup:
		for end := from; end <= to && !ok && m.steps >= 0; end++ {
			m.steps--
			ok = m.group(n, from, end) && m.seq(q, idx+1, end, to)
		}
	}
	m.memo[key] = ok
	return ok
}

// group reports whether group n matches s[from:to] as a whole.
func (m *globMatcher) group(n *globNode, from, to int) bool {
	switch n.op {
	case '@':
		return m.alt(n, from, to)
	case '?':
		return from == to || m.alt(n, from, to)
	case '!':
		return !m.alt(n, from, to)
	case '*':
		return from == to || m.repeat(n, from, to)
	}
	return m.repeat(n, from, to) // '+'
}

// alt reports whether one alternative of n matches s[from:to].
func (m *globMatcher) alt(n *globNode, from, to int) bool {
	for _, a := range n.alts {
		if m.seq(a, 0, from, to) {
			return true
		}
	}
	return false
}

// repeat reports whether s[from:to] is one or more non-empty matches of the
// alternatives of n in a row.
func (m *globMatcher) repeat(n *globNode, from, to int) bool {
	if from == to {
		return m.alt(n, from, to)
	}
	key := globKey{-n.id, 0, from, to}
	if v, ok := m.memo[key]; ok {
		return v
	}
	ok := false
	for mid := from + 1; mid <= to && !ok && m.steps >= 0; mid++ {
		m.steps--
		ok = m.alt(n, from, mid) && (mid == to || m.repeat(n, mid, to))
	}
	m.memo[key] = ok
	return ok
}

func (n *globNode) inClass(r rune) bool {
	in := false
	for _, rg := range n.ranges {
		if rg[0] <= r && r <= rg[1] {
			in = true
			break
		}
	}
	return in != n.negate
}
