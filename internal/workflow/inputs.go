package workflow

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Input types a workflow's inputs may declare.
const (
	InputString  = "string"
	InputNumber  = "number"
	InputBoolean = "boolean"
	InputChoice  = "choice"
)

// Input is one entry of a workflow's inputs: a value given when a build
// starts, substituted for ${{ inputs.ID }} (Codemagic's build inputs).
type Input struct {
	ID          string
	Description string
	// Type is InputString (the default), InputNumber, InputBoolean or
	// InputChoice.
	Type string
	// Default is the value when the build is given none: a string, a
	// float64 or a bool as Type says; nil when the input has no default
	// (then a value must be given).
	Default any
	// Options are the values a choice input may take.
	Options []string
}

var (
	// inputRef is a reference to an input: ${{ inputs.ID }}.
	inputRef = regexp.MustCompile(`\$\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}`)
	// anyRef is any ${{ ... }} expression.
	anyRef = regexp.MustCompile(`\$\{\{(.*?)\}\}`)
)

// checkRefs refuses ${{ ... }} expressions other than ${{ inputs.ID }}.
func checkRefs(s string) error {
	for _, m := range anyRef.FindAllString(s, -1) {
		if !inputRef.MatchString(m) {
			return fmt.Errorf("%s is not supported: only ${{ inputs.ID }} is replaced (Codemagic's inputs context)", shorten(m))
		}
	}
	return nil
}

// refs returns the input ids s refers to.
func refs(s string) []string {
	var ids []string
	for _, m := range inputRef.FindAllStringSubmatch(s, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// SubstituteInputs replaces each ${{ inputs.ID }} in s by the input's value
// as text: a boolean is "true" or "false", a number as written ("4",
// "0.25"). An input without a value becomes "".
func SubstituteInputs(s string, values map[string]any) string {
	if !strings.Contains(s, "${{") {
		return s
	}
	return inputRef.ReplaceAllStringFunc(s, func(m string) string {
		return FormatValue(values[inputRef.FindStringSubmatch(m)[1]])
	})
}

// FormatValue writes an input value as text.
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// InputError is a value given for an input that the workflow refuses.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// InputValues checks the values given for w's inputs when a build starts
// and returns every input's value: the given one converted to the input's
// type, or its default. given holds JSON values (string, float64,
// json.Number, bool) or, from a command line, strings ("3", "true"). An
// unknown id, a value of the wrong type, a choice not among the options
// or a missing value for an input without default is an *InputError.
func (w *Workflow) InputValues(given map[string]any) (map[string]any, error) {
	out := map[string]any{}
	var unknown []string
	for id := range given {
		if !slices.ContainsFunc(w.Inputs, func(in Input) bool { return in.ID == id }) {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		known := "it has no inputs"
		if len(w.Inputs) > 0 {
			ids := make([]string, len(w.Inputs))
			for i, in := range w.Inputs {
				ids[i] = in.ID
			}
			known = "its inputs are " + strings.Join(ids, ", ")
		}
		return nil, &InputError{fmt.Sprintf("workflow %s has no input %s; %s", w.ID, strings.Join(unknown, ", "), known)}
	}
	for _, in := range w.Inputs {
		v, ok := given[in.ID]
		if !ok {
			if in.Default == nil {
				return nil, &InputError{fmt.Sprintf("input %s of workflow %s has no default: give it a value (--input %s=VALUE; API: \"inputs\")", in.ID, w.ID, in.ID)}
			}
			out[in.ID] = in.Default
			continue
		}
		cv, err := in.convert(v)
		if err != nil {
			return nil, &InputError{fmt.Sprintf("input %s of workflow %s: %v", in.ID, w.ID, err)}
		}
		out[in.ID] = cv
	}
	return out, nil
}

// convert checks v against the input's type and returns it as a string,
// float64 or bool.
func (in *Input) convert(v any) (any, error) {
	if n, ok := v.(json.Number); ok {
		v = string(n)
		if in.Type == InputString {
			return nil, fmt.Errorf("is a string, got the number %s: give it as text", n)
		}
	}
	switch in.Type {
	case InputNumber:
		switch x := v.(type) {
		case float64:
			return x, nil
		case string:
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			if err != nil {
				return nil, fmt.Errorf("is a number, got %q", x)
			}
			return f, nil
		}
		return nil, fmt.Errorf("is a number, got %s", describe(v))
	case InputBoolean:
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			switch strings.TrimSpace(x) {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
			return nil, fmt.Errorf("is a boolean (true or false), got %q", x)
		}
		return nil, fmt.Errorf("is a boolean (true or false), got %s", describe(v))
	case InputChoice:
		s, ok := v.(string)
		if f, isNum := v.(float64); isNum {
			s, ok = FormatValue(f), true
		}
		if !ok {
			return nil, fmt.Errorf("is one of %s, got %s", strings.Join(in.Options, ", "), describe(v))
		}
		if !slices.Contains(in.Options, s) {
			return nil, fmt.Errorf("must be one of %s, got %q", strings.Join(in.Options, ", "), s)
		}
		return s, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("is a string, got %s: give it as text", describe(v))
	}
	return s, nil
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case float64:
		return "the number " + FormatValue(x)
	case string:
		return strconv.Quote(x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
