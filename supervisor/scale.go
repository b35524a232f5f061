package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/amexd/amexd/internal/reuseport"
)

// queueDrainWait bounds how long scaling down waits for a removed slot's
// accept queue to empty once no new connection reaches it.
const queueDrainWait = 5 * time.Second

// errScale is a scaling request that cannot be applied.
var errScale = errors.New("cannot scale")

// Scale sets the number of workers to n without a restart, as a job: new
// slots get a socket of the listening group and a warm worker each, and
// are ready when Scale returns; removed slots first stop receiving new
// connections (the kernel migrates them with net.ipv4.tcp_migrate_req=1,
// otherwise a reuseport program steers them to the remaining sockets),
// then their queued connections are served and their workers drain. The
// count lasts until the next reload, which applies the configuration's.
func (s *Supervisor) Scale(ctx context.Context, n int) error {
	if n < 1 || n > 1024 {
		return fmt.Errorf("%w: %d workers: want between 1 and 1024", errScale, n)
	}
	return s.runJob(ctx, "scale", func(ctx context.Context) error { return s.scaleTo(ctx, n) })
}

func (s *Supervisor) scaleTo(ctx context.Context, n int) error {
	cur, ok := ask(s.in, func(o *owner) int { return len(o.slots) })
	if !ok {
		return errShuttingDown
	}
	began := time.Now()
	var err error
	switch {
	case n > cur:
		err = s.scaleUp(ctx, n)
	case n < cur:
		err = s.scaleDown(ctx, n)
	}
	if err != nil {
		s.log.Error("supervisor: scaling failed", "from", cur, "to", n, "err", err)
		return err
	}
	s.log.Info("supervisor: scaled", "from", cur, "to", n, "took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

// scaleUp adds slots one at a time, each ready before the next.
func (s *Supervisor) scaleUp(ctx context.Context, n int) error {
	for {
		type added struct {
			p    *proc
			done bool
			err  error
		}
		a, ok := ask(s.in, func(o *owner) added {
			if len(o.slots) >= n {
				return added{done: true}
			}
			p, err := o.addSlot()
			return added{p: p, err: err}
		})
		switch {
		case !ok:
			return errShuttingDown
		case a.done:
			return nil
		case a.err != nil:
			return a.err
		}
		if err := waitReady(ctx, a.p); err != nil {
			return fmt.Errorf("slot %d: %w", a.p.slot, err)
		}
	}
}

// addSlot opens the next slot's socket and starts its worker, on the
// current configuration.
func (o *owner) addSlot() (*proc, error) {
	i := len(o.slots)
	ln, err := o.listenerFor(i)
	if err != nil {
		return nil, err
	}
	o.listeners = append(o.listeners, ln)
	sl := o.openSlot(o.cfg, o.gen)
	p, err := o.spawn(i, o.cfg, o.gen, "")
	if err != nil {
		o.closeSlots(i)
		o.listeners = o.listeners[:i]
		if ln.Systemd == nil {
			ln.File.Close()
		}
		return nil, err
	}
	o.occupy(sl, p)
	o.metrics.restarts.WithLabelValues(strconv.Itoa(i)) // at 0 from the start, as in setUp
	return p, nil
}

// listenerFor opens slot i's socket: under socket activation one of
// systemd's, shared as at start (slot i takes socket i modulo their
// number), else a new SO_REUSEPORT socket on the group's address.
func (o *owner) listenerFor(i int) (*reuseport.Listener, error) {
	first := o.listeners[0]
	if first.Systemd != nil {
		f := first.Systemd[i%len(first.Systemd)]
		return &reuseport.Listener{File: f, Addr: reuseport.SocketName(f), Systemd: first.Systemd}, nil
	}
	lns, err := reuseport.Open(first.Addr, 1)
	if err != nil {
		return nil, fmt.Errorf("open a socket for slot %d: %w", i, err)
	}
	return lns[0], nil
}

// scaleDown removes the slots from n on. Under socket activation the
// sockets are systemd's and stay open: a slot may only go when another
// slot still accepts on its socket.
func (s *Supervisor) scaleDown(ctx context.Context, n int) error {
	type plan struct {
		queues  []*reuseport.Listener
		steered bool
		err     error
	}
	pl, ok := ask(s.in, func(o *owner) plan {
		if sd := o.listeners[0].Systemd; sd != nil && n < len(sd) {
			return plan{err: fmt.Errorf("%w: systemd passed %d sockets; fewer than %d workers would leave one that nobody accepts on", errScale, len(sd), len(sd))}
		}
		var pl plan
		if o.listeners[0].Systemd == nil && !reuseport.KernelMigrates() {
			if err := reuseport.SteerTo(o.listeners[0].File, n); err != nil {
				o.log.Warn("supervisor: cannot steer connections away from the removed slots; those queued on their sockets when they close are reset", "err", err)
			} else {
				pl.steered = true
				pl.queues = o.listeners[n:]
			}
		}
		return pl
	})
	switch {
	case !ok:
		return errShuttingDown
	case pl.err != nil:
		return pl.err
	}
	// The removed slots' workers keep accepting until their queues are
	// empty: no new connection reaches them now.
	for _, ln := range pl.queues {
		waitQueueEmpty(ctx, ln)
	}
	// The workers are taken only now: one that crashed while the queues
	// emptied has been restarted, and its successor must go too.
	procs, ok := ask(s.in, func(o *owner) []*proc {
		var procs []*proc
		for _, sl := range o.slots[n:] {
			pid := 0
			if p := sl.cur; p != nil {
				o.retire(p, o.cfg.ShutdownTimeout)
				procs, pid = append(procs, p), p.pid
			}
			o.agg.Forget(sl.index, pid)
			o.metrics.restarts.DeleteLabelValues(strconv.Itoa(sl.index))
		}
		o.closeSlots(n)
		return procs
	})
	if !ok {
		return errShuttingDown
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-s.in.done:
			return errShuttingDown
		}
	}
	_, ok = ask(s.in, func(o *owner) bool {
		for i := len(o.listeners) - 1; i >= n; i-- {
			if o.listeners[i].Systemd == nil {
				o.listeners[i].File.Close()
			}
		}
		o.listeners = o.listeners[:n]
		if pl.steered {
			if err := reuseport.Unsteer(o.listeners[0].File); err != nil {
				o.log.Warn("supervisor: reuseport program left in place", "err", err)
			}
		}
		return true
	})
	if !ok {
		return errShuttingDown
	}
	return nil
}

// waitQueueEmpty waits until no connection waits on ln's accept queue, for
// at most queueDrainWait.
func waitQueueEmpty(ctx context.Context, ln *reuseport.Listener) {
	deadline := time.Now().Add(queueDrainWait)
	for {
		depth, _, err := ln.Queue()
		if err != nil || depth == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(5 * time.Millisecond) // the kernel has no event for an empty accept queue
	}
}

// waitReady waits until p reports ready, for at most its ready_timeout.
func waitReady(ctx context.Context, p *proc) error {
	t := time.NewTimer(p.cfg.Supervisor.ReadyTimeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("new worker %d exited before it was ready: %s", p.pid, exitStatus(p.exitErr))
	case <-t.C:
		return fmt.Errorf("new worker %d not ready within %s", p.pid, p.cfg.Supervisor.ReadyTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}
