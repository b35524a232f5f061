package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// operatorHandler answers the operator API (internal/operator). Every
// answer about slots and workers is a snapshot taken by the owner loop.
func (s *Supervisor) operatorHandler() http.Handler {
	mux := http.NewServeMux()
	operator.Handle(mux, operator.GetStatus, func(*http.Request, operator.None) (operator.Status, error) {
		return ownerAnswer(s, (*owner).status)
	})
	operator.Handle(mux, operator.GetWorkers, func(*http.Request, operator.None) (operator.Workers, error) {
		return ownerAnswer(s, func(o *owner) operator.Workers { return operator.Workers{Workers: o.workers()} })
	})
	operator.Handle(mux, operator.GetBreakers, func(*http.Request, operator.None) (control.ClusterStatus, error) {
		return ownerAnswer(s, (*owner).clusterStatus)
	})
	operator.Handle(mux, operator.GetHealth, func(*http.Request, operator.None) (operator.Health, error) {
		return ownerAnswer(s, (*owner).healthReport)
	})
	mux.HandleFunc("GET "+operator.PathMetrics, s.serveMetrics)
	mux.HandleFunc("GET "+operator.PathProfile, s.serveProfile)
	operator.Handle(mux, operator.PostReload, func(r *http.Request, _ operator.None) (operator.Reloaded, error) {
		began := time.Now()
		gen, err := s.Reload(r.Context())
		if err != nil {
			return operator.Reloaded{}, jobError(err)
		}
		return operator.Reloaded{Generation: gen, DurationMs: time.Since(began).Milliseconds()}, nil
	})
	// The answer goes out before the re-execution, which closes its
	// connection: the handler writes it, then lets the loop re-execute.
	mux.HandleFunc(operator.PostUpgrade.String(), func(w http.ResponseWriter, r *http.Request) {
		up, err := s.Upgrade(r.Context())
		if err != nil {
			operator.WriteError(w, jobError(err))
			return
		}
		body, err := json.MarshalIndent(up, "", "  ")
		if err != nil {
			operator.WriteError(w, fmt.Errorf("encode upgrade answer: %w", err))
			return
		}
		body = append(body, '\n')
		// With its length known, the answer is complete once flushed.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		_ = http.NewResponseController(w).Flush()
		s.in.tell(func(o *owner) { o.execNow() })
	})
	operator.Handle(mux, operator.PostBreakersReset, func(r *http.Request, in operator.BreakerReset) (operator.BreakersReset, error) {
		if q := r.URL.Query().Get("name"); q != "" {
			in.Name = q
		}
		var names []string
		if in.Name != "" {
			names = []string{in.Name}
		}
		return ownerAnswer(s, func(o *owner) operator.BreakersReset {
			return operator.BreakersReset{Reset: o.resetBreakers(names), Workers: len(o.live(nil))}
		})
	})
	operator.Handle(mux, operator.PostScale, func(r *http.Request, in operator.Scale) (operator.Scaled, error) {
		began := time.Now()
		if err := s.Scale(r.Context(), in.Workers); err != nil {
			return operator.Scaled{}, jobError(err)
		}
		return operator.Scaled{Workers: in.Workers, DurationMs: time.Since(began).Milliseconds()}, nil
	})
	operator.Handle(mux, operator.PostCachePurge, func(r *http.Request, _ operator.None) (operator.Purged, error) {
		return s.purge(r.Context())
	})
	return mux
}

// purge empties the shared cache tier, when there is one, and then every
// worker's cache: in that order, so that no worker refills from the tier
// what it has just dropped. The workers are purged even when the tier
// cannot be; the answer is then an error that says both.
func (s *Supervisor) purge(ctx context.Context) (operator.Purged, error) {
	cfg, ok := ask(s.in, func(o *owner) config.Config { return o.cfg })
	if !ok {
		return operator.Purged{}, operator.WithStatus(http.StatusServiceUnavailable, errShuttingDown)
	}
	var sharedErr error
	shared, err := cfg.Cache.OpenShared(&s.redis, cfg.CacheRedis(), s.log)
	switch {
	case err != nil:
		sharedErr = err
	case shared != nil:
		sharedErr = shared.Purge(ctx, time.Now())
	}
	out, err := ownerAnswer(s, func(o *owner) operator.Purged { return operator.Purged{Workers: o.purge()} })
	if err != nil {
		return out, err
	}
	if sharedErr != nil {
		return out, operator.WithStatus(http.StatusBadGateway,
			fmt.Errorf("purged the cache of %d workers, but not the shared tier in Redis: %w", out.Workers, sharedErr))
	}
	out.Shared = shared != nil
	s.log.Info("supervisor: cache purged", "workers", out.Workers, "shared_tier", out.Shared)
	return out, nil
}

// ownerAnswer runs f in the owner loop; once the loop has ended the
// supervisor is going away and says so.
func ownerAnswer[T any](s *Supervisor, f func(*owner) T) (T, error) {
	v, ok := ask(s.in, f)
	if !ok {
		return v, operator.WithStatus(http.StatusServiceUnavailable, errShuttingDown)
	}
	return v, nil
}

// jobError gives a reload's or upgrade's error its status: 409 when another
// runs, 400 when refused before anything changed, 503 when shutting down.
func jobError(err error) error {
	switch {
	case errors.Is(err, ErrReloadInProgress):
		return operator.WithStatus(http.StatusConflict, err)
	case errors.Is(err, ErrRefused), errors.Is(err, ErrUpgradeRefused), errors.Is(err, errScale):
		return operator.WithStatus(http.StatusBadRequest, err)
	case errors.Is(err, ErrRolledBack):
		return operator.WithStatus(http.StatusUnprocessableEntity, err)
	case errors.Is(err, errShuttingDown):
		return operator.WithStatus(http.StatusServiceUnavailable, err)
	}
	return err
}

// healthReport is the answer to GET /health.
func (o *owner) healthReport() operator.Health {
	ok, reason := o.health()
	h := operator.Health{Healthy: ok, Slots: len(o.slots), Reason: reason}
	for _, sl := range o.slots {
		if sl.serving() {
			h.Serving++
		}
	}
	return h
}

// status is the answer to GET /status.
func (o *owner) status() operator.Status {
	ok, reason := o.health()
	st := operator.Status{
		PID: os.Getpid(), Version: version(), StartedAt: o.started,
		UptimeSeconds: time.Since(o.started).Seconds(), Generation: o.gen,
		Execs: o.execs, ExecError: o.execErr,
		Healthy: ok, Reason: reason, Config: o.cfg.Summary(), Workers: o.workers(),
		RateLimit:   o.rateLimitStatus(),
		Idempotency: o.idempotencyStatus(),
	}
	if len(o.listeners) > 0 {
		st.Listen = o.listeners[0].Addr
	}
	return st
}

// workers describes each slot's current worker.
func (o *owner) workers() []operator.WorkerInfo {
	out := make([]operator.WorkerInfo, 0, len(o.slots))
	for _, sl := range o.slots {
		wi := operator.WorkerInfo{Slot: sl.index, State: "down", Generation: sl.gen, Restarts: sl.restarts, Degraded: sl.degraded, QueueDepth: -1, QueueBacklog: -1}
		if p := sl.cur; p != nil {
			wi.PID, wi.State, wi.Generation = p.pid, p.state.String(), p.gen
			wi.UptimeSeconds = time.Since(p.started).Seconds()
			wi.LastHeartbeat = p.lastBeat
			wi.Requests, wi.Inflight = p.stats.Requests, p.stats.Inflight
			wi.Cache, wi.LimiterRejections = p.stats.Cache, p.stats.LimiterRejections
			pr := p.stats.Process
			wi.RSSBytes, wi.CPUSeconds, wi.P50Ms, wi.P99Ms = pr.RSSBytes, pr.CPUSeconds, pr.Latency.P50Ms, pr.Latency.P99Ms
			wi.Errors = p.stats.Errors
			wi.AccessLogDropped = p.stats.AccessLogDropped
		}
		if r := sl.last; r != nil {
			wi.LastReplacement = &operator.Replacement{Reason: r.reason, PID: r.pid, At: r.at}
		}
		if depth, backlog, err := o.listeners[sl.index].Queue(); err == nil {
			wi.QueueDepth, wi.QueueBacklog = int64(depth), int64(backlog)
		}
		out = append(out, wi)
	}
	return out
}
