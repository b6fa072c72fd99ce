package workflow

import (
	"slices"

	"gopkg.in/yaml.v3"
)

// toolchains are the environment keys naming a toolchain version that the
// machine's image must have (Codemagic's environment.java, .node, .python).
var toolchains = []string{"java", "node", "python"}

func isToolchain(key string) bool { return slices.Contains(toolchains, key) }

// toolchain reads environment.<tool>: a version such as 17, "18.17" or
// latest.
func (p *parser) toolchain(w *Workflow, kv pair) *Error {
	n := resolve(kv.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		return p.errf(n, "environment.%s must be a version such as 17 or \"18.20\", got %s", kv.key.Value, got(n))
	}
	if w.Toolchains == nil {
		w.Toolchains = map[string]string{}
	}
	w.Toolchains[kv.key.Value] = n.Value
	p.use(n, n.Value)
	return nil
}
