// Package slotmetrics merges the metric snapshots of a supervisor's
// workers into one set of series labelled by slot, whose counters survive
// a worker's replacement and the supervisor's re-execution.
package slotmetrics

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// Aggregator turns workers' metric snapshots into series labelled by slot
// whose counters never go backwards: when a slot's worker is replaced, the
// last counts seen from the old one become an offset added to the new one's.
type Aggregator struct {
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

// New returns an empty Aggregator.
func New() *Aggregator { return &Aggregator{slots: map[int]*slotSeries{}} }

// Observe records a snapshot from worker pid in slot. A snapshot from a
// worker the slot already moved on from is ignored.
func (a *Aggregator) Observe(slot, pid int, fams map[string]*dto.MetricFamily) {
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

// Forget drops a removed slot's series: a slot that is gone has no
// figures, rather than its last ones forever. Late snapshots of the slot's
// last worker, pid, are ignored; a slot added again starts from zero,
// which Prometheus reads as a counter reset.
func (a *Aggregator) Forget(slot, pid int) {
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

// Families returns every slot's series, labelled slot="N", with offsets
// applied, merged by family name and sorted.
func (a *Aggregator) Families() []*dto.MetricFamily {
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

// AddOffsets adds to fams' counters, histograms and summaries what off
// holds for them (the counts of this process before it re-executed).
func AddOffsets(fams []*dto.MetricFamily, off map[string]*dto.MetricFamily) []*dto.MetricFamily {
	for _, f := range fams {
		if o := off[f.GetName()]; o != nil && monotonic(f.GetType()) && o.GetType() == f.GetType() {
			addFamily(f, o)
		}
	}
	return fams
}

// EncodeFamilies is fams in the text exposition format.
func EncodeFamilies(fams []*dto.MetricFamily) (string, error) {
	var b strings.Builder
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			return "", fmt.Errorf("encode %s: %w", f.GetName(), err)
		}
	}
	return b.String(), nil
}

// SlotState is one slot's series for a hand-over.
type SlotState struct {
	PID     int    `json:"pid"`
	Retired []int  `json:"retired"`
	Raw     string `json:"raw"`
	Offset  string `json:"offset"`
}

// Export is the aggregator's state, to carry across a re-execution.
func (a *Aggregator) Export() map[int]SlotState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[int]SlotState{}
	for slot, ss := range a.slots {
		st := SlotState{PID: ss.pid}
		for pid := range ss.retired {
			st.Retired = append(st.Retired, pid)
		}
		st.Raw, _ = EncodeFamilies(slices.Collect(maps.Values(ss.raw)))
		st.Offset, _ = EncodeFamilies(slices.Collect(maps.Values(ss.offset)))
		out[slot] = st
	}
	return out
}

// Restore makes the aggregator what export saw.
func (a *Aggregator) Restore(state map[int]SlotState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for slot, st := range state {
		raw, err := Parse(st.Raw)
		if err != nil {
			return err
		}
		off, err := Parse(st.Offset)
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

// Parse reads metric families in the text exposition format.
func Parse(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse worker metrics: %w", err)
	}
	return fams, nil
}
