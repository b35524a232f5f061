package supervisor

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/metrics"
)

// snapshotTimeout bounds how long a scrape waits for one worker's metrics.
const snapshotTimeout = time.Second

// supervisorMetrics are the supervisor's own series.
type supervisorMetrics struct {
	reg           *prometheus.Registry
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

// aggregator turns workers' metric snapshots into series labelled by slot
// whose counters never go backwards: when a slot's worker is replaced, the
// last counts seen from the old one become an offset added to the new one's.
type aggregator struct {
	mu    sync.Mutex
	slots map[int]*slotSeries
}

type slotSeries struct {
	pid     int
	retired map[int]bool
	raw     map[string]*dto.MetricFamily
	// offset holds, per family and series, what retired workers counted.
	offset map[string]*dto.MetricFamily
}

func newAggregator() *aggregator { return &aggregator{slots: map[int]*slotSeries{}} }

// observe records a snapshot from worker pid in slot. A snapshot from a
// worker the slot already moved on from is ignored.
func (a *aggregator) observe(slot, pid int, fams map[string]*dto.MetricFamily) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.slots[slot]
	if ss == nil {
		ss = &slotSeries{retired: map[int]bool{}, offset: map[string]*dto.MetricFamily{}}
		a.slots[slot] = ss
	}
	if ss.retired[pid] {
		return
	}
	if ss.pid != 0 && ss.pid != pid {
		for name, f := range ss.raw {
			if monotonic(f.GetType()) {
				ss.offset[name] = addFamily(ss.offset[name], f)
			}
		}
		ss.retired[ss.pid] = true
	}
	ss.pid, ss.raw = pid, fams
}

// forget drops a removed slot's series: a slot that is gone has no
// figures, rather than its last ones forever. Late snapshots of the slot's
// last worker, pid, are ignored; a slot added again starts from zero,
// which Prometheus reads as a counter reset.
func (a *aggregator) forget(slot, pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ss := a.slots[slot]
	if ss == nil {
		return
	}
	ss.retired[ss.pid] = true
	ss.retired[pid] = true
	ss.pid, ss.raw, ss.offset = 0, nil, map[string]*dto.MetricFamily{}
}

// families returns every slot's series, labelled slot="N", with offsets
// applied, merged by family name and sorted.
func (a *aggregator) families() []*dto.MetricFamily {
	a.mu.Lock()
	defer a.mu.Unlock()
	merged := map[string]*dto.MetricFamily{}
	for slot, ss := range a.slots {
		label := &dto.LabelPair{Name: proto.String("slot"), Value: proto.String(strconv.Itoa(slot))}
		for name, f := range ss.raw {
			g := proto.Clone(f).(*dto.MetricFamily)
			if off := ss.offset[name]; off != nil && off.GetType() == g.GetType() {
				g = addFamily(g, off)
			}
			mergeInto(merged, g, label)
		}
		for name, off := range ss.offset {
			if f := ss.raw[name]; f == nil || f.GetType() != off.GetType() {
				mergeInto(merged, proto.Clone(off).(*dto.MetricFamily), label)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, f := range merged {
		out = append(out, f)
	}
	slices.SortFunc(out, func(x, y *dto.MetricFamily) int { return strings.Compare(x.GetName(), y.GetName()) })
	return out
}

func mergeInto(merged map[string]*dto.MetricFamily, f *dto.MetricFamily, label *dto.LabelPair) {
	for _, m := range f.Metric {
		m.Label = append(m.Label, proto.Clone(label).(*dto.LabelPair))
	}
	dst := merged[f.GetName()]
	switch {
	case dst == nil:
		merged[f.GetName()] = f
	case dst.GetType() == f.GetType():
		dst.Metric = append(dst.Metric, f.Metric...)
	}
}

func monotonic(t dto.MetricType) bool {
	return t == dto.MetricType_COUNTER || t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY
}

// addFamily returns dst with src's values added series by series (series
// matched by labels); dst may be nil. Only counts and sums are added.
func addFamily(dst, src *dto.MetricFamily) *dto.MetricFamily {
	if dst == nil {
		return proto.Clone(src).(*dto.MetricFamily)
	}
	byKey := map[string]*dto.Metric{}
	for _, m := range dst.Metric {
		byKey[seriesKey(m)] = m
	}
	for _, m := range src.Metric {
		d := byKey[seriesKey(m)]
		if d == nil {
			dst.Metric = append(dst.Metric, proto.Clone(m).(*dto.Metric))
			continue
		}
		addMetric(d, m)
	}
	return dst
}

func addMetric(d, s *dto.Metric) {
	switch {
	case d.Counter != nil && s.Counter != nil:
		d.Counter.Value = proto.Float64(d.Counter.GetValue() + s.Counter.GetValue())
	case d.Histogram != nil && s.Histogram != nil:
		dh, sh := d.Histogram, s.Histogram
		dh.SampleCount = proto.Uint64(dh.GetSampleCount() + sh.GetSampleCount())
		dh.SampleSum = proto.Float64(dh.GetSampleSum() + sh.GetSampleSum())
		if len(dh.Bucket) == len(sh.Bucket) {
			for i := range dh.Bucket {
				if dh.Bucket[i].GetUpperBound() == sh.Bucket[i].GetUpperBound() {
					dh.Bucket[i].CumulativeCount = proto.Uint64(dh.Bucket[i].GetCumulativeCount() + sh.Bucket[i].GetCumulativeCount())
				}
			}
		}
	case d.Summary != nil && s.Summary != nil:
		d.Summary.SampleCount = proto.Uint64(d.Summary.GetSampleCount() + s.Summary.GetSampleCount())
		d.Summary.SampleSum = proto.Float64(d.Summary.GetSampleSum() + s.Summary.GetSampleSum())
	}
}

func seriesKey(m *dto.Metric) string {
	pairs := make([]string, 0, len(m.Label))
	for _, l := range m.Label {
		pairs = append(pairs, l.GetName()+"="+l.GetValue())
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "\xff")
}

// addOffsets adds to fams' counters, histograms and summaries what off
// holds for them (the counts of this process before it re-executed).
func addOffsets(fams []*dto.MetricFamily, off map[string]*dto.MetricFamily) []*dto.MetricFamily {
	for _, f := range fams {
		if o := off[f.GetName()]; o != nil && monotonic(f.GetType()) && o.GetType() == f.GetType() {
			addFamily(f, o)
		}
	}
	return fams
}

// encodeFamilies is fams in the text exposition format.
func encodeFamilies(fams []*dto.MetricFamily) (string, error) {
	var b strings.Builder
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			return "", fmt.Errorf("encode %s: %w", f.GetName(), err)
		}
	}
	return b.String(), nil
}

// slotState is one slot's series for a hand-over.
type slotState struct {
	PID     int    `json:"pid"`
	Retired []int  `json:"retired"`
	Raw     string `json:"raw"`
	Offset  string `json:"offset"`
}

// export is the aggregator's state, to carry across a re-execution.
func (a *aggregator) export() map[int]slotState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[int]slotState{}
	for slot, ss := range a.slots {
		st := slotState{PID: ss.pid}
		for pid := range ss.retired {
			st.Retired = append(st.Retired, pid)
		}
		st.Raw, _ = encodeFamilies(slices.Collect(maps.Values(ss.raw)))
		st.Offset, _ = encodeFamilies(slices.Collect(maps.Values(ss.offset)))
		out[slot] = st
	}
	return out
}

// restore makes the aggregator what export saw.
func (a *aggregator) restore(state map[int]slotState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for slot, st := range state {
		raw, err := parseMetrics(st.Raw)
		if err != nil {
			return err
		}
		off, err := parseMetrics(st.Offset)
		if err != nil {
			return err
		}
		ss := &slotSeries{pid: st.PID, retired: map[int]bool{}, raw: raw, offset: off}
		for _, pid := range st.Retired {
			ss.retired[pid] = true
		}
		a.slots[slot] = ss
	}
	return nil
}

func parseMetrics(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse worker metrics: %w", err)
	}
	return fams, nil
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
		s.tell(func(*owner) { p.stats = *m.Stats })
	}
	fams, err := parseMetrics(m.Metrics)
	if err != nil {
		s.log.Warn("supervisor: bad worker metrics", "slot", p.slot, "pid", p.pid, "err", err)
		return
	}
	s.agg.observe(p.slot, p.pid, fams)
}

// gather returns the supervisor's series and every slot's, fresh from a
// snapshot of each slot's current worker.
func (s *Supervisor) gather(ctx context.Context) ([]*dto.MetricFamily, error) {
	current, _ := ask(s, func(o *owner) []*proc {
		var out []*proc
		for _, sl := range o.slots {
			if sl.cur != nil && sl.cur.state != stateExited {
				out = append(out, sl.cur)
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
	return append(addOffsets(own, s.ownOffset), s.agg.families()...), nil
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
