package workflow

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Condition is a parsed when.condition: Codemagic's expression language,
// the documented subset. It is evaluated against three contexts:
//
//   - env: the build's environment variables (env.NAME, a string, or null
//     when unset);
//   - event: the payload of the webhook that started the build (null for a
//     build started by hand), e.g. event.pull_request.draft;
//   - inputs: the build's inputs (inputs.ID, typed: string, number or
//     boolean).
//
// The operators are ==, !=, not, and, or and parentheses; literals are
// "strings" (or 'strings'), numbers, true, false and null. A value alone
// is true unless it is false, null, 0 or the empty string (as in Python,
// which Codemagic's conditions follow; a non-empty string such as "false"
// is true). ${{ expr }} is the same as (expr), and ${{ inputs.ID }} inside a
// string literal is replaced by the input's value, so the forms that
// Codemagic's documentation shows, such as `${{ inputs.runTests }}` and
// `env.FLAVOR == "${{ inputs.flavor }}"`, both work.
type Condition struct {
	src  string
	root node
}

// String returns the condition as written.
func (c *Condition) String() string { return c.src }

// Context is what a condition is evaluated against.
type Context struct {
	// Env looks up an environment variable.
	Env func(name string) (string, bool)
	// Event is the webhook's payload decoded from JSON (maps, lists,
	// strings, float64, bool, nil); nil for a build started by hand.
	Event any
	// Inputs are the build's input values (string, float64 or bool).
	Inputs map[string]any
}

// maxCondition bounds a condition's length and nesting, so that a hostile
// file cannot make parsing costly.
const (
	maxCondition      = 4096
	maxConditionDepth = 64
)

// ParseCondition parses a condition. Its errors say what is wrong and
// what the language supports.
func ParseCondition(src string) (*Condition, error) {
	if len(src) > maxCondition {
		return nil, fmt.Errorf("condition is longer than %d characters", maxCondition)
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &condParser{toks: toks}
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, fmt.Errorf("unexpected %s at column %d in condition; expected and, or, ==, != or the end", t, t.pos+1)
	}
	return &Condition{src: src, root: n}, nil
}

// Eval evaluates the condition to true or false.
func (c *Condition) Eval(ctx Context) bool {
	return truthy(c.root.eval(&ctx))
}

// Inputs returns the ids of the inputs the condition refers to.
func (c *Condition) Inputs() []string {
	var ids []string
	walk(c.root, func(n node) {
		switch n := n.(type) {
		case *pathNode:
			if n.path[0] == "inputs" && len(n.path) > 1 {
				ids = append(ids, n.path[1])
			}
		case *strNode:
			ids = append(ids, n.inputs...)
		}
	})
	return ids
}

// EventPaths returns the event.x.y paths the condition reads, without
// "event", e.g. ["pull_request", "draft"].
func (c *Condition) EventPaths() [][]string {
	var paths [][]string
	walk(c.root, func(n node) {
		if p, ok := n.(*pathNode); ok && p.path[0] == "event" {
			paths = append(paths, p.path[1:])
		}
	})
	return paths
}

// --- lexer ---

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tOp    // == != ( ) .
	tOpen  // ${{
	tClose // }}
)

type token struct {
	kind tokKind
	text string // the identifier, operator, number or the string's value
	pos  int    // byte offset in the source
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of condition"
	case tString:
		return strconv.Quote(t.text)
	}
	return "'" + t.text + "'"
}

var unsupportedOps = []string{"<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "[", "]", "|", "&", "=", "~", ","}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "${{"):
			toks = append(toks, token{tOpen, "${{", i})
			i += 3
		case strings.HasPrefix(src[i:], "}}"):
			toks = append(toks, token{tClose, "}}", i})
			i += 2
		case strings.HasPrefix(src[i:], "==") || strings.HasPrefix(src[i:], "!="):
			toks = append(toks, token{tOp, src[i : i+2], i})
			i += 2
		case c == '(' || c == ')' || c == '.':
			toks = append(toks, token{tOp, string(c), i})
			i++
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			for j < len(src) && src[j] != c {
				if src[j] == '\\' && j+1 < len(src) {
					j++
				}
				b.WriteByte(src[j])
				j++
			}
			if j >= len(src) {
				return nil, fmt.Errorf("string starting at column %d of the condition is not closed; end it with %c", i+1, c)
			}
			toks = append(toks, token{tString, b.String(), i})
			i = j + 1
		case c >= '0' && c <= '9':
			digits := func(j int) int {
				for j < len(src) && src[j] >= '0' && src[j] <= '9' {
					j++
				}
				return j
			}
			j := digits(i)
			if j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
				j = digits(j + 1)
			}
			if j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
				j = digits(j + 1)
				return nil, fmt.Errorf("%q at column %d of the condition is not a number", src[i:j], i+1)
			}
			if _, err := strconv.ParseFloat(src[i:j], 64); err != nil {
				return nil, fmt.Errorf("%q at column %d of the condition is not a number", src[i:j], i+1)
			}
			toks = append(toks, token{tNumber, src[i:j], i})
			i = j
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(src) && (src[j] == '_' || src[j] == '-' || src[j] >= 'a' && src[j] <= 'z' || src[j] >= 'A' && src[j] <= 'Z' || src[j] >= '0' && src[j] <= '9') {
				j++
			}
			toks = append(toks, token{tIdent, src[i:j], i})
			i = j
		default:
			for _, op := range unsupportedOps {
				if strings.HasPrefix(src[i:], op) {
					return nil, fmt.Errorf("operator %s (column %d) is not supported in conditions; Hangar supports ==, !=, not, and, or and parentheses", op, i+1)
				}
			}
			return nil, fmt.Errorf("unexpected character %q at column %d of the condition", c, i+1)
		}
	}
	return append(toks, token{kind: tEOF, pos: len(src)}), nil
}

// --- parser ---

type condParser struct {
	toks []token
	i    int
}

func (p *condParser) peek() token { return p.toks[p.i] }
func (p *condParser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *condParser) isWord(w string) bool {
	t := p.peek()
	return t.kind == tIdent && t.text == w
}

func (p *condParser) deep(depth int) error {
	if depth > maxConditionDepth {
		return fmt.Errorf("condition is nested more than %d levels deep", maxConditionDepth)
	}
	return nil
}

func (p *condParser) or(depth int) (node, error) {
	if err := p.deep(depth); err != nil {
		return nil, err
	}
	left, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.isWord("or") {
		p.next()
		right, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		left = &boolNode{op: "or", l: left, r: right}
	}
	return left, nil
}

func (p *condParser) and(depth int) (node, error) {
	left, err := p.not(depth)
	if err != nil {
		return nil, err
	}
	for p.isWord("and") {
		p.next()
		right, err := p.not(depth)
		if err != nil {
			return nil, err
		}
		left = &boolNode{op: "and", l: left, r: right}
	}
	return left, nil
}

func (p *condParser) not(depth int) (node, error) {
	if p.isWord("not") {
		p.next()
		if err := p.deep(depth + 1); err != nil {
			return nil, err
		}
		n, err := p.not(depth + 1)
		if err != nil {
			return nil, err
		}
		return &notNode{n}, nil
	}
	return p.cmp(depth)
}

func (p *condParser) cmp(depth int) (node, error) {
	left, err := p.operand(depth)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind == tOp && (t.text == "==" || t.text == "!=") {
		p.next()
		right, err := p.operand(depth)
		if err != nil {
			return nil, err
		}
		return &cmpNode{neq: t.text == "!=", l: left, r: right}, nil
	}
	if p.isWord("in") || p.isWord("is") {
		return nil, fmt.Errorf("operator %q (column %d) is not supported in conditions; Hangar supports ==, !=, not, and, or and parentheses", p.peek().text, p.peek().pos+1)
	}
	return left, nil
}

func (p *condParser) operand(depth int) (node, error) {
	t := p.next()
	switch t.kind {
	case tString:
		return newStrNode(t)
	case tNumber:
		f, _ := strconv.ParseFloat(t.text, 64)
		return &litNode{f}, nil
	case tOpen, tOp:
		closer := "}}"
		if t.kind == tOp {
			if t.text != "(" {
				break
			}
			closer = ")"
		}
		if err := p.deep(depth + 1); err != nil {
			return nil, err
		}
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.text != closer || c.kind == tString {
			return nil, fmt.Errorf("expected %s at column %d of the condition, found %s", closer, c.pos+1, c)
		}
		return n, nil
	case tIdent:
		switch t.text {
		case "true", "True":
			return &litNode{true}, nil
		case "false", "False":
			return &litNode{false}, nil
		case "null", "None":
			return &litNode{nil}, nil
		case "env", "event", "inputs":
			path := []string{t.text}
			for p.peek().kind == tOp && p.peek().text == "." {
				p.next()
				f := p.next()
				if f.kind != tIdent && f.kind != tNumber {
					return nil, fmt.Errorf("expected a name after '.' at column %d of the condition, found %s", f.pos+1, f)
				}
				path = append(path, f.text)
			}
			if t.text != "event" && len(path) != 2 {
				return nil, fmt.Errorf("%s at column %d of the condition: write %s.NAME", strings.Join(path, "."), t.pos+1, t.text)
			}
			return &pathNode{path}, nil
		case "and", "or", "not":
			return nil, fmt.Errorf("expected a value before %q at column %d of the condition", t.text, t.pos+1)
		}
		return nil, fmt.Errorf("unknown name %q at column %d of the condition; values come from env.NAME, event.FIELD, inputs.ID or are literals (\"text\", numbers, true, false, null)", t.text, t.pos+1)
	}
	if t.kind == tEOF {
		return nil, fmt.Errorf("condition ends where a value is expected")
	}
	return nil, fmt.Errorf("unexpected %s at column %d of the condition; expected a value", t, t.pos+1)
}

// --- evaluation ---

type node interface {
	eval(*Context) any
}

type litNode struct{ v any }

func (n *litNode) eval(*Context) any { return n.v }

// strNode is a string literal; ${{ inputs.ID }} in it is replaced.
type strNode struct {
	s      string
	inputs []string
}

func newStrNode(t token) (node, error) {
	n := &strNode{s: t.text}
	for _, m := range inputRef.FindAllStringSubmatch(t.text, -1) {
		n.inputs = append(n.inputs, m[1])
	}
	if err := checkRefs(t.text); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *strNode) eval(c *Context) any {
	if len(n.inputs) == 0 {
		return n.s
	}
	return SubstituteInputs(n.s, c.Inputs)
}

type pathNode struct{ path []string }

func (n *pathNode) eval(c *Context) any {
	switch n.path[0] {
	case "env":
		if c.Env == nil {
			return nil
		}
		if v, ok := c.Env(n.path[1]); ok {
			return v
		}
		return nil
	case "inputs":
		return c.Inputs[n.path[1]]
	}
	v := c.Event
	for _, k := range n.path[1:] {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

type notNode struct{ n node }

func (n *notNode) eval(c *Context) any { return !truthy(n.n.eval(c)) }

type boolNode struct {
	op   string
	l, r node
}

func (n *boolNode) eval(c *Context) any {
	l := truthy(n.l.eval(c))
	if n.op == "and" {
		return l && truthy(n.r.eval(c))
	}
	return l || truthy(n.r.eval(c))
}

type cmpNode struct {
	neq  bool
	l, r node
}

func (n *cmpNode) eval(c *Context) any {
	return equal(n.l.eval(c), n.r.eval(c)) != n.neq
}

func walk(n node, fn func(node)) {
	fn(n)
	switch n := n.(type) {
	case *notNode:
		walk(n.n, fn)
	case *boolNode:
		walk(n.l, fn)
		walk(n.r, fn)
	case *cmpNode:
		walk(n.l, fn)
		walk(n.r, fn)
	}
}

// truthy is Python's truth of a value.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// equal compares two values: numbers by value, strings and booleans as
// such, null only to null; values of different kinds are unequal.
func equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool, string, float64:
		return a == b
	case []any, map[string]any:
		ja, _ := json.Marshal(x)
		jb, _ := json.Marshal(b)
		return string(ja) == string(jb)
	}
	return false
}
