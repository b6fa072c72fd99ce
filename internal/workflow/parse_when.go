package workflow

import (
	"encoding/json"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// inputUse is a text of the workflow that may hold ${{ inputs.ID }}, or a
// condition, with the node it came from.
type inputUse struct {
	n    *yaml.Node
	text string
	cond *Condition
}

func (p *parser) use(n *yaml.Node, text string) {
	p.refs = append(p.refs, inputUse{n: resolve(n), text: text})
}

// checkInputUses checks, once w's inputs are known, that every ${{ }} in
// its texts and conditions names one of them.
func (p *parser) checkInputUses(w *Workflow) *Error {
	known := func(id string) bool {
		return slices.ContainsFunc(w.Inputs, func(in Input) bool { return in.ID == id })
	}
	for _, u := range p.refs {
		ids := u.cond.inputIDs()
		if u.cond == nil {
			if err := checkRefs(u.text); err != nil {
				return p.errf(u.n, "%v", err)
			}
			ids = refs(u.text)
		}
		for _, id := range ids {
			if !known(id) {
				return p.errf(u.n, "${{ inputs.%s }}: workflow %q has no input %q; declare it under inputs", id, w.ID, id)
			}
		}
	}
	return nil
}

func (c *Condition) inputIDs() []string {
	if c == nil {
		return nil
	}
	return c.Inputs()
}

func (p *parser) inputs(w *Workflow, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "inputs must be a mapping of input ids to inputs (description, type, default, options), got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return err
	}
	for _, kv := range entries {
		id := kv.key.Value
		if !validInputID(id) {
			return p.errf(kv.key, "input id %q is not valid; expected letters, digits, '_' and '-', starting with a letter or '_'", id)
		}
		in, err := p.input(w, id, kv.key, kv.val)
		if err != nil {
			return err
		}
		w.Inputs = append(w.Inputs, in)
	}
	return nil
}

func (p *parser) input(w *Workflow, id string, key, val *yaml.Node) (Input, *Error) {
	at := "inputs." + id
	in := Input{ID: id, Type: InputString}
	m := resolve(val)
	if isNull(m) {
		return in, nil
	}
	if m.Kind != yaml.MappingNode {
		return in, p.errf(m, "%s must be a mapping with description, type, default and options, got %s", at, got(m))
	}
	entries, err := p.pairs(m)
	if err != nil {
		return in, err
	}
	var def, opts *yaml.Node
	for _, kv := range entries {
		switch kv.key.Value {
		case "description":
			in.Description, err = p.str(kv.val, at+".description")
		case "type":
			var t string
			t, err = p.str(kv.val, at+".type")
			switch t {
			case InputString, InputNumber, InputBoolean, InputChoice:
				in.Type = t
			case "":
			default:
				return in, p.errf(resolve(kv.val), "%s.type %q is not an input type; expected boolean, choice, number or string", at, t)
			}
		case "default":
			def = resolve(kv.val)
		case "options":
			opts = resolve(kv.val)
		default:
			w.ignore(at + "." + kv.key.Value)
		}
		if err != nil {
			return in, err
		}
	}
	if opts != nil && !isNull(opts) {
		if in.Type != InputChoice {
			return in, p.errf(opts, "%s.options is only for inputs of type choice", at)
		}
		if opts.Kind != yaml.SequenceNode {
			return in, p.errf(opts, "%s.options must be a list of values, got %s", at, got(opts))
		}
		for _, o := range opts.Content {
			o = resolve(o)
			if o.Kind != yaml.ScalarNode || isNull(o) {
				return in, p.errf(o, "%s.options must hold strings, numbers or booleans, got %s", at, got(o))
			}
			if !slices.Contains(in.Options, o.Value) {
				in.Options = append(in.Options, o.Value)
			}
		}
	}
	if in.Type == InputChoice && len(in.Options) == 0 {
		return in, p.errf(key, "%s is of type choice and needs options: a list of the values to choose from", at)
	}
	if def != nil && !isNull(def) {
		if def.Kind != yaml.ScalarNode {
			return in, p.errf(def, "%s.default must be a value, got %s", at, got(def))
		}
		var v any = def.Value
		switch in.Type {
		case InputNumber:
			f, err := strconv.ParseFloat(def.Value, 64)
			if (def.ShortTag() != "!!int" && def.ShortTag() != "!!float") || err != nil {
				return in, p.errf(def, "%s.default must be a number (the input's type), got %s", at, got(def))
			}
			v = f
		case InputBoolean:
			var b bool
			if def.ShortTag() != "!!bool" || def.Decode(&b) != nil {
				return in, p.errf(def, "%s.default must be true or false (the input's type), got %s", at, got(def))
			}
			v = b
		case InputChoice:
			if !slices.Contains(in.Options, def.Value) {
				return in, p.errf(def, "%s.default %q is not one of its options (%s)", at, def.Value, joinQuoted(in.Options))
			}
		}
		in.Default = v
	}
	return in, nil
}

func joinQuoted(list []string) string {
	s := ""
	for i, v := range list {
		if i > 0 {
			s += ", "
		}
		s += strconv.Quote(v)
	}
	return s
}

func (p *parser) when(at string, val *yaml.Node) (*When, *Error) {
	n := resolve(val)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s must be a mapping with condition and/or changeset, got %s", at, got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return nil, err
	}
	w := &When{}
	for _, kv := range entries {
		switch kv.key.Value {
		case "condition":
			c := resolve(kv.val)
			if c.Kind != yaml.ScalarNode || isNull(c) || c.Value == "" {
				return nil, p.errf(c, "%s.condition must be an expression such as env.RUN_TESTS == \"true\", got %s", at, got(c))
			}
			cond, cerr := ParseCondition(c.Value)
			if cerr != nil {
				return nil, p.errf(c, "%s.condition: %v", at, cerr)
			}
			w.Condition = cond
			p.refs = append(p.refs, inputUse{n: c, text: c.Value, cond: cond})
		case "changeset":
			if w.Changeset, err = p.changeset(at+".changeset", kv.val); err != nil {
				return nil, err
			}
		default:
			return nil, p.errf(kv.key, "%s.%s is not known; when takes condition and changeset", at, kv.key.Value)
		}
	}
	if w.Condition == nil && w.Changeset == nil {
		return nil, nil
	}
	return w, nil
}

func (p *parser) changeset(at string, val *yaml.Node) (*Changeset, *Error) {
	n := resolve(val)
	c := &Changeset{}
	if !isNull(n) {
		if n.Kind != yaml.MappingNode {
			return nil, p.errf(n, "%s must be a mapping with includes and excludes (lists of paths), got %s", at, got(n))
		}
		entries, err := p.pairs(n)
		if err != nil {
			return nil, err
		}
		for _, kv := range entries {
			var list *[]string
			switch kv.key.Value {
			case "includes":
				list = &c.Includes
			case "excludes":
				list = &c.Excludes
			default:
				return nil, p.errf(kv.key, "%s.%s is not known; changeset takes includes and excludes", at, kv.key.Value)
			}
			l := resolve(kv.val)
			if isNull(l) {
				continue
			}
			if l.Kind != yaml.SequenceNode {
				return nil, p.errf(l, "%s.%s must be a list of paths such as 'android/' or '**/*.md', got %s", at, kv.key.Value, got(l))
			}
			for _, item := range l.Content {
				item = resolve(item)
				if item.Kind != yaml.ScalarNode || isNull(item) || item.Value == "" {
					return nil, p.errf(item, "%s.%s must hold paths such as 'android/' or '**/*.md', got %s", at, kv.key.Value, got(item))
				}
				if err := validPathPattern(item.Value); err != nil {
					return nil, p.errf(item, "%s.%s: %v", at, kv.key.Value, err)
				}
				*list = append(*list, item.Value)
			}
		}
	}
	if len(c.Includes) == 0 {
		c.Includes = []string{"."}
	}
	return c, nil
}

func validInputID(s string) bool {
	if s == "" || !(s[0] == '_' || s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	return validID(s)
}

// EventPaths returns the webhook payload fields the workflow's conditions
// read (event.x.y as ["x", "y"]): the part of a payload a build keeps.
func (w *Workflow) EventPaths() [][]string {
	var paths [][]string
	add := func(wh *When) {
		if wh != nil && wh.Condition != nil {
			paths = append(paths, wh.Condition.EventPaths()...)
		}
	}
	add(w.When)
	for i := range w.Scripts {
		add(w.Scripts[i].When)
	}
	return paths
}

// maxEventValue bounds a list or mapping that ProjectEvent keeps whole,
// and the length of a string it keeps.
const maxEventValue = 64 << 10

// ProjectEvent returns the parts of payload (decoded JSON) that paths
// read, in the same nesting, and nothing else: what a build keeps of its
// webhook's payload for its conditions. Where a path ends on (or reaches)
// a list or a mapping, that value is kept whole if its JSON is at most 64
// KiB, and as a non-empty stand-in otherwise; a longer string is cut.
func ProjectEvent(payload any, paths [][]string) map[string]any {
	root, ok := payload.(map[string]any)
	out := map[string]any{}
	if !ok {
		return out
	}
	for _, p := range paths {
		src, dst := root, out
		for i, k := range p {
			v, present := src[k]
			if !present {
				break
			}
			m, isMap := v.(map[string]any)
			if isMap && i < len(p)-1 {
				next, _ := dst[k].(map[string]any)
				if next == nil {
					next = map[string]any{}
					dst[k] = next
				}
				src, dst = m, next
				continue
			}
			if _, set := dst[k]; !set || !isMap {
				dst[k] = capped(v)
			}
			break
		}
	}
	return out
}

func capped(v any) any {
	switch x := v.(type) {
	case string:
		if len(x) > maxEventValue {
			return x[:maxEventValue]
		}
	case map[string]any, []any:
		if data, err := json.Marshal(v); err != nil || len(data) > maxEventValue {
			return map[string]any{"hangar_truncated": true}
		}
	}
	return v
}
