package process

import (
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/worker"
)

// Invalidate drops keys a sibling's write made stale.
func (w *Worker) Invalidate(keys []string) { w.Catalog.Forget(keys) }

// Share keeps the events a sibling fetched.
func (w *Worker) Share(entries []control.SharedEntry) {
	for _, e := range entries {
		w.Catalog.Keep(e.Key, e.Body)
	}
}

// ForceBreaker sets a breaker's state on the supervisor's order.
func (w *Worker) ForceBreaker(name, state string) {
	if b := w.Upstream.Breaker(name); b != nil {
		_ = b.ForceState(state)
	}
}

// cacheStats is the cache's counters in the shape the supervisor and the
// metrics both read.
func (w *Worker) cacheStats() control.CacheStats {
	s := w.cache.Stats()
	return control.CacheStats{Hits: s.Hits, Misses: s.Misses, Stale: s.Stale, Evictions: s.Evictions, Entries: uint64(s.Entries)}
}

// Purge empties the cache.
func (w *Worker) Purge() { w.Catalog.Purge() }

// Stats reports the worker's counters for heartbeats.
func (w *Worker) Stats() control.Stats {
	return control.Stats{
		Requests:          w.App.Requests(),
		Errors:            w.App.ServerErrors(),
		Cache:             w.cacheStats(),
		Breakers:          worker.BreakerStats(w.Upstream.Breakers()),
		LimiterRejections: w.App.Rejections(),
		Inflight:          w.App.Inflight(),
		Process:           w.processFigures(),
		AccessLogDropped:  w.accessDropped(),
	}
}

// accessDropped is how many access lines failed writes dropped; 0
// without an access log.
func (w *Worker) accessDropped() uint64 {
	if w.access == nil {
		return 0
	}
	return w.access.Dropped()
}

// Probe answers a request through the worker's HTTP handlers.
func (w *Worker) Probe() { w.App.Probe() }

// Metrics renders the worker's series for the supervisor.
func (w *Worker) Metrics() []byte {
	b, err := w.series.Exposition()
	if err != nil {
		return nil
	}
	return b
}

// handler is the worker's side of the control channel.
type handler struct {
	*Worker
	drain func()
}

func (h handler) Drain() { h.drain() }
