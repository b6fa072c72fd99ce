package runner

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the runner, served by `hangar server` at /metrics.
var (
	buildsRunning = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "hangar_builds_running",
		Help: "Builds that have a machine now.",
	})
	buildsEnded = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "hangar_builds_ended_total",
		Help: "Builds that ended, by final status.",
	}, []string{"status"})
	machineStart = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "hangar_machine_ready_seconds",
		Help:    "Time from claiming a build to its builder linking up.",
		Buckets: prometheus.ExponentialBuckets(0.025, 2, 10),
	})
)
