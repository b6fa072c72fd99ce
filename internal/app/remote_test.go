package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNewRunnerChecks: a runner's configuration is checked before it
// touches its data dir or a server.
func TestNewRunnerChecks(t *testing.T) {
	data := filepath.Join(t.TempDir(), "runner")
	ok := RunnerConfig{Machines: Config{Data: data, Driver: "host", MaxBuilds: 1}, Servers: []string{"http://127.0.0.1:1"}, Token: "hrt_x", Labels: []string{"linux"}}
	for _, c := range []struct {
		change func(*RunnerConfig)
		want   string
	}{
		{func(c *RunnerConfig) { c.Servers = nil }, "needs --server"},
		{func(c *RunnerConfig) { c.Token = "" }, "and --token"},
		{func(c *RunnerConfig) { c.Labels = nil }, "--labels: name at least one instance type"},
		{func(c *RunnerConfig) { c.Machines.MaxBuilds = 0 }, "--capacity 0: must be at least 1"},
	} {
		cfg := ok
		c.change(&cfg)
		if _, err := NewRunner(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error with %q", err, c.want)
		}
	}
	// Nothing reached the disk.
	if matches, _ := filepath.Glob(data); len(matches) != 0 {
		t.Errorf("the refused runner made %v", matches)
	}
}

func TestKubeRunnerID(t *testing.T) {
	long := strings.Repeat("a", 63)
	for name, want := range map[string]string{
		"k8s-1":   "runner-k8s-1",
		"Build.1": "runner-build-1-" + hashOf("Build.1"),
		"x_":      "runner-x-" + hashOf("x_"),
		long:      "runner-" + long[:24] + "-" + hashOf(long),
	} {
		got := KubeRunnerID(name)
		if got != want {
			t.Errorf("KubeRunnerID(%q) = %q, want %q", name, got, want)
		}
		if !regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`).MatchString(got) {
			t.Errorf("KubeRunnerID(%q) = %q: not a kube driver id", name, got)
		}
	}
	if KubeRunnerID("a.b") == KubeRunnerID("a_b") {
		t.Error("runners a.b and a_b share a kube id")
	}
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
