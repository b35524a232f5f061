package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/procfs"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/metrics"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/upstream"
	"github.com/amexd/amexd/worker"
)

// Options are what a worker gets from its surroundings rather than from the
// configuration.
type Options struct {
	Slot, PID int
	Log       *slog.Logger
	// Shared is the supervisor's rate-limit table, for ratelimit.store shared.
	Shared *os.File
	// Idempotency is the supervisor's idempotency table; without it (and
	// without Redis) the worker keeps keys in a table of its own.
	Idempotency *os.File
	// Control is the channel to the supervisor; nil when running alone.
	Control *control.Worker
	// AccessOut is where access lines go, buffered, when log.access is on
	// and log.access_file is not set (the worker process passes stderr).
	// When nil, they go through Log, unbuffered.
	AccessOut io.Writer
}

// Worker is a built worker: the application and the parts the control
// channel acts on.
type Worker struct {
	App      *worker.App
	Catalog  *catalog.Catalog
	Upstream *upstream.Client
	series   *metrics.Worker
	cache    *cache.Cache
	warm     *warmStart
	proc     *procfs.Proc
	idem     idempotency.Store
	// redis holds the worker's Redis clients: one per server, shared by
	// the tiers that use it.
	redis  *redisconn.Clients
	access *logging.AccessLog
	// accessFile is log.access_file, opened by the worker.
	accessFile *logging.File
}

// Build assembles a worker's cache, upstream client, catalog, limiter and
// application from cfg. Close releases them.
func Build(ctx context.Context, cfg config.Config, o Options) (*Worker, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	w := &Worker{redis: &redisconn.Clients{}}
	cacheOpts := []cache.Option{cache.WithStaleOn(catalog.ServesStale)}
	shared, err := cfg.Cache.OpenShared(w.redis, cfg.CacheRedis(), o.Log)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("build shared cache tier: %w", err)
	}
	if shared != nil {
		cacheOpts = append(cacheOpts, cache.WithShared(shared))
	}
	c, err := cache.New(cfg.Cache, cacheOpts...)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("build cache: %w", err)
	}
	w.cache = c
	w.warm = newWarmStart(c, o.Log)
	w.proc = openSelf()
	w.series = metrics.NewWorker(func() metrics.CacheStats { return metrics.CacheStats(w.cacheStats()) })
	w.series.WatchProcess(func() metrics.ProcessStats {
		s := seriesOf(w.processFigures())
		s.Count, s.Sum = w.App.LatencyTotals()
		return s
	})
	onChange := func(name, from, to string, forced bool) {
		if o.Control != nil {
			if err := o.Control.ReportBreaker(name, from, to, forced); err != nil {
				o.Log.Warn("report breaker change", "breaker", name, "err", err)
			}
		}
	}
	up, err := upstream.New(cfg.Upstream, cfg.Breaker,
		upstream.WithLogger(o.Log), upstream.WithObserver(w.series), upstream.WithOnStateChange(onChange))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("build upstream client: %w", err)
	}
	w.Upstream = up
	for _, b := range up.Breakers() {
		w.series.BreakerState(b.Name, b.State)
	}
	catOpts := []catalog.Option{catalog.WithLogger(o.Log)}
	if o.Control != nil {
		ctl := o.Control
		catOpts = append(catOpts, catalog.WithInvalidator(ctl.Invalidate), catalog.WithSharer(func(key string, body []byte) {
			ctl.Share([]control.SharedEntry{{Key: key, Body: body}})
		}))
	}
	w.Catalog = catalog.New(c, up, cfg.Fanout, catOpts...)
	limitOpts := []ratelimit.Option{ratelimit.WithLogger(o.Log)}
	if cfg.RateLimit.Store == ratelimit.StoreRedis {
		rdb, err := w.redis.Get(cfg.Redis)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("build rate limiter: %w", err)
		}
		limitOpts = append(limitOpts, ratelimit.WithRedis(rdb))
	}
	store, err := ratelimit.NewStore(ctx, cfg.RateLimit, o.Shared, limitOpts...)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("build rate limiter: %w", err)
	}
	if rs, ok := store.(*ratelimit.RedisStore); ok {
		w.series.ObserveRedisStore(rs.RedisFailures, rs.Degraded)
	}
	w.idem, err = idempotencyStore(cfg, o.Idempotency, w.redis)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("build idempotency store: %w", err)
	}
	if cfg.Log.Access {
		if err := w.openAccessLog(cfg.Log, o); err != nil {
			w.Close()
			return nil, fmt.Errorf("build access log: %w", err)
		}
	}
	deps := worker.Deps{
		Catalog:     w.Catalog,
		Limiter:     store,
		Idempotency: w.idem,
		Metrics:     w.series,
		Breakers:    up.Breakers,
		Ready:       up.Reachable,
		Log:         o.Log,
		Access:      w.access,
		Slot:        o.Slot,
		PID:         o.PID,
	}
	if o.Control != nil {
		deps.Cluster = o.Control.Cluster
	}
	w.App, err = worker.New(cfg, deps)
	if err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// idempotencyStore opens where Idempotency-Keys live: Redis when the rate
// limit is there (several machines), else the supervisor's shared table,
// else, for a worker running alone, a table of its own.
func idempotencyStore(cfg config.Config, shared *os.File, clients *redisconn.Clients) (idempotency.Store, error) {
	switch {
	case cfg.RateLimit.Store == ratelimit.StoreRedis:
		rdb, err := clients.Get(cfg.Redis)
		if err != nil {
			return nil, err
		}
		return idempotency.NewRedis(rdb, "amexd", cfg.Idempotency,
			idempotency.Wait{Replicas: cfg.Redis.WaitReplicas, Timeout: cfg.Redis.WaitTimeout})
	case shared != nil:
		return idempotency.OpenTable(shared, cfg.Idempotency)
	}
	t, f, err := idempotency.NewTable(cfg.Idempotency)
	if err != nil {
		return nil, err
	}
	_ = f.Close() // the table keeps a descriptor of its own
	return t, nil
}

// openAccessLog starts the access log on log.access_file, o.AccessOut or
// o.Log, in that order of preference.
func (w *Worker) openAccessLog(cfg config.Log, o Options) error {
	out := o.AccessOut
	if cfg.AccessFile != "" {
		f, err := logging.OpenFile(cfg.AccessFile)
		if err != nil {
			return err
		}
		w.accessFile, out = f, f
	}
	if out == nil {
		w.access = logging.SlogAccessLog(o.Log)
		return nil
	}
	var err error
	w.access, err = logging.NewAccessLog(out, cfg.Format, cfg.AccessFlush, o.Log, slog.Int("slot", o.Slot), slog.Int("pid", o.PID))
	if err != nil {
		return err
	}
	w.series.ObserveAccessLog(w.access.Dropped)
	return nil
}

// CloseAccessLog writes out the access lines still buffered and stops the
// log's flusher; call it once the server has stopped. It reports a write
// error the log met since its last flush.
func (w *Worker) CloseAccessLog() error {
	var err error
	if w.access != nil {
		err = w.access.Close()
	}
	if w.accessFile != nil {
		err = errors.Join(err, w.accessFile.Close())
		w.accessFile = nil
	}
	return err
}

// Close releases the worker's resources, the access log included.
func (w *Worker) Close() {
	_ = w.CloseAccessLog()
	if w.Upstream != nil {
		w.Upstream.Close()
	}
	if w.cache != nil {
		_ = w.cache.Close()
	}
	if w.idem != nil {
		_ = w.idem.Close()
	}
	if w.redis != nil {
		_ = w.redis.Close()
	}
}
