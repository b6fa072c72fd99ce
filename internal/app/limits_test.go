package app

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/build"
)

func TestClampPids(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	in := build.InstanceTypes{
		"small":     {Memory: 1 << 30, Pids: 100},
		"big":       {Memory: 2 << 30, Pids: 5000},
		"unlimited": {Memory: 2 << 30},
	}
	out := clampPids(in, 2457, 32768, 10, log)
	if out["small"].Pids != 100 || out["big"].Pids != 2457 || out["unlimited"].Pids != 2457 {
		t.Errorf("clamped: %+v", out)
	}
	if out["big"].Memory != 2<<30 || in["big"].Pids != 5000 {
		t.Errorf("clampPids changed more than pids, or its input: %+v, %+v", out, in)
	}
	if n := strings.Count(logs.String(), "pids limit lowered"); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, logs.String())
	}
}
