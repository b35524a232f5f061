package supervisor

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/reuseport"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// adopt takes over what the supervisor that re-executed into this binary
// left in hs: its sockets, shared table, simulator port, operator socket,
// workers, generation and counters. cfg is the configuration as this
// binary reads it; the number of slots stays what it was.
func (s *Supervisor) adopt(hs *handoverState, cfg config.Config) (*owner, error) {
	s.started = hs.Started
	for i, l := range hs.Listeners {
		s.listeners = append(s.listeners, &reuseport.Listener{File: inherit(l.FD, fmt.Sprintf("listener %d", i)), Addr: l.Addr})
	}
	if len(s.listeners) == 0 {
		return nil, fmt.Errorf("hand-over without listeners")
	}
	if hs.Table >= 0 {
		f := inherit(hs.Table, "ratelimit table")
		table, err := ratelimit.OpenTable(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("hand-over: %w", err)
		}
		s.useTable(table, f)
	}
	if hs.Idempotency >= 0 {
		f := inherit(hs.Idempotency, "idempotency table")
		table, err := idempotency.OpenTable(f, cfg.Idempotency)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("hand-over: %w", err)
		}
		s.useIdempotency(table, f)
	}
	if err := s.ensureTable(cfg); err != nil {
		return nil, err
	}
	if hs.Simulator >= 0 && cfg.Upstream.URL == "" {
		ln, err := inheritListener(hs.Simulator, "simulator")
		if err != nil {
			return nil, err
		}
		if s.sim, err = startSimulator(cfg.Simulator, ln); err != nil {
			return nil, err
		}
	}
	cfg, err := s.resolveUpstream(cfg)
	if err != nil {
		return nil, err
	}
	if s.ownOffset, err = slotmetrics.Parse(hs.Own); err != nil {
		return nil, err
	}
	if err := s.agg.Restore(hs.Series); err != nil {
		return nil, err
	}
	o := s.newOwner(cfg, hs.Generation, len(s.listeners))
	o.execs = hs.Execs
	for i, st := range hs.Slots {
		if i < len(o.slots) {
			o.slots[i].restarts, o.slots[i].degraded = st.Restarts, st.Degraded
		}
	}
	for _, w := range hs.Workers {
		if err := o.adoptWorker(w, cfg); err != nil {
			return nil, err
		}
	}
	var mln net.Listener
	ln, err := inheritListener(hs.Operator, "operator socket")
	if err != nil {
		return nil, err
	}
	if hs.Metrics >= 0 {
		if mln, err = inheritListener(hs.Metrics, "metrics"); err != nil {
			return nil, err
		}
	}
	if err := s.startServing(cfg, ln, mln); err != nil {
		return nil, err
	}
	s.log.Info("supervisor: took over after re-executing", "pid", os.Getpid(), "version", version(), "generation", o.gen, "workers", len(hs.Workers))
	return o, nil
}

// adoptWorker makes a worker the previous binary started this one's.
func (o *owner) adoptWorker(w handoverWorker, cfg config.Config) error {
	if w.Slot < 0 || w.Slot >= len(o.slots) {
		return fmt.Errorf("hand-over: worker %d in slot %d of %d", w.PID, w.Slot, len(o.slots))
	}
	conn, err := inheritConn(w.FD, "control")
	if err != nil {
		return err
	}
	osp, err := os.FindProcess(w.PID)
	if err != nil {
		conn.Close()
		return fmt.Errorf("hand-over: worker %d: %w", w.PID, err)
	}
	p := o.track(w.Slot, w.Generation, cfg, execProcess{osp}, conn, control.ResumeCodec(conn, w.Pending), w.Started)
	p.state, p.readyAt, p.lastBeat, p.stats = stateReady, w.ReadyAt, time.Now(), w.Stats
	close(p.ready)
	sl := o.slots[w.Slot]
	sl.cur, sl.gen = p, w.Generation
	return nil
}
