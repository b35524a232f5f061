package supervisor

import (
	"os"
	"time"

	"github.com/amexd/amexd/internal/operator"
	buildversion "github.com/amexd/amexd/internal/version"
)

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
			wi.PID, wi.State, wi.Generation = p.pid, p.state, p.gen
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

// version is the build's version and commit, as /status reports it.
func version() string { return buildversion.String() }
