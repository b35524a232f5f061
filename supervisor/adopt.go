package supervisor

import (
	"fmt"
	"net"
	"os"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/reuseport"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// adopt takes over what the supervisor that re-executed into this binary
// left in hs: its sockets, shared table, simulator port, workers,
// generation and counters, and returns the operator socket and the
// metrics listener (nil without metrics_addr) to serve on. cfg is the
// configuration as this binary reads it; the number of slots stays what
// it was.
func (o *owner) adopt(hs *handoverState, cfg config.Config) (ln, mln net.Listener, err error) {
	o.started = hs.Started
	for i, l := range hs.Listeners {
		o.listeners = append(o.listeners, &reuseport.Listener{File: inherit(l.FD, fmt.Sprintf("listener %d", i)), Addr: l.Addr})
	}
	if len(o.listeners) == 0 {
		return nil, nil, fmt.Errorf("hand-over without listeners")
	}
	if hs.Table >= 0 {
		f := inherit(hs.Table, "ratelimit table")
		table, err := ratelimit.OpenTable(f)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("hand-over: %w", err)
		}
		o.useTable(table, f)
	}
	if hs.Idempotency >= 0 {
		f := inherit(hs.Idempotency, "idempotency table")
		table, err := idempotency.OpenTable(f, cfg.Idempotency)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("hand-over: %w", err)
		}
		o.useIdempotency(table, f)
	}
	if err := o.ensureTable(cfg); err != nil {
		return nil, nil, err
	}
	if hs.Simulator >= 0 && cfg.Upstream.URL == "" {
		sln, err := inheritListener(hs.Simulator, "simulator")
		if err != nil {
			return nil, nil, err
		}
		if o.sim, err = startSimulator(cfg.Simulator, sln); err != nil {
			return nil, nil, err
		}
	}
	if cfg, err = o.resolveUpstream(cfg); err != nil {
		return nil, nil, err
	}
	if o.metrics.offset, err = slotmetrics.Parse(hs.Own); err != nil {
		return nil, nil, err
	}
	if err := o.agg.Restore(hs.Series); err != nil {
		return nil, nil, err
	}
	o.setUp(cfg, hs.Generation, len(o.listeners))
	o.execs = hs.Execs
	o.adoptSlots(hs.Slots)
	for _, w := range hs.Workers {
		if err := o.adoptWorker(w, cfg); err != nil {
			return nil, nil, err
		}
	}
	if ln, err = inheritListener(hs.Operator, "operator socket"); err != nil {
		return nil, nil, err
	}
	if hs.Metrics >= 0 {
		if mln, err = inheritListener(hs.Metrics, "metrics"); err != nil {
			return nil, nil, err
		}
	}
	return ln, mln, nil
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
	o.adopted(p, w.ReadyAt, w.Stats)
	return nil
}
