package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// ErrRefused marks a reload refused before any worker was touched: the new
// configuration is invalid or changes what a reload cannot change.
var ErrRefused = errors.New("reload refused")

// Reload re-reads the configuration and replaces the workers slot by slot:
// start the new worker on the slot's socket, wait for its ready message,
// then drain the old one. It returns the new generation. An invalid
// configuration returns an error wrapping ErrRefused and leaves the workers
// alone; a worker that fails to get ready stops the reload there, leaving
// the slots already replaced on the new configuration and the others on the
// old one.
func (s *Supervisor) Reload(ctx context.Context) (int, error) {
	if !s.reloadMu.TryLock() {
		return 0, ErrReloadInProgress
	}
	defer s.reloadMu.Unlock()
	began := time.Now()
	gen, err := s.reload(ctx)
	switch {
	case errors.Is(err, ErrRefused):
		s.metrics.reloads.WithLabelValues("refused").Inc()
		s.log.Error("supervisor: reload refused, workers untouched", "err", err)
	case err != nil:
		s.metrics.reloads.WithLabelValues("failed").Inc()
		s.log.Error("supervisor: reload failed", "err", err)
	default:
		s.metrics.reloads.WithLabelValues("ok").Inc()
		s.log.Info("supervisor: reload done", "generation", gen, "took", time.Since(began).Round(time.Millisecond))
	}
	return gen, err
}

func (s *Supervisor) reload(ctx context.Context) (int, error) {
	next, err := s.src.Reload()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	s.mu.Lock()
	cur, gen, slots := s.cfg, s.gen+1, s.slots
	s.mu.Unlock()
	if err := reloadable(cur, next); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if err := s.ensureTable(next); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if next, err = s.resolveUpstream(next); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrRefused, err)
	}

	s.notify.send("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
	defer s.notify.send("READY=1")
	s.mu.Lock()
	s.gen = gen
	s.cfg = next
	s.mu.Unlock()
	for _, sl := range slots {
		if err := s.replace(ctx, sl, next, gen); err != nil {
			return gen, fmt.Errorf("slot %d: %w", sl.index, err)
		}
	}
	return gen, nil
}

// reloadable reports what a reload cannot apply: the sockets and their
// number are fixed for the supervisor's life.
func reloadable(cur, next config.Config) error {
	if next.Listen != cur.Listen {
		return fmt.Errorf("listen: %q → %q needs a restart", cur.Listen, next.Listen)
	}
	if next.WorkerCount() != cur.WorkerCount() {
		return fmt.Errorf("workers: %d → %d needs a restart", cur.WorkerCount(), next.WorkerCount())
	}
	return nil
}

// replace starts a worker of generation gen in sl, waits until it is ready
// and then drains the worker it replaces.
func (s *Supervisor) replace(ctx context.Context, sl *slot, cfg config.Config, gen int) error {
	sl.op.Lock()
	p, err := s.spawn(sl.index, cfg, gen)
	if err != nil {
		sl.op.Unlock()
		return err
	}
	t := time.NewTimer(cfg.Supervisor.ReadyTimeout)
	defer t.Stop()
	var fail error
	select {
	case <-p.ready:
	case <-p.exited:
		fail = fmt.Errorf("new worker %d exited before it was ready", p.pid)
	case <-t.C:
		fail = fmt.Errorf("new worker %d not ready within %s", p.pid, cfg.Supervisor.ReadyTimeout)
	case <-ctx.Done():
		fail = ctx.Err()
	}
	if fail != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		sl.op.Unlock()
		return fail
	}
	s.mu.Lock()
	old := sl.cur
	s.mu.Unlock()
	if old != nil {
		// The last counts of the old worker carry over to its successor.
		s.collectSlot(context.Background(), old)
	}
	s.mu.Lock()
	sl.cur, sl.cfg, sl.gen = p, cfg, gen
	s.mu.Unlock()
	sl.op.Unlock()
	if old != nil {
		s.retire(old, cfg.ShutdownTimeout)
	}
	return nil
}

// resetBreakers forces the named breakers (all known ones when names is
// empty) closed in every live worker and returns the names reset.
func (s *Supervisor) resetBreakers(names []string) []string {
	if len(names) == 0 {
		for _, b := range s.clusterStatus().Summary {
			names = append(names, b.Name)
		}
	}
	for _, name := range names {
		s.forceBreaker(nil, name, control.StateClosed)
	}
	return names
}

// purge empties every live worker's cache and returns how many were told.
func (s *Supervisor) purge() int {
	n := 0
	for _, p := range s.live(nil) {
		if err := p.codec.Send(control.Message{Type: control.TypePurge}); err == nil {
			n++
		}
	}
	return n
}
