package workflow

import (
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Inputs are substituted as Codemagic does: ${{ inputs.ID }} is replaced
// in every value of the workflow before it is read, so that any key may
// take an input. A value that is the reference alone takes the input's
// type (max_build_duration: ${{ inputs.minutes }} is a number, and
// ignore_failure: ${{ inputs.lenient }} a boolean); inside other text it
// is the value as text. when.condition is left as written: a condition
// reads inputs itself, typed (see Condition). Parse checks each workflow
// with its inputs' defaults; Resolve reads it again with the values a
// build is given, so that every key is checked after substitution.

// source is where a workflow was read from, to read it again with inputs.
type source struct {
	file     string
	key, val *yaml.Node
}

// exactRef is a value that is one input reference and nothing else.
var exactRef = regexp.MustCompile(`^\$\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}$`)

// Resolve returns the workflow read again with values (InputValues's
// result) substituted for its ${{ inputs.ID }}: scripts, variables,
// max_build_duration, instance_type, artifacts, cache paths, publishing
// and every other key. A value that is not valid once substituted (a
// max_build_duration of 500, an email recipient that is not an address)
// is an *InputError naming the file, line, key and input.
func (w *Workflow) Resolve(values map[string]any) (*Workflow, error) {
	if w.src == nil {
		return w, nil
	}
	r, err := resolveWorkflow(w.src, values, false, "value")
	if err != nil {
		return nil, &InputError{Msg: err.Error()}
	}
	return r, nil
}

// resolveWorkflow reads src again with values substituted. partial leaves
// the references to inputs that values lacks as they are (for the
// defaults, at Parse); what names the values in errors ("value",
// "default").
func resolveWorkflow(src *source, values map[string]any, partial bool, what string) (*Workflow, *Error) {
	s := &substituter{values: values, partial: partial, what: what, memo: map[*yaml.Node]*yaml.Node{}, from: map[*yaml.Node]string{}}
	val := s.workflow(src.val)
	p := &parser{file: src.file, budget: maxExpansion, active: map[*yaml.Node]bool{}, values: values, partial: partial, from: s.from}
	w, err := p.workflow(src.key, val)
	if err != nil {
		return nil, err
	}
	w.src = src
	return w, nil
}

// substituter copies a workflow's nodes with inputs substituted; each
// node is copied once (aliases keep pointing to one copy).
type substituter struct {
	values  map[string]any
	partial bool
	what    string
	memo    map[*yaml.Node]*yaml.Node
	// from says, of each node whose value was substituted, from which
	// input, for errors.
	from map[*yaml.Node]string
}

// workflow copies the workflow's value, leaving its inputs as written.
func (s *substituter) workflow(n *yaml.Node) *yaml.Node {
	m := resolve(n)
	if m.Kind != yaml.MappingNode {
		return s.copy(n)
	}
	c := *m
	c.Content = make([]*yaml.Node, len(m.Content))
	for i := 0; i+1 < len(m.Content); i += 2 {
		c.Content[i], c.Content[i+1] = m.Content[i], m.Content[i+1]
		if resolve(m.Content[i]).Value != "inputs" {
			c.Content[i+1] = s.copy(m.Content[i+1])
		}
	}
	return &c
}

func (s *substituter) copy(n *yaml.Node) *yaml.Node {
	if c, ok := s.memo[n]; ok {
		return c
	}
	c := *n
	s.memo[n] = &c
	switch n.Kind {
	case yaml.AliasNode:
		c.Alias = s.copy(n.Alias)
	case yaml.ScalarNode:
		s.scalar(&c)
	case yaml.MappingNode, yaml.SequenceNode:
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, ch := range n.Content {
			c.Content[i] = ch
			if n.Kind == yaml.MappingNode && (i%2 == 0 || resolve(n.Content[i-1]).Value == "condition") {
				continue // keys, and conditions, stay as written
			}
			c.Content[i] = s.copy(ch)
		}
	}
	return &c
}

// scalar substitutes the inputs of n, a copy.
func (s *substituter) scalar(n *yaml.Node) {
	if !strings.Contains(n.Value, "${{") {
		return
	}
	if m := exactRef.FindStringSubmatch(n.Value); m != nil {
		v, ok := s.values[m[1]]
		if !ok && s.partial {
			return
		}
		n.Value, n.Tag, n.Style = FormatValue(v), "!!str", yaml.DoubleQuotedStyle
		switch x := v.(type) {
		case bool:
			n.Tag, n.Style = "!!bool", 0
		case float64:
			n.Tag, n.Style = "!!float", 0
			if x == float64(int64(x)) {
				n.Tag = "!!int"
			}
		}
		s.from[n] = fmt.Sprintf("the %s of input %s", s.what, m[1])
		return
	}
	var ids []string
	n.Value = inputRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
		id := inputRef.FindStringSubmatch(ref)[1]
		v, ok := s.values[id]
		if !ok && s.partial {
			return ref
		}
		ids = append(ids, id)
		return FormatValue(v)
	})
	if len(ids) > 0 {
		n.Tag = "!!str"
		s.from[n] = fmt.Sprintf("with the %s of input %s", s.what, strings.Join(ids, ", "))
	}
}

// deferred reports whether n, a value that a key reads as a number or a
// boolean, refers to inputs that are not substituted yet: then it is
// read when the build starts (Resolve).
func (p *parser) deferred(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" || !inputRef.MatchString(n.Value) {
		return false
	}
	if p.values != nil && !p.partial {
		return false // a build's values are in: the text is what it is
	}
	p.use(n, n.Value)
	return true
}

// defaults reads w again with its inputs' defaults, which a build
// started without values (a webhook's) has: a default that makes a key
// not valid is an error of the file, and triggering (read when a webhook
// arrives) takes the defaults.
func (p *parser) defaults(w *Workflow) *Error {
	if len(w.Inputs) == 0 {
		return nil
	}
	values := map[string]any{}
	for _, in := range w.Inputs {
		if in.Default != nil {
			values[in.ID] = in.Default
		}
	}
	d, err := resolveWorkflow(w.src, values, true, "default")
	if err != nil {
		return err
	}
	w.defaults = d
	w.MaxDuration = d.MaxDuration
	w.Triggering = d.Triggering
	return nil
}
