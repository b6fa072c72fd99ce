package workflow

import (
	"reflect"
	"strings"
	"testing"
)

func TestToolchains(t *testing.T) {
	f, err := Parse("codemagic.yaml", []byte(`workflows:
  w:
    environment:
      java: 17
      node: "18.20"
      python: latest
      flutter: stable
    scripts: [echo]
`))
	if err != nil {
		t.Fatal(err)
	}
	w := f.Workflows[0]
	if want := map[string]string{"java": "17", "node": "18.20", "python": "latest"}; !reflect.DeepEqual(w.Toolchains, want) {
		t.Errorf("toolchains %v, want %v", w.Toolchains, want)
	}
	if !reflect.DeepEqual(w.Ignored, []string{"environment.flutter"}) {
		t.Errorf("ignored %v, want environment.flutter only", w.Ignored)
	}
	_, err = Parse("codemagic.yaml", []byte("workflows:\n  w:\n    environment:\n      java: [17]\n    scripts: [echo]\n"))
	if err == nil || !strings.Contains(err.Error(), "environment.java must be a version") {
		t.Errorf("a list as java version: %v", err)
	}
}
