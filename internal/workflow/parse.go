package workflow

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// maxExpansion bounds the work that aliases and merge keys may cause (in
// mapping entries visited), so that a small file cannot expand exponentially.
const maxExpansion = 100_000

// nameMax is the length, in characters, to which derived script names are
// shortened.
const nameMax = 60

// Parse parses and validates a workflow file. filename names the file in
// errors, e.g. "codemagic.yaml". Every error it returns is an *Error.
func Parse(filename string, data []byte) (*File, error) {
	p := &parser{file: filename, budget: maxExpansion, active: map[*yaml.Node]bool{}}
	f, err := p.parse(data)
	if err != nil {
		return nil, err // an *Error, never a nil one in a non-nil interface
	}
	return f, nil
}

type parser struct {
	file string
	// refs are the texts of the workflow being parsed that may refer to
	// inputs, checked once its inputs are known.
	refs   []inputUse
	budget int // mapping entries left to visit; see maxExpansion
	// active holds the mappings whose entries are being listed, to
	// catch a merge key that refers to a mapping containing it.
	active map[*yaml.Node]bool
	// values are the inputs substituted in the nodes being read (nil
	// when none are, at Parse); partial: only some of them (defaults).
	values  map[string]any
	partial bool
	// from says which nodes hold a substituted input (for errors).
	from map[*yaml.Node]string
}

// pair is one key and value of a mapping, after merge keys are applied. key
// is resolved (never an alias); val may be an alias.
type pair struct{ key, val *yaml.Node }

func (p *parser) errf(n *yaml.Node, format string, args ...any) *Error {
	e := &Error{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
		if from := p.from[n]; from != "" {
			e.Msg += " (" + from + ")"
		}
	}
	return e
}

var (
	yamlLineErr  = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)
	yamlAliasErr = regexp.MustCompile(`^(?:unknown anchor '(.*)' referenced|anchor '(.*)' value contains itself)$`)
)

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner) errors. yaml.v3 v3.0.1 reports their lines 0-based: one less than
// the real line, and none at all for line 1.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// yamlError turns an error of yaml.Unmarshal into an *Error with the line
// of the problem where it can be known.
func (p *parser) yamlError(err error, data []byte) *Error {
	e := &Error{File: p.file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	m := yamlLineErr.FindStringSubmatch(err.Error())
	if m == nil {
		return e
	}
	e.Msg = "not valid YAML: " + m[2]
	e.Line, _ = strconv.Atoi(m[1])
	if slices.Contains(yamlParserProblems, m[2]) {
		e.Line++
	}
	// Alias errors carry no line: find the alias or anchor in the text.
	if a := yamlAliasErr.FindStringSubmatch(m[2]); a != nil && e.Line == 0 {
		mark := "*" + a[1]
		if a[1] == "" {
			mark = "&" + a[2]
		}
		if i := bytes.Index(data, []byte(mark)); i >= 0 {
			e.Line = 1 + bytes.Count(data[:i], []byte("\n"))
			e.Column = 1 + utf8.RuneCount(data[bytes.LastIndexByte(data[:i], '\n')+1:i])
		}
	}
	return e
}

func (p *parser) unmarshal(data []byte) (doc *yaml.Node, perr *Error) {
	defer func() {
		// yaml.v3 has panicked on malformed input before; a workflow
		// file comes from a user's repository and must never crash us.
		if r := recover(); r != nil {
			doc, perr = nil, &Error{File: p.file, Msg: fmt.Sprintf("not valid YAML: %v", r)}
		}
	}()
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, p.yamlError(err, data)
	}
	return &n, nil
}

func (p *parser) parse(data []byte) (*File, *Error) {
	doc, err := p.unmarshal(data)
	if err != nil {
		return nil, err
	}
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	root = resolve(root)
	if root.Kind == 0 || root.Kind == yaml.DocumentNode || isNull(root) {
		return nil, &Error{File: p.file, Line: 1, Column: 1, Msg: "file is empty; expected a top-level workflows mapping"}
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "top level is %s; expected a mapping with a workflows key", got(root))
	}
	top, err := p.pairs(root)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(top, func(kv pair) bool { return kv.key.Value == "workflows" })
	if i < 0 {
		return nil, p.errf(root, "no workflows key; expected a top-level workflows mapping of workflow ids to workflows")
	}
	wkey, wnode := top[i].key, resolve(top[i].val)
	if isNull(wnode) {
		return nil, p.errf(wkey, "workflows is empty; expected a mapping of workflow ids to workflows")
	}
	if wnode.Kind != yaml.MappingNode {
		return nil, p.errf(wnode, "workflows is %s; expected a mapping of workflow ids to workflows", got(wnode))
	}
	entries, err := p.pairs(wnode)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, p.errf(wnode, "workflows is empty; expected a mapping of workflow ids to workflows")
	}
	f := &File{Name: p.file}
	for _, kv := range entries {
		w, err := p.workflow(kv.key, kv.val)
		if err != nil {
			return nil, err
		}
		f.Workflows = append(f.Workflows, w)
	}
	return f, nil
}

func (p *parser) workflow(key, val *yaml.Node) (*Workflow, *Error) {
	id := key.Value
	if !validID(id) {
		return nil, p.errf(key, "workflow id %q is not valid; expected only letters, digits, '-' and '_'", id)
	}
	w := &Workflow{ID: id, Name: id, MaxDuration: DefaultMaxDuration, src: &source{file: p.file, key: key, val: val}}
	n := resolve(val)
	if isNull(n) {
		return nil, p.errf(key, "workflow %q is empty; expected a mapping with at least scripts", id)
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "workflow %q is %s; expected a mapping with at least scripts", id, got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return nil, err
	}
	p.refs = nil
	for _, kv := range entries {
		var err *Error
		switch kv.key.Value {
		case "name":
			var s string
			if s, err = p.str(kv.val, "name"); s != "" {
				w.Name = s
			}
		case "max_build_duration":
			w.MaxDuration, err = p.duration(w, kv.val)
		case "working_directory":
			w.WorkingDirectory, err = p.str(kv.val, "working_directory")
			p.use(kv.val, w.WorkingDirectory)
		case "instance_type":
			w.InstanceType, err = p.str(kv.val, "instance_type")
			p.use(kv.val, w.InstanceType)
		case "environment":
			err = p.environment(w, kv.val)
		case "triggering":
			err = p.triggering(w, kv.val)
		case "scripts":
			err = p.scripts(w, kv.key, kv.val)
		case "inputs":
			err = p.inputs(w, kv.val)
		case "when":
			w.When, err = p.when("when", kv.val)
		case "artifacts":
			w.Artifacts, err = p.strList(kv.val, "artifacts")
		case "cache":
			err = p.cache(w, kv.val)
		case "publishing":
			err = p.publishing(w, kv.key, kv.val)
		default:
			w.ignore(kv.key.Value)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := p.checkInputUses(w); err != nil {
		return nil, err
	}
	if p.values == nil {
		if err := p.defaults(w); err != nil {
			return nil, err
		}
	}
	for _, list := range [][]Script{w.Scripts, w.Publishing.Scripts} {
		for i := range list {
			if list[i].WorkingDirectory == "" {
				list[i].WorkingDirectory = w.WorkingDirectory
			}
		}
	}
	return w, nil
}

func (w *Workflow) ignore(path string) {
	if !slices.Contains(w.Ignored, path) {
		w.Ignored = append(w.Ignored, path)
	}
}

func (p *parser) duration(w *Workflow, val *yaml.Node) (time.Duration, *Error) {
	n := resolve(val)
	if p.deferred(n) {
		w.MaxDurationInput = n.Value
		return DefaultMaxDuration, nil
	}
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			var m int64
			if err := n.Decode(&m); err != nil || m < 1 || m > 120 {
				return 0, p.errf(n, "max_build_duration must be 1-120 minutes, got %s", n.Value)
			}
			return time.Duration(m) * time.Minute, nil
		case "!!str":
			s := strings.TrimSpace(n.Value)
			if m, err := strconv.Atoi(s); err == nil && p.from[n] != "" {
				// A string or choice input's text: minutes.
				if m < 1 || m > 120 {
					return 0, p.errf(n, "max_build_duration must be 1-120 minutes, got %s", s)
				}
				return time.Duration(m) * time.Minute, nil
			} else if err == nil {
				return 0, p.errf(n, "max_build_duration must be a number of minutes (1-120) without quotes, or a duration with a unit such as \"90m\"; got %q", n.Value)
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return 0, p.errf(n, "max_build_duration must be 1-120 minutes or a duration such as \"90m\"; got %q", n.Value)
			}
			if d <= 0 || d > MaxMaxDuration {
				return 0, p.errf(n, "max_build_duration must be more than 0 and at most 120m, got %q", n.Value)
			}
			return d, nil
		}
	}
	return 0, p.errf(n, "max_build_duration must be 1-120 minutes, got %s", got(n))
}

func (p *parser) environment(w *Workflow, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "environment must be a mapping (with vars), got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return err
	}
	for _, kv := range entries {
		if isToolchain(kv.key.Value) {
			if err := p.toolchain(w, kv); err != nil {
				return err
			}
			continue
		}
		switch kv.key.Value {
		case "groups", "android_signing":
			list, err := p.names(kv)
			if err != nil {
				return err
			}
			if kv.key.Value == "groups" {
				w.Groups = appendNew(w.Groups, list...)
			} else {
				w.AndroidSigning = appendNew(w.AndroidSigning, list...)
			}
			continue
		case "ios_signing":
			// Any form: a build of it is refused on Hangar's Linux machines.
			w.IOSSigning = !isNull(resolve(kv.val))
			continue
		case "vars":
		default:
			w.ignore("environment." + kv.key.Value)
			continue
		}
		vars := resolve(kv.val)
		if isNull(vars) {
			continue
		}
		if vars.Kind != yaml.MappingNode {
			return p.errf(vars, "environment.vars must be a mapping of NAME: value, got %s", got(vars))
		}
		list, err := p.pairs(vars)
		if err != nil {
			return err
		}
		for _, v := range list {
			if !validVarName(v.key.Value) {
				return p.errf(v.key, "environment variable name %q is not valid; expected letters, digits and '_', not starting with a digit", v.key.Value)
			}
			value := resolve(v.val)
			switch {
			case isNull(value):
				w.Vars = append(w.Vars, Var{Name: v.key.Value})
			case value.Kind == yaml.ScalarNode:
				w.Vars = append(w.Vars, Var{Name: v.key.Value, Value: value.Value})
				p.use(value, value.Value)
			default:
				return p.errf(value, "environment variable %s must be a string, number or boolean, got %s", v.key.Value, got(value))
			}
		}
	}
	return nil
}

// names reads a list of names, such as environment.groups: a sequence of
// non-empty strings (a single string is a list of one).
func (p *parser) names(kv pair) ([]string, *Error) {
	n := resolve(kv.val)
	if isNull(n) {
		return nil, nil
	}
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []string
	for _, it := range items {
		it = resolve(it)
		if it.Kind != yaml.ScalarNode || strings.TrimSpace(it.Value) == "" {
			return nil, p.errf(it, "environment.%s must be a list of names, got %s", kv.key.Value, got(it))
		}
		p.use(it, it.Value)
		out = append(out, strings.TrimSpace(it.Value))
	}
	return out, nil
}

// appendNew appends the names of add that list does not have yet.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}

func (p *parser) triggering(w *Workflow, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "triggering must be a mapping (with events, branch_patterns, tag_patterns), got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return err
	}
	t := &w.Triggering
	for _, kv := range entries {
		switch kv.key.Value {
		case "events":
			err = p.events(w, kv.val)
		case "branch_patterns":
			t.BranchPatterns, err = p.patterns(w, "triggering.branch_patterns", kv.val)
		case "tag_patterns":
			t.TagPatterns, err = p.patterns(w, "triggering.tag_patterns", kv.val)
		case "cancel_previous_builds":
			t.CancelPrevious, err = p.boolean(kv.val, "triggering.cancel_previous_builds")
		default:
			w.ignore("triggering." + kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) events(w *Workflow, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "triggering.events must be a list of events (push, pull_request, tag), got %s", got(n))
	}
	for _, item := range n.Content {
		e := resolve(item)
		if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
			return p.errf(e, "triggering event must be push, pull_request or tag, got %s", got(e))
		}
		switch {
		case e.Value == EventPush || e.Value == EventPullRequest || e.Value == EventTag:
			if !slices.Contains(w.Triggering.Events, e.Value) {
				w.Triggering.Events = append(w.Triggering.Events, e.Value)
			}
		case slices.Contains(eventsIgnored, e.Value):
			w.ignore("triggering.events." + e.Value)
		default:
			return p.errf(e, "unknown triggering event %q; expected push, pull_request or tag", e.Value)
		}
	}
	return nil
}

func (p *parser) patterns(w *Workflow, path string, val *yaml.Node) ([]Pattern, *Error) {
	n := resolve(val)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s must be a list of mappings with pattern, include and source, got %s", path, got(n))
	}
	var out []Pattern
	for i, item := range n.Content {
		at := fmt.Sprintf("%s[%d]", path, i)
		m := resolve(item)
		if m.Kind != yaml.MappingNode {
			return nil, p.errf(m, "%s must be a mapping with pattern (and optionally include, source), got %s", at, got(m))
		}
		entries, err := p.pairs(m)
		if err != nil {
			return nil, err
		}
		pat, have := Pattern{Include: true, Source: true}, false
		for _, kv := range entries {
			switch kv.key.Value {
			case "pattern":
				v := resolve(kv.val)
				if v.Kind != yaml.ScalarNode || isNull(v) || v.Value == "" {
					return nil, p.errf(v, "%s.pattern must be a branch or tag name or a wildcard pattern such as 'release/*', got %s", at, got(v))
				}
				if len(v.Value) > maxGlobPattern {
					return nil, p.errf(v, "%s.pattern is longer than %d characters", at, maxGlobPattern)
				}
				if p.partial && inputRef.MatchString(v.Value) {
					return nil, p.errf(v, "%s.pattern uses an input without default: triggering is read when a webhook arrives, and a webhook's build has only the inputs' defaults; give the input a default", at)
				}
				p.use(v, v.Value)
				pat.Pattern, have = v.Value, true
			case "include":
				pat.Include, err = p.boolean(kv.val, at+".include")
			case "source":
				pat.Source, err = p.boolean(kv.val, at+".source")
			default:
				w.ignore(at + "." + kv.key.Value)
			}
			if err != nil {
				return nil, err
			}
		}
		if !have {
			return nil, p.errf(m, "%s has no pattern; expected pattern: a branch or tag name or a wildcard pattern", at)
		}
		out = append(out, pat)
	}
	return out, nil
}

func (p *parser) scripts(w *Workflow, key, val *yaml.Node) *Error {
	list, err := p.scriptList(w, key, val, "scripts")
	w.Scripts = append(w.Scripts, list...)
	return err
}

// scriptList reads a list of scripts at path ("scripts",
// "publishing.scripts").
func (p *parser) scriptList(w *Workflow, key, val *yaml.Node, path string) ([]Script, *Error) {
	var out []Script
	n := resolve(val)
	if isNull(n) {
		return nil, p.errf(key, "%s is empty; expected a list of scripts", path)
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s must be a list of scripts, got %s", path, got(n))
	}
	if len(n.Content) == 0 {
		return nil, p.errf(n, "%s is empty; expected a list of scripts", path)
	}
	for i, item := range n.Content {
		at := fmt.Sprintf("%s[%d]", path, i)
		m := resolve(item)
		s := Script{}
		switch {
		case isNull(m):
			return nil, p.errf(m, "%s is empty; expected a script or a mapping with script", at)
		case m.Kind == yaml.ScalarNode:
			if m.ShortTag() != "!!str" {
				return nil, p.errf(m, "%s must be a script (a string) or a mapping with script, got %s", at, got(m))
			}
			s.Script = m.Value
			p.use(m, m.Value)
		case m.Kind == yaml.MappingNode:
			if err := p.scriptMapping(w, &s, at, m); err != nil {
				return nil, err
			}
		default:
			return nil, p.errf(m, "%s must be a script (a string) or a mapping with script, got %s", at, got(m))
		}
		if strings.TrimSpace(s.Script) == "" {
			return nil, p.errf(m, "%s is an empty script; expected commands to run", at)
		}
		if s.Name == "" {
			s.Name = scriptName(s.Script)
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) scriptMapping(w *Workflow, s *Script, at string, m *yaml.Node) *Error {
	entries, err := p.pairs(m)
	if err != nil {
		return err
	}
	have := false
	for _, kv := range entries {
		switch kv.key.Value {
		case "name":
			s.Name, err = p.str(kv.val, at+".name")
			p.use(kv.val, s.Name)
		case "script":
			v := resolve(kv.val)
			if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!str" && !isNull(v)) {
				return p.errf(v, "%s.script must be a string of commands, got %s", at, got(v))
			}
			s.Script, have = v.Value, true
			p.use(v, v.Value)
		case "ignore_failure":
			s.IgnoreFailure, err = p.boolean(kv.val, at+".ignore_failure")
		case "working_directory":
			s.WorkingDirectory, err = p.str(kv.val, at+".working_directory")
			p.use(kv.val, s.WorkingDirectory)
		case "when":
			s.When, err = p.when(at+".when", kv.val)
		default:
			w.ignore(at + "." + kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	if !have {
		return p.errf(m, "%s has no script; expected script: commands to run", at)
	}
	return nil
}

// scriptName derives a step name from its script: the first non-empty line
// that is not a "#!" line (or, failing that, the first non-empty line),
// trimmed and shortened.
func scriptName(script string) string {
	first := ""
	for line := range strings.Lines(script) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if first == "" {
			first = line
		}
		if !strings.HasPrefix(line, "#!") {
			return shorten(line)
		}
	}
	return shorten(first)
}

func shorten(s string) string {
	if utf8.RuneCountInString(s) <= nameMax {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:nameMax-3])) + "..."
}

// str reads an optional scalar as a string; null is "".
func (p *parser) str(val *yaml.Node, what string) (string, *Error) {
	n := resolve(val)
	if isNull(n) {
		return "", nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s must be a string, got %s", what, got(n))
	}
	return n.Value, nil
}

func (p *parser) boolean(val *yaml.Node, what string) (bool, *Error) {
	n := resolve(val)
	if p.deferred(n) {
		return false, nil
	}
	if v := n.Value; p.from[n] != "" && n.Kind == yaml.ScalarNode && (v == "true" || v == "false") {
		return v == "true", nil // a string or choice input's text
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, p.errf(n, "%s must be true or false, got %s", what, got(n))
	}
	return b, nil
}

// pairs returns the entries of mapping m in file order, with merge keys
// ("<<: *anchor" or "<<: [*a, *b]") applied as YAML specifies: the
// mapping's own keys win over merged ones, and earlier merged mappings win
// over later ones. A merged entry takes the place of its "<<" key.
func (p *parser) pairs(m *yaml.Node) ([]pair, *Error) {
	p.budget -= len(m.Content)/2 + 1
	if p.budget < 0 {
		return nil, p.errf(m, "the file expands to too many entries through aliases and merge keys")
	}
	p.active[m] = true
	defer delete(p.active, m)
	own := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := resolve(m.Content[i])
		if isMerge(k) {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, p.errf(k, "mapping key is %s; expected a string", got(k))
		}
		if first, dup := own[k.Value]; dup {
			return nil, p.errf(k, "duplicate key %q (first at line %d)", k.Value, first.Line)
		}
		own[k.Value] = k
	}
	var out []pair
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := resolve(m.Content[i]), m.Content[i+1]
		if !isMerge(k) {
			out = append(out, pair{k, v})
			seen[k.Value] = true
			continue
		}
		merged, err := p.merged(v)
		if err != nil {
			return nil, err
		}
		for _, kv := range merged {
			if own[kv.key.Value] == nil && !seen[kv.key.Value] {
				out = append(out, kv)
				seen[kv.key.Value] = true
			}
		}
	}
	return out, nil
}

// merged returns the entries that the value of a merge key brings in.
func (p *parser) merged(val *yaml.Node) ([]pair, *Error) {
	n := resolve(val)
	if p.active[n] {
		return nil, p.errf(val, "merge key << refers to a mapping that contains it")
	}
	switch n.Kind {
	case yaml.MappingNode:
		return p.pairs(n)
	case yaml.SequenceNode:
		var out []pair
		seen := map[string]bool{}
		for _, item := range n.Content {
			m := resolve(item)
			if p.active[m] {
				return nil, p.errf(item, "merge key << refers to a mapping that contains it")
			}
			if m.Kind != yaml.MappingNode {
				return nil, p.errf(m, "merge key << takes a mapping or a list of mappings, got a list holding %s", got(m))
			}
			entries, err := p.pairs(m)
			if err != nil {
				return nil, err
			}
			for _, kv := range entries {
				if !seen[kv.key.Value] {
					out = append(out, kv)
					seen[kv.key.Value] = true
				}
			}
		}
		return out, nil
	}
	return nil, p.errf(n, "merge key << takes a mapping or a list of mappings, got %s", got(n))
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
}

// got describes a node for an error message: "a mapping", "the number 5".
func got(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return strconv.Quote(shorten(n.Value))
	}
	return "nothing"
}

func validID(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// ValidVarName reports whether s is a valid environment variable name:
// letters, digits and '_', not starting with a digit.
func ValidVarName(s string) bool { return validVarName(s) }

func validVarName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
