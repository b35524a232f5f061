package supervisor

import (
	"fmt"
	"strings"
	"time"
)

// watchSlots clears degraded marks of slots that served long enough,
// updates the gauges, and ends the supervisor after an outage longer than
// the limit.
func (o *owner) watchSlots(now time.Time) {
	o.clearDegraded(now)
	serving, degraded := 0, 0
	for _, sl := range o.slots {
		if sl.serving() {
			serving++
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
		switch p := sl.cur; {
		case p == nil:
			reasons = append(reasons, fmt.Sprintf("slot %d: no worker", sl.index))
		case !p.is(stateReady):
			reasons = append(reasons, fmt.Sprintf("slot %d: worker %d is %s", sl.index, p.pid, p.state))
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

// notifyReady tells systemd READY=1 once every slot has a ready worker.
func (o *owner) notifyReady() {
	if o.readySent || o.shutting {
		return
	}
	if ok, _ := o.health(); !ok {
		return
	}
	o.readySent = true
	o.log.Info("supervisor: all workers ready", "after", time.Since(o.started).Round(time.Millisecond).String())
	o.notify.send("READY=1")
}

// feedWatchdog sends WATCHDOG=1 at half the interval systemd asked for
// while at least one slot serves: a degraded slot must not get the healthy
// ones restarted with it, and a total outage is handled by outage_limit.
func (o *owner) feedWatchdog(now time.Time) {
	if o.watchdog <= 0 || !o.readySent || now.Sub(o.lastWatchdog) < o.watchdog/2 || !o.anyServing() {
		return
	}
	o.lastWatchdog = now
	o.notify.send("WATCHDOG=1")
}
