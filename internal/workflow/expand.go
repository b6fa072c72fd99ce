package workflow

import "strings"

// Expand replaces $NAME and ${NAME} in an environment.vars value by the
// value lookup gives NAME, as Codemagic does when it exports a workflow's
// variables after the built-in ones and the groups' (each variable sees
// those and the variables above it). A reference to a name lookup does not
// know is kept as written, and so is a $ that starts no reference ("$",
// "$$", "$1", "${" without its "}"): a value such as a password that holds
// a $ stays intact unless the text after it names a set variable.
func Expand(value string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(value, "$") {
		return value
	}
	var b strings.Builder
	for i := 0; i < len(value); {
		c := value[i]
		if c != '$' || i+1 >= len(value) {
			b.WriteByte(c)
			i++
			continue
		}
		name, end := "", i+1
		if value[i+1] == '{' {
			if j := strings.IndexByte(value[i+2:], '}'); j >= 0 && validVarName(value[i+2:i+2+j]) {
				name, end = value[i+2:i+2+j], i+3+j
			}
		} else {
			j := i + 1
			for j < len(value) && isNameByte(value[j], j == i+1) {
				j++
			}
			name, end = value[i+1:j], j
		}
		if name != "" {
			if v, ok := lookup(name); ok {
				b.WriteString(v)
				i = end
				continue
			}
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

func isNameByte(c byte, first bool) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}
