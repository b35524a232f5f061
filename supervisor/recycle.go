package supervisor

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/amexd/amexd/internal/config"
)

// requestLimit draws a new worker's request limit: max_requests plus a
// random part of the jitter, so that slots started together do not
// recycle together; 0 when recycling on requests is off.
func requestLimit(sc config.Supervisor) uint64 {
	if sc.MaxRequests <= 0 {
		return 0
	}
	return uint64(sc.MaxRequests + rand.IntN(sc.MaxRequestsJitter+1))
}

// recycleReason says why p is due for recycling, or "" when it is not. A
// worker is recycled no sooner than healthy_after after it got ready, so
// that workers which start above max_memory recycle each slot that often
// rather than in a loop.
func recycleReason(p *proc, sc config.Supervisor, now time.Time) string {
	if !p.is(stateReady) || now.Sub(p.readyAt) < sc.HealthyAfter {
		return ""
	}
	switch {
	case p.maxRequests > 0 && p.stats.Requests >= p.maxRequests:
		return reasonRequests
	case sc.MaxMemory > 0 && p.stats.Process.RSSBytes > uint64(sc.MaxMemory):
		return reasonMemory
	}
	return ""
}

// recycleDue replaces the first worker due for recycling, through the same
// ready-before-drain path as a reload, as a job: one slot at a time, and
// never while a reload, an upgrade or a scaling runs.
func (o *owner) recycleDue(now time.Time) {
	if o.job != nil || o.shutting {
		return
	}
	for _, sl := range o.slots {
		if !sl.serving() || now.Before(sl.recycleAfter) {
			continue
		}
		p := sl.cur
		reason := recycleReason(p, sl.cfg.Supervisor, now)
		if reason == "" {
			continue
		}
		o.log.Info("supervisor: recycling worker", "slot", sl.index, "pid", p.pid, "reason", reason,
			"requests", p.stats.Requests, "request_limit", p.maxRequests, "rss_bytes", p.stats.Process.RSSBytes,
			"max_memory", sl.cfg.Supervisor.MaxMemory.String())
		o.startJob("recycle", o.off.recycleJob(sl.index, sl.cfg, sl.gen, reason), nil)
		return
	}
}

// recycleJob replaces slot's worker, due for recycling for reason, with one
// of configuration cfg and generation gen. When that fails, the old worker
// keeps serving and the slot is not recycled again for healthy_after.
func (s *Supervisor) recycleJob(slot int, cfg config.Config, gen int, reason string) func(context.Context) error {
	return func(ctx context.Context) error {
		err := s.replaceSlot(ctx, slot, cfg, gen, "", reason)
		if err != nil {
			s.log.Error("supervisor: recycling failed; the old worker keeps serving", "slot", slot, "err", err)
			s.in.tell(func(o *owner) { o.holdRecycling(slot, cfg.Supervisor.HealthyAfter) })
		}
		return err
	}
}
