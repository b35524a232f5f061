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
	// Count and Sum are of every answer since the worker started.
	Count uint64
	Sum   time.Duration
}

// WatchProcess registers the worker's process series, read from read at
// every scrape. The supervisor has process_* series of its own, so these
// carry the amexd_worker_ prefix.
func (w *Worker) WatchProcess(read func() ProcessStats) {
	gauge := func(name, help string, labels prometheus.Labels, pick func(ProcessStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return pick(read()) })
	}
	w.registry.MustRegister(
		gauge("amexd_worker_resident_memory_bytes", "Resident memory of the worker process.", nil,
			func(s ProcessStats) float64 { return float64(s.RSSBytes) }),
		gauge("amexd_worker_memory_limit_bytes", "The worker's Go memory limit (GOMEMLIMIT); 0 when unset.", nil,
			func(s ProcessStats) float64 { return float64(s.MemoryLimit) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "amexd_worker_cpu_seconds_total", Help: "CPU time of the worker process, user and system."},
			func() float64 { return read().CPUSeconds }),
		latencySummary{read: read, desc: prometheus.NewDesc("amexd_worker_request_duration_last_minute_seconds",
			"Answer time of the requests: quantiles of the last minute, count and sum since the worker started.", nil, nil)},
	)
}

// latencySummary exposes the worker's latency window as a summary: its
// quantiles cover the last minute, as client_golang's own summaries cover
// their MaxAge, while count and sum are totals, so rate() works on them.
type latencySummary struct {
	read func() ProcessStats
	desc *prometheus.Desc
}

func (l latencySummary) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l latencySummary) Collect(ch chan<- prometheus.Metric) {
	s := l.read()
	ch <- prometheus.MustNewConstSummary(l.desc, s.Count, s.Sum.Seconds(),
		map[float64]float64{0.5: s.P50.Seconds(), 0.99: s.P99.Seconds()})
}
