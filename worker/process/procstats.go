package process

import (
	"math"
	"runtime/debug"
	"time"

	"github.com/prometheus/procfs"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/metrics"
)

// processFigures reads the worker process's resources from /proc and
// the latency window; a figure /proc cannot give stays zero.
func (w *Worker) processFigures() control.Process {
	out := control.Process{Latency: w.App.Latency(time.Now())}
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		out.MemoryLimit = limit
	}
	if w.proc == nil {
		return out
	}
	if st, err := w.proc.Stat(); err == nil {
		out.RSSBytes = uint64(max(st.ResidentMemory(), 0))
		out.CPUSeconds = st.CPUTime()
	}
	return out
}

// openSelf opens this process's /proc entry, or returns nil where there is
// none; the figures it gives are then left out.
func openSelf() *procfs.Proc {
	p, err := procfs.Self()
	if err != nil {
		return nil
	}
	return &p
}

// seriesOf converts the figures for the Prometheus series.
func seriesOf(p control.Process) metrics.ProcessStats {
	return metrics.ProcessStats{
		RSSBytes: p.RSSBytes, CPUSeconds: p.CPUSeconds, MemoryLimit: p.MemoryLimit,
		P50: time.Duration(p.Latency.P50Ms * float64(time.Millisecond)),
		P99: time.Duration(p.Latency.P99Ms * float64(time.Millisecond)),
	}
}
