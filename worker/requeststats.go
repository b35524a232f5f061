package worker

import (
	"net/http"
	"time"

	"github.com/amexd/amexd/internal/control"
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

// LatencyTotals are the count and the sum of every answer time so far.
func (a *App) LatencyTotals() (count uint64, sum time.Duration) { return a.latency.Totals() }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
