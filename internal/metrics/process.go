package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProcessStats is what a worker reads of its own process for its series.
type ProcessStats struct {
	RSSBytes    uint64
	CPUSeconds  float64
	MemoryLimit int64
	// P50 and P99 are of the answers of the last minute.
	P50, P99 time.Duration
}

// WatchProcess registers the worker's process series, read from read at
// every scrape. The supervisor has process_* series of its own, so these
// carry the amexd_worker_ prefix.
func (w *Worker) WatchProcess(read func() ProcessStats) {
	gauge := func(name, help string, labels prometheus.Labels, pick func(ProcessStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return pick(read()) })
	}
	const latency = "amexd_worker_request_duration_last_minute_seconds"
	const latencyHelp = "Answer time of the requests of the last minute, by quantile."
	w.registry.MustRegister(
		gauge("amexd_worker_resident_memory_bytes", "Resident memory of the worker process.", nil,
			func(s ProcessStats) float64 { return float64(s.RSSBytes) }),
		gauge("amexd_worker_memory_limit_bytes", "The worker's Go memory limit (GOMEMLIMIT); 0 when unset.", nil,
			func(s ProcessStats) float64 { return float64(s.MemoryLimit) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "amexd_worker_cpu_seconds_total", Help: "CPU time of the worker process, user and system."},
			func() float64 { return read().CPUSeconds }),
		gauge(latency, latencyHelp, prometheus.Labels{"quantile": "0.5"}, func(s ProcessStats) float64 { return s.P50.Seconds() }),
		gauge(latency, latencyHelp, prometheus.Labels{"quantile": "0.99"}, func(s ProcessStats) float64 { return s.P99.Seconds() }),
	)
}
