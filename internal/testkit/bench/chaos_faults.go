package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/simulator"
)

// Fault names one fault the chaos runner injects under load.
type Fault string

// The faults RunFault knows.
const (
	// FaultKill sends SIGKILL to a random ready worker every ChaosConfig.Every.
	FaultKill Fault = "kill"
	// FaultReload asks the supervisor for a rolling reload every
	// ChaosConfig.Every, the next one starting when the last is done.
	FaultReload Fault = "reload"
	// FaultUpstreamDown stops the upstream's server for ChaosConfig.Duration
	// and starts it again on the same port.
	FaultUpstreamDown Fault = "upstream-down"
	// FaultUpstreamSlow makes getEventById take ChaosConfig.SlowDelay, longer
	// than the upstream timeout of ChaosDaemonArgs, for ChaosConfig.Duration,
	// and purges amexd's caches as it starts: events never change, so with
	// them cached the slowness would never reach amexd.
	FaultUpstreamSlow Fault = "upstream-slow"
	// FaultAddEventCycle runs the original mock's addEvent cycle (5 successes,
	// then 10 failures) for ChaosConfig.Duration, with writes at
	// ChaosConfig.CycleWriteRate.
	FaultAddEventCycle Fault = "addevent-cycle"
)

// AllFaults lists every fault in the order a full chaos run applies them.
func AllFaults() []Fault {
	return []Fault{FaultKill, FaultReload, FaultUpstreamDown, FaultUpstreamSlow, FaultAddEventCycle}
}

// ChaosSimConfig returns the simulator knobs a chaos run starts from:
// getEventById answers after 20 ms, addEvent never fails and no list call
// is dropped, so that the injected fault is the only one in play.
func ChaosSimConfig() simulator.Config {
	cfg := simulator.DefaultConfig()
	cfg.EventDelay = 20 * time.Millisecond
	cfg.AddFail = 0
	cfg.ListErrorRate = 0
	return cfg
}

// ChaosDaemonArgs returns the amexd flags RunFault's faults assume, for an
// amexd whose upstream is at upstreamURL:
//   - an upstream timeout (300 ms) below the default SlowDelay, so that the
//     slow upstream is a timeout and not just latency;
//   - breakers that try the upstream again after 500 ms (at most 2 s), so
//     that recovery after the upstream returns is measured in seconds and
//     not in the production open timeouts;
//   - supervisor.healthy_after 1s, so that a slot killed again after its
//     worker served for a second restarts at once instead of with the
//     crash-loop backoff (a property of its own, not the one measured);
//   - the rate limit out of the way of a single client.
func ChaosDaemonArgs(upstreamURL string) []string {
	return []string{
		"-upstream.url", upstreamURL,
		"-upstream.timeout", "300ms",
		"-breaker.open_timeout", "500ms",
		"-breaker.max_open_timeout", "2s",
		"-supervisor.healthy_after", "1s",
		"-ratelimit.rate", "16000000-M",
	}
}

// inject applies fault and returns when it ended.
func inject(ctx context.Context, fault Fault, cfg ChaosConfig, op *operator.Client, up *Upstream,
	rep *FaultReport, injections *atomic.Int64) (time.Time, error) {
	switch fault {
	case FaultKill:
		return repeat(ctx, cfg, injections, func() error { return killOne(ctx, cfg, op, rep) })
	case FaultReload:
		return repeat(ctx, cfg, injections, func() error {
			rep.Timeline.Mark("reload")
			if _, err := operator.Call(ctx, op, operator.PostReload, operator.None{}); err != nil {
				rep.Problems = append(rep.Problems, err.Error())
				rep.Timeline.Mark("reload failed")
				return nil
			}
			rep.Timeline.Mark("reload done")
			return nil
		})
	case FaultUpstreamDown:
		rep.Timeline.Mark("upstream down")
		if err := up.Stop(); err != nil {
			return time.Time{}, err
		}
		injections.Add(1) // counted once it holds, not when attempted
		held := sleepCtx(ctx, cfg.Duration)
		if err := up.Start(); err != nil {
			return time.Time{}, errors.Join(held, err)
		}
		rep.Timeline.Mark("upstream up")
		return time.Now(), held
	case FaultUpstreamSlow:
		purge := func() error {
			if _, err := operator.Call(ctx, op, operator.PostCachePurge, operator.None{}); err != nil {
				return fmt.Errorf("purge the cache: %w", err)
			}
			rep.Timeline.Mark("cache purged")
			return nil
		}
		return hold(ctx, cfg, up.Sim, rep.Timeline, "upstream slow", injections, func(c *simulator.Config) { c.EventDelay = cfg.SlowDelay }, purge)
	default: // FaultAddEventCycle, the list being checked by RunFault
		return hold(ctx, cfg, up.Sim, rep.Timeline, "addEvent failure cycle", injections, func(c *simulator.Config) {
			orig := simulator.DefaultConfig()
			c.AddOK, c.AddFail = orig.AddOK, orig.AddFail
		}, nil)
	}
}

// repeat runs one injection at once and then every cfg.Every while the
// fault lasts, and returns the time the last one ended.
func repeat(ctx context.Context, cfg ChaosConfig, injections *atomic.Int64, once func() error) (time.Time, error) {
	began := time.Now()
	var end time.Time
	for next := began; next.Sub(began) < cfg.Duration; next = next.Add(cfg.Every) {
		if err := sleepCtx(ctx, time.Until(next)); err != nil {
			return end, err
		}
		injections.Add(1)
		if err := once(); err != nil {
			return end, err
		}
		end = time.Now()
	}
	return end, nil
}

// hold changes the simulator's knobs with edit for cfg.Duration, then puts
// them back as they were, marking both moments on tl as what and its end.
// then, when set, runs once the knobs are changed.
func hold(ctx context.Context, cfg ChaosConfig, sim *simulator.Simulator, tl *Timeline, what string,
	injections *atomic.Int64, edit func(*simulator.Config), then func() error) (time.Time, error) {
	saved := sim.Config()
	tl.Mark(what)
	if err := sim.Update(edit); err != nil {
		return time.Time{}, fmt.Errorf("inject: %w", err)
	}
	if then != nil {
		if err := then(); err != nil {
			return time.Time{}, errors.Join(fmt.Errorf("inject: %w", err), sim.Update(func(c *simulator.Config) { *c = saved }))
		}
	}
	injections.Add(1)
	held := sleepCtx(ctx, cfg.Duration)
	if err := sim.Update(func(c *simulator.Config) { *c = saved }); err != nil {
		return time.Time{}, errors.Join(held, fmt.Errorf("restore: %w", err))
	}
	tl.Mark(what + " over")
	return time.Now(), held
}

// killOne sends SIGKILL to a random ready worker and waits for its slot to
// have a ready successor, recording how long that took.
func killOne(ctx context.Context, cfg ChaosConfig, op *operator.Client, rep *FaultReport) error {
	ws, err := workers(ctx, op)
	if err != nil {
		return err
	}
	ready := slices.DeleteFunc(ws, func(w operator.WorkerInfo) bool { return w.State != "ready" || w.PID <= 0 })
	if len(ready) == 0 {
		rep.Problems = append(rep.Problems, "kill: no ready worker to kill")
		return nil
	}
	victim := ready[rand.IntN(len(ready))]
	rep.Timeline.Mark(fmt.Sprintf("kill -9 slot %d", victim.Slot))
	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill worker %d of slot %d: %w", victim.PID, victim.Slot, err)
	}
	back := waitFor(ctx, cfg.RecoveryTimeout, func() bool {
		ws, err := workers(ctx, op)
		if err != nil {
			return false
		}
		return slices.ContainsFunc(ws, func(w operator.WorkerInfo) bool {
			return w.Slot == victim.Slot && w.PID != victim.PID && w.PID > 0 && w.State == "ready"
		})
	})
	if !back {
		rep.SlotRecovery = append(rep.SlotRecovery, -1)
		rep.Problems = append(rep.Problems, fmt.Sprintf("kill: slot %d had no ready worker %s after pid %d was killed",
			victim.Slot, cfg.RecoveryTimeout, victim.PID))
		return ctx.Err()
	}
	rep.SlotRecovery = append(rep.SlotRecovery, time.Since(killed))
	rep.Timeline.Mark(fmt.Sprintf("slot %d ready", victim.Slot))
	return nil
}
