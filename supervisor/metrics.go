package supervisor

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/metrics"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// snapshotTimeout bounds how long a scrape waits for one worker's metrics.
const snapshotTimeout = time.Second

// supervisorMetrics are the supervisor's own series.
type supervisorMetrics struct {
	reg *prometheus.Registry
	// offset holds what this process's own counters counted before it
	// re-executed itself for an upgrade; set before the loop starts.
	offset        map[string]*dto.MetricFamily
	restarts      *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	upgrades      *prometheus.CounterVec
	liveWorkers   prometheus.Gauge
	degradedSlots prometheus.Gauge
	warmEntries   prometheus.Counter
	replacements  *prometheus.CounterVec
}

func newSupervisorMetrics() *supervisorMetrics {
	m := &supervisorMetrics{
		reg: prometheus.NewRegistry(),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_supervisor_worker_restarts_total",
			Help: "Workers restarted after an unexpected exit, by slot.",
		}, []string{"slot"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_supervisor_reloads_total",
			Help: "Configuration reloads by result (ok, refused, failed).",
		}, []string{"result"}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_supervisor_upgrades_total",
			Help: "Binary upgrades by result (ok, refused, rolled_back).",
		}, []string{"result"}),
		liveWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "amexd_supervisor_live_workers",
			Help: "Worker processes running, including starting and draining ones.",
		}),
		degradedSlots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "amexd_supervisor_degraded_slots",
			Help: "Slots marked degraded because their worker keeps crashing.",
		}),
		warmEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amexd_supervisor_warm_start_entries_total",
			Help: "Cache entries relayed from running workers to new ones before they served.",
		}),
		replacements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_supervisor_worker_replacements_total",
			Help: "Workers replaced, by reason: crash, hang, reload, requests, memory, rollback.",
		}, []string{"reason"}),
	}
	for _, result := range []string{"ok", "refused", "failed"} {
		m.reloads.WithLabelValues(result)
	}
	for _, result := range []string{"ok", "refused", "rolled_back"} {
		m.upgrades.WithLabelValues(result)
	}
	m.reg.MustRegister(m.restarts, m.reloads, m.upgrades, m.liveWorkers, m.degradedSlots, m.warmEntries, m.replacements,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), metrics.BuildInfo())
	return m
}

// collectSlot asks p for a snapshot and feeds it to the aggregator.
func (s *Supervisor) collectSlot(ctx context.Context, p *proc) {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	m, err := request(ctx, p, control.Message{Type: control.TypeSnapshot})
	if err != nil {
		s.log.Warn("supervisor: worker snapshot failed", "slot", p.slot, "pid", p.pid, "err", err)
		return
	}
	if m.Stats != nil {
		s.in.tell(func(*owner) { p.stats = *m.Stats })
	}
	fams, err := slotmetrics.Parse(m.Metrics)
	if err != nil {
		s.log.Warn("supervisor: bad worker metrics", "slot", p.slot, "pid", p.pid, "err", err)
		return
	}
	s.agg.Observe(p.slot, p.pid, fams)
}

// gather returns the supervisor's series and every slot's, fresh from a
// snapshot of each slot's current worker.
func (s *Supervisor) gather(ctx context.Context) ([]*dto.MetricFamily, error) {
	current, _ := ask(s.in, func(o *owner) []*proc {
		var out []*proc
		for _, sl := range o.slots {
			if p := sl.cur; p != nil && !p.is(stateExited) {
				out = append(out, p)
			}
		}
		return out
	})
	var wg sync.WaitGroup
	for _, p := range current {
		wg.Go(func() { s.collectSlot(ctx, p) })
	}
	wg.Wait()
	own, err := s.metrics.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather supervisor metrics: %w", err)
	}
	return append(slotmetrics.AddOffsets(own, s.metrics.offset), s.agg.Families()...), nil
}

// serveMetrics writes the aggregated metrics in the text exposition format.
func (s *Supervisor) serveMetrics(w http.ResponseWriter, r *http.Request) {
	fams, err := s.gather(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			s.log.Warn("supervisor: encode metrics", "family", f.GetName(), "err", err)
			return
		}
	}
}
