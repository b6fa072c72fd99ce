package app

import (
	"context"
	"path/filepath"
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
