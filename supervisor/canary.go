package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// ErrRolledBack marks a reload or upgrade whose canary did worse than the
// old workers and was put back on the old configuration and binary.
var ErrRolledBack = errors.New("rolled back")

// Canary thresholds: the canary must have answered canaryMinRequests to be
// judged on its 5xx rate, and is worse when that rate exceeds the old
// workers' by canaryMargin.
const (
	canaryMinRequests = 5
	canaryMargin      = 0.05
)

// counts is what a canary is judged on, summed over workers.
type counts struct {
	requests, errors, opens uint64
	workers                 int
}

func countsOf(st control.Stats) counts {
	c := counts{requests: st.Requests, errors: st.Errors, workers: 1}
	for _, b := range st.Breakers {
		c.opens += b.Opens
	}
	return c
}

func (c counts) minus(base counts) counts {
	return counts{requests: c.requests - min(base.requests, c.requests), errors: c.errors - min(base.errors, c.errors),
		opens: c.opens - min(base.opens, c.opens), workers: c.workers}
}

func (c counts) rate() float64 {
	if c.requests == 0 {
		return 0
	}
	return float64(c.errors) / float64(c.requests)
}

// sample is slot 0's worker (the canary) and the others' counts.
func (o *owner) sample() (canary *proc, cc, old counts) {
	for _, sl := range o.slots {
		p := sl.cur
		if p == nil {
			continue
		}
		c := countsOf(p.stats)
		if sl.index == 0 {
			canary, cc = p, c
			continue
		}
		old.requests, old.errors, old.opens = old.requests+c.requests, old.errors+c.errors, old.opens+c.opens
		old.workers++
	}
	return canary, cc, old
}

// canary watches slot 0's new worker for d against the old workers, from
// their heartbeats. When its 5xx rate or its breaker openings (per worker)
// are worse, slot 0 goes back to the old configuration and generation, on
// the running binary, and the job (what: "reload" or "upgrade") ends with
// ErrRolledBack.
func (s *Supervisor) canary(ctx context.Context, what string, d time.Duration, old config.Config, oldGen int) error {
	type snap struct {
		p       *proc
		cc, old counts
	}
	take := func() (snap, bool) {
		return ask(s.in, func(o *owner) snap {
			p, cc, old := o.sample()
			return snap{p, cc, old}
		})
	}
	base, ok := take()
	if !ok {
		return errShuttingDown
	}
	s.log.Info("supervisor: canary watching slot 0", "pid", base.p.pid, "for", d.String())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	end, ok := take()
	if !ok {
		return errShuttingDown
	}
	cc, oc := end.cc.minus(base.cc), end.old.minus(base.old)
	why := verdict(cc, oc)
	if why == "" {
		s.log.Info("supervisor: canary passed", "pid", end.p.pid, "requests", cc.requests, "errors", cc.errors, "breaker_opens", cc.opens,
			"old_requests", oc.requests, "old_errors", oc.errors, "old_breaker_opens", oc.opens)
		return nil
	}
	s.log.Error("supervisor: canary failed; rolling back", "pid", end.p.pid, "why", why)
	if err := s.replaceSlot(ctx, 0, old, oldGen, "", reasonRollback); err != nil {
		return fmt.Errorf("%s %w incompletely: canary slot 0 %s; putting the old worker back failed: %w", what, ErrRolledBack, why, err)
	}
	ask(s.in, func(o *owner) bool {
		o.cfg, o.gen = old, oldGen
		return true
	})
	return fmt.Errorf("%s %w: canary slot 0 %s", what, ErrRolledBack, why)
}

// verdict says how the canary did worse than the old workers, or "".
func verdict(canary, old counts) string {
	perWorker := func(c counts) float64 { return float64(c.opens) / float64(max(c.workers, 1)) }
	switch {
	case canary.requests >= canaryMinRequests && canary.rate() > old.rate()+canaryMargin:
		return fmt.Sprintf("answered %d of %d requests with a 5xx (%.0f%%), the old workers %d of %d (%.0f%%)",
			canary.errors, canary.requests, 100*canary.rate(), old.errors, old.requests, 100*old.rate())
	case perWorker(canary) > perWorker(old):
		return fmt.Sprintf("opened %d circuit breakers, the old workers %.1f each", canary.opens, perWorker(old))
	}
	return ""
}
