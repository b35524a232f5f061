package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/config"
)

// runJob starts a job from outside the loop and waits for its result.
func (s *Supervisor) runJob(ctx context.Context, kind string, run func(context.Context) error) error {
	done := make(chan error, 1)
	if _, ok := ask(s.in, func(o *owner) bool { o.startJob(kind, run, done); return true }); !ok {
		return errShuttingDown
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// replaceSlot starts a worker of generation gen from binary ("" for the
// supervisor's own) in slot, waits until it is ready, then drains the
// worker it replaces and waits for that one to exit. why is logged.
func (s *Supervisor) replaceSlot(ctx context.Context, slot int, cfg config.Config, gen int, binary, why string) error {
	type started struct {
		p   *proc
		err error
	}
	st, ok := ask(s.in, func(o *owner) started {
		p, err := o.spawn(slot, cfg, gen, binary)
		return started{p, err}
	})
	switch {
	case !ok:
		return errShuttingDown
	case st.err != nil:
		return st.err
	}
	p := st.p
	t := time.NewTimer(cfg.Supervisor.ReadyTimeout)
	defer t.Stop()
	var fail error
	select {
	case <-p.ready:
	case <-p.exited:
		fail = fmt.Errorf("new worker %d exited before it was ready: %s", p.pid, exitStatus(p.exitErr))
	case <-t.C:
		fail = fmt.Errorf("new worker %d not ready within %s", p.pid, cfg.Supervisor.ReadyTimeout)
	case <-ctx.Done():
		fail = ctx.Err()
	}
	if fail != nil {
		s.in.tell(func(*owner) { _ = p.process.Kill() })
		select {
		case <-p.exited:
		case <-s.in.done:
		}
		return fail
	}
	// Whether the old worker still runs is the loop's to say: its state
	// changes on the loop while this job runs.
	type current struct {
		p    *proc
		live bool
	}
	cur, _ := ask(s.in, func(o *owner) current {
		p := o.worker(slot)
		return current{p, p != nil && !p.is(stateExited)}
	})
	old := cur.p
	if cur.live {
		// The last counts of the old worker carry over to its successor.
		s.collectSlot(ctx, old)
	}
	installed, ok := ask(s.in, func(o *owner) bool { return o.install(slot, p, why) })
	if !ok || !installed {
		return errShuttingDown
	}
	if old != nil {
		select {
		case <-old.exited:
		case <-s.in.done:
		}
	}
	return nil
}

// ErrRefused marks a reload refused before any worker was touched: the new
// configuration is invalid or changes what a reload cannot change.
var ErrRefused = errors.New("reload refused")

// Reload re-reads the configuration and replaces the workers slot by slot
// (see replaceSlot), and returns the new generation. An invalid
// configuration returns an error wrapping ErrRefused and leaves the
// workers alone; a worker that fails to get ready stops the reload there,
// leaving the slots already replaced on the new configuration and the
// others on the old one.
func (s *Supervisor) Reload(ctx context.Context) (int, error) {
	var gen int
	err := s.runJob(ctx, "reload", func(ctx context.Context) error {
		var err error
		gen, err = s.reload(ctx)
		return err
	})
	return gen, err
}

// reloadJob is the reload a SIGHUP starts.
func (s *Supervisor) reloadJob(ctx context.Context) error {
	_, err := s.reload(ctx)
	return err
}

// reload is the reload job; it returns the new generation.
func (s *Supervisor) reload(ctx context.Context) (int, error) {
	began := time.Now()
	gen, err := s.reloadSteps(ctx)
	switch {
	case errors.Is(err, ErrRefused):
		s.metrics.reloads.WithLabelValues("refused").Inc()
		s.log.Error("supervisor: reload refused, workers untouched", "err", err)
	case err != nil:
		s.metrics.reloads.WithLabelValues("failed").Inc()
		s.log.Error("supervisor: reload failed", "err", err)
	default:
		s.metrics.reloads.WithLabelValues("ok").Inc()
		s.log.Info("supervisor: reload done", "generation", gen, "took", time.Since(began).Round(time.Millisecond).String())
	}
	return gen, err
}

func (s *Supervisor) reloadSteps(ctx context.Context) (int, error) {
	next, err := s.src.Reload()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	type prepared struct {
		cfg, old    config.Config
		gen, oldGen int
		slots       int
		err         error
	}
	pr, ok := ask(s.in, func(o *owner) prepared {
		cfg, err := o.prepare(next)
		if err != nil {
			return prepared{err: fmt.Errorf("%w: %w", ErrRefused, err)}
		}
		pr := prepared{old: o.cfg, oldGen: o.gen, slots: len(o.slots)}
		o.gen++
		o.cfg = cfg
		o.notify.send("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
		pr.cfg, pr.gen = cfg, o.gen
		return pr
	})
	switch {
	case !ok:
		return 0, errShuttingDown
	case pr.err != nil:
		return 0, pr.err
	}
	defer s.readyAgain()
	want := pr.cfg.WorkerCount()
	if want < pr.slots {
		if err := s.scaleTo(ctx, want); err != nil {
			return pr.gen, err
		}
	}
	pl := plan{what: "reload", canary: pr.cfg.Supervisor.Canary, back: step{cfg: pr.old, gen: pr.oldGen, why: reasonRollback}}
	for i := range min(pr.slots, want) {
		pl.steps = append(pl.steps, step{slot: i, cfg: pr.cfg, gen: pr.gen, why: reasonReload})
	}
	if _, err := s.roll(ctx, pl); err != nil {
		if _, failed := errors.AsType[*stepError](err); failed {
			return pr.gen, err
		}
		return pr.oldGen, err // the canary's verdict, or its end
	}
	if want > pr.slots {
		if err := s.scaleTo(ctx, want); err != nil {
			return pr.gen, err
		}
	}
	return pr.gen, nil
}

// prepare checks that next can be applied by a reload and readies what it
// needs (shared table, simulator); it returns next as workers get it.
func (o *owner) prepare(next config.Config) (config.Config, error) {
	if err := reloadable(o.cfg, next); err != nil {
		return next, err
	}
	if err := o.ensureTable(next); err != nil {
		return next, err
	}
	return o.resolveUpstream(next)
}

// reloadable reports what a reload cannot apply: the address the sockets
// are bound to is fixed for the supervisor's life (their number is not:
// a reload scales to the new workers).
func reloadable(cur, next config.Config) error {
	if next.Listen != cur.Listen {
		return fmt.Errorf("listen: %q → %q needs a restart", cur.Listen, next.Listen)
	}
	return nil
}
