package sandbox

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/machine"
)

// readySignal closes ready on the first write.
type readySignal struct{ ready chan struct{} }

func (r *readySignal) Write(p []byte) (int, error) {
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
	return len(p), nil
}

// BenchmarkStartDestroy measures a machine's life: from Start to the
// builder's first output (start-ms), and Destroy of the running machine
// (destroy-ms). It reports medians and 90th percentiles; ns/op is the whole
// cycle.
func BenchmarkStartDestroy(b *testing.B) {
	d := newTestDriver(b, nil)
	var starts, destroys []time.Duration
	ctx := context.Background()
	for b.Loop() {
		out := &readySignal{ready: make(chan struct{})}
		t0 := time.Now()
		m, err := d.Start(ctx, machine.Spec{
			Image:   testImage(b),
			Name:    "bench",
			Builder: "/bin/sh",
			Args:    []string{"-c", "echo ready; exec sleep 1000"},
			Output:  out,
		})
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-out.ready:
		case <-time.After(10 * time.Second):
			m.Destroy(ctx)
			b.Fatal("the builder wrote nothing")
		}
		t1 := time.Now()
		if err := m.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
		starts = append(starts, t1.Sub(t0))
		destroys = append(destroys, time.Since(t1))
	}
	b.ReportMetric(percentile(starts, 50), "start-ms")
	b.ReportMetric(percentile(starts, 90), "start-p90-ms")
	b.ReportMetric(percentile(destroys, 50), "destroy-ms")
	b.ReportMetric(percentile(destroys, 90), "destroy-p90-ms")
}

// percentile returns the p-th percentile of ds in milliseconds.
func percentile(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)-1)*p/100]) / float64(time.Millisecond)
}
