package image

import (
	"fmt"
	"slices"
	"strings"
)

// LabelPrefix starts the labels by which an image declares its
// toolchains: io.hangar.java=17.0.13, io.hangar.node=18.20.4,
// io.hangar.python=3.11.2.
const LabelPrefix = "io.hangar."

// Toolchains are the tools a workflow's environment can ask a version of.
var Toolchains = []string{"java", "node", "python"}

// Versions returns the toolchain versions labels declare, e.g.
// "java 17.0.13, node 18.20.4", or "no toolchains".
func Versions(labels map[string]string) string {
	var parts []string
	for _, t := range Toolchains {
		if v := labels[LabelPrefix+t]; v != "" {
			parts = append(parts, t+" "+v)
		}
	}
	if len(parts) == 0 {
		return "no toolchains"
	}
	return strings.Join(parts, ", ")
}

// CheckToolchains checks the versions a workflow asks for (environment.java
// and the like: tool -> version) against the labels of image n. A version
// matches the declared one when equal to it or a prefix of it at a dot
// ("17" matches 17.0.13); "latest" or "default" match any declared
// version. The error is for the build's user: it lists what the image has.
func CheckToolchains(want map[string]string, n string, labels map[string]string) error {
	tools := make([]string, 0, len(want))
	for t := range want {
		tools = append(tools, t)
	}
	slices.Sort(tools)
	var bad []string
	for _, t := range tools {
		v := strings.TrimSpace(want[t])
		have := labels[LabelPrefix+t]
		if have == "" || !versionMatches(v, have) {
			bad = append(bad, fmt.Sprintf("environment.%s %s", t, v))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%s: not in this instance type's image %s, which has %s (labels %s*); use an instance type whose image has it, or change the version",
		strings.Join(bad, ", "), n, Versions(labels), LabelPrefix)
}

func versionMatches(want, have string) bool {
	switch strings.ToLower(want) {
	case "latest", "default", "":
		return true
	}
	want = strings.TrimPrefix(strings.TrimSuffix(want, ".x"), "v")
	return have == want || strings.HasPrefix(have, want+".")
}
