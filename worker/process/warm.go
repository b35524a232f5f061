package process

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/control"
)

// warmStart is a worker's side of the warm start it receives. The import
// begins when the worker is built, before it can apply any invalidation,
// so that an invalidation that arrives during the transfer wins.
type warmStart struct {
	im      *cache.Import
	log     *slog.Logger
	started time.Time
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	stats cache.ImportStats
}

func newWarmStart(c *cache.Cache, log *slog.Logger) *warmStart {
	return &warmStart{im: c.BeginImport(), log: log, started: time.Now(), done: make(chan struct{})}
}

// Export sends the hot entries of the worker's cache to a new worker.
func (w *Worker) Export(req, batch control.ExportRequest, send func([]control.CacheEntry) error) (int, int64, error) {
	lim := cache.ExportLimits{Entries: req.MaxEntries, Bytes: req.MaxBytes}
	per := cache.ExportLimits{Entries: batch.MaxEntries, Bytes: batch.MaxBytes}
	return w.cache.Export(lim, per, func(ws []cache.Warm) error {
		out := make([]control.CacheEntry, len(ws))
		for i, e := range ws {
			out[i] = control.CacheEntry{Key: e.Key, Body: e.Body, Fresh: e.FreshFor, Stale: e.StaleFor, Age: e.Age}
		}
		return send(out)
	})
}

// Import stores a batch of the warm start's entries.
func (w *Worker) Import(entries []control.CacheEntry) {
	ws := make([]cache.Warm, len(entries))
	for i, e := range entries {
		ws[i] = cache.Warm{Key: e.Key, Body: e.Body, FreshFor: e.Fresh, StaleFor: e.Stale, Age: e.Age}
	}
	w.warm.mu.Lock()
	defer w.warm.mu.Unlock()
	before := w.warm.stats
	w.warm.im.Add(ws, &w.warm.stats)
	w.series.WarmStart(w.warm.stats.Stored-before.Stored, w.warm.stats.Superseded-before.Superseded, w.warm.stats.Refused-before.Refused)
}

// Warmed ends the warm start: the worker may serve.
func (w *Worker) Warmed(t control.Transfer, failure string) {
	w.warm.mu.Lock()
	st := w.warm.stats
	w.warm.mu.Unlock()
	attrs := []any{"from", t.From, "sent", t.Entries, "bytes", t.Bytes, "stored", st.Stored,
		"superseded", st.Superseded, "refused", st.Refused, "after", time.Since(w.warm.started).Round(time.Millisecond).String()}
	if failure != "" {
		w.warm.log.Warn("warm start incomplete", append(attrs, "err", failure)...)
	} else {
		w.warm.log.Info("warm start", attrs...)
	}
	w.warm.once.Do(func() { close(w.warm.done) })
}

// awaitWarm waits for the warm start to end, for at most timeout or until
// ctx ends; a worker that waited in vain serves with what it received.
func (w *Worker) awaitWarm(ctx context.Context, timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.warm.done:
	case <-ctx.Done():
	case <-t.C:
		w.warm.mu.Lock()
		st := w.warm.stats
		w.warm.mu.Unlock()
		w.warm.log.Warn("warm start not finished in time; serving with what arrived", "timeout", timeout.String(), "stored", st.Stored)
	}
}
