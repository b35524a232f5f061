package worker

import (
	"math"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/prometheus/procfs"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/metrics"
)

// observe feeds the per-worker figures with one answered request: the
// latency window and the count of 5xx answers. It runs on every request,
// so it stays this small.
func (a *App) observe(end time.Time, d time.Duration, status int) {
	a.latency.Observe(end, d)
	if status >= http.StatusInternalServerError {
		a.serverErrors.Add(1)
	}
}

// ServerErrors is the number of answers with a 5xx status so far.
func (a *App) ServerErrors() uint64 { return a.serverErrors.Load() }

// Latency sums up the answer times of the last minute.
func (a *App) Latency(now time.Time) control.Latency {
	n, p50, p99 := a.latency.Quantiles(now)
	return control.Latency{Count: n, P50Ms: ms(p50), P99Ms: ms(p99)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// probeAddr is the remote address of the liveness probe's requests, which
// the access log neither counts nor writes.
const probeAddr = "amexd-probe"

// Probe serves GET /healthz through the whole middleware chain, in this
// process, and returns once it is answered: proof that the request path
// can answer, which a heartbeat goroutine alone is not.
func (a *App) Probe() {
	req, err := http.NewRequest(http.MethodGet, "/healthz", nil)
	if err != nil {
		panic(err) // a constant request cannot fail to build
	}
	req.RemoteAddr = probeAddr
	a.echo.ServeHTTP(&probeWriter{header: http.Header{}}, req)
}

// probeWriter takes a probe's answer and drops it.
type probeWriter struct{ header http.Header }

func (p *probeWriter) Header() http.Header         { return p.header }
func (p *probeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (p *probeWriter) WriteHeader(int)             {}

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
