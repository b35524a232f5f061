package supervisor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/config"
)

// slot is one worker position: a listening socket and the worker serving
// it. The owner loop alone reads and writes it.
type slot struct {
	index    int
	cur      *proc
	cfg      config.Config
	gen      int
	restarts int
	backoff  time.Duration
	crashes  []time.Time
	degraded bool
	// respawnAt is when a crashed worker is started again; zero when the
	// slot needs no start.
	respawnAt time.Time
	// last is the slot's latest replacement; nil before the first.
	last *replacement
	// recycleAfter holds recycling off after a failed one.
	recycleAfter time.Time
}

// serving reports whether sl's worker is ready.
func (sl *slot) serving() bool { return sl.cur != nil && sl.cur.state == stateReady }

// crashed counts a crash of sl's worker that lived for lived and schedules
// the next start.
func (o *owner) crashed(sl *slot, lived time.Duration, now time.Time) {
	sc := sl.cfg.Supervisor
	sl.backoff = nextBackoff(sl.backoff, lived, sc.RestartMin, sc.RestartMax, sc.HealthyAfter)
	sl.restarts++
	o.metrics.restarts.WithLabelValues(strconv.Itoa(sl.index)).Inc()
	sl.crashes = append(recentOnly(sl.crashes, now, sc.HealthyAfter), now)
	if len(sl.crashes) >= sc.DegradedAfter && !sl.degraded {
		sl.degraded = true
		o.log.Error("supervisor: slot degraded", "slot", sl.index, "crashes", len(sl.crashes), "within", sc.HealthyAfter.String())
	}
	sl.respawnAt = now.Add(sl.backoff)
	o.scheduleRespawn()
}

// scheduleRespawn sets the respawn timer to the earliest restart due.
func (o *owner) scheduleRespawn() {
	var next time.Time
	for _, sl := range o.slots {
		if !sl.respawnAt.IsZero() && (next.IsZero() || sl.respawnAt.Before(next)) {
			next = sl.respawnAt
		}
	}
	if !next.IsZero() && o.respawn != nil {
		o.respawn.Reset(max(time.Until(next), 0))
	}
}

// nextBackoff is the restart delay after a crash: min first, doubling up to
// max, and min again once a worker lived healthyAfter.
func nextBackoff(prev, lived, min, max, healthyAfter time.Duration) time.Duration {
	if prev == 0 || lived >= healthyAfter {
		return min
	}
	return clamp(2*prev, min, max)
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return time.Duration(max(int64(lo), min(int64(d), int64(hi))))
}

func recentOnly(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	out := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < window {
			out = append(out, t)
		}
	}
	return out
}

// respawnDue starts the worker of every slot whose restart time came.
func (o *owner) respawnDue(now time.Time) {
	for _, sl := range o.slots {
		if sl.respawnAt.IsZero() || now.Before(sl.respawnAt) {
			continue
		}
		sl.respawnAt = time.Time{}
		p, err := o.spawn(sl.index, sl.cfg, sl.gen, "")
		if err != nil {
			o.log.Error("supervisor: cannot start worker", "slot", sl.index, "err", err)
			o.crashed(sl, 0, now)
			continue
		}
		sl.cur = p
	}
}

// watchSlots clears degraded marks of slots that served long enough, and
// ends the supervisor after an outage longer than the limit.
func (o *owner) watchSlots(now time.Time) {
	serving, degraded := 0, 0
	for _, sl := range o.slots {
		if sl.serving() {
			serving++
			if sl.degraded && now.Sub(sl.cur.readyAt) >= sl.cfg.Supervisor.HealthyAfter {
				sl.degraded = false
				sl.crashes = nil
				o.log.Info("supervisor: slot recovered", "slot", sl.index)
			}
		}
		if sl.degraded {
			degraded++
		}
	}
	o.metrics.liveWorkers.Set(float64(len(o.procs)))
	o.metrics.degradedSlots.Set(float64(degraded))
	limit := o.cfg.Supervisor.OutageLimit
	switch {
	case serving > 0:
		o.outageSince = time.Time{}
	case o.outageSince.IsZero():
		o.outageSince = now
	case now.Sub(o.outageSince) > limit:
		o.giveUp(fmt.Errorf("no worker could serve for %s", now.Sub(o.outageSince).Round(time.Second)))
	}
}

// health reports whether every slot has a ready worker, and if not why.
func (o *owner) health() (bool, string) {
	var reasons []string
	for _, sl := range o.slots {
		switch {
		case sl.cur == nil:
			reasons = append(reasons, fmt.Sprintf("slot %d: no worker", sl.index))
		case sl.cur.state != stateReady:
			reasons = append(reasons, fmt.Sprintf("slot %d: worker %d is %s", sl.index, sl.cur.pid, sl.cur.state))
		}
		if sl.degraded {
			reasons = append(reasons, fmt.Sprintf("slot %d: degraded (%d crashes)", sl.index, len(sl.crashes)))
		}
	}
	if o.shutting {
		reasons = append(reasons, "shutting down")
	}
	return len(reasons) == 0, strings.Join(reasons, "; ")
}

// anyServing reports whether some slot has a ready worker.
func (o *owner) anyServing() bool {
	for _, sl := range o.slots {
		if sl.serving() {
			return true
		}
	}
	return false
}
