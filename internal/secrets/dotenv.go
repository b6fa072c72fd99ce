package secrets

import (
	"fmt"
	"strings"
)

// ParseDotenv reads variables in the dotenv style: KEY=VALUE lines, an
// optional leading "export ", blank lines and # comments skipped. A value
// in double quotes may span lines and takes \n, \t, \", \\ and \$ escapes;
// one in single quotes is taken as written (it may span lines too); an
// unquoted one ends at the line's end, or at " #" (a comment), and is
// trimmed. Errors name the line, never a value.
func ParseDotenv(data string) ([]Var, error) {
	var vars []Var
	lines := strings.Split(strings.ReplaceAll(data, "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		n := i + 1
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", n)
		}
		value = strings.TrimLeft(value, " \t")
		if value != "" && (value[0] == '"' || value[0] == '\'') {
			q := value[0]
			text := value[1:]
			for {
				if end := closing(text, q); end >= 0 {
					if rest := strings.TrimSpace(text[end+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
						return nil, fmt.Errorf("line %d: unexpected text after the closing quote of %s", i+1, key)
					}
					text = text[:end]
					break
				}
				if i+1 >= len(lines) {
					return nil, fmt.Errorf("line %d: the value of %s has no closing %c", n, key, q)
				}
				i++
				text += "\n" + lines[i]
			}
			if q == '"' {
				text = unescape(text)
			}
			value = text
		} else {
			if j := strings.Index(value, " #"); j >= 0 {
				value = value[:j]
			}
			value = strings.TrimSpace(value)
		}
		v := Var{Name: key, Value: value}
		if err := CheckVar(v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		vars = append(vars, v)
	}
	return vars, nil
}

// closing is the index of the first unescaped q in s (-1: none).
func closing(s string, q byte) int {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q == '"':
			i++
		case s[i] == q:
			return i
		}
	}
	return -1
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '"', '\\', '$':
			b.WriteByte(s[i])
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
