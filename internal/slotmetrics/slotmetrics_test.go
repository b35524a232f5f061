package slotmetrics

import (
	"maps"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func counterFamily(name string, v float64) map[string]*dto.MetricFamily {
	typ := dto.MetricType_COUNTER
	return map[string]*dto.MetricFamily{name: {
		Name: &name, Type: &typ,
		Metric: []*dto.Metric{{Counter: &dto.Counter{Value: &v}}},
	}}
}

func value(fams []*dto.MetricFamily, name string) float64 {
	for _, f := range fams {
		if f.GetName() == name {
			return f.Metric[0].GetCounter().GetValue()
		}
	}
	return -1
}

func TestAggregatorCountersNeverGoBack(t *testing.T) {
	a := New()
	a.Observe(0, 100, counterFamily("reqs_total", 7))
	a.Observe(0, 200, counterFamily("reqs_total", 2)) // successor
	if got := value(a.Families(), "reqs_total"); got != 9 {
		t.Errorf("after replacement = %v, want 9", got)
	}
	a.Observe(0, 100, counterFamily("reqs_total", 8)) // late snapshot of the old worker
	if got := value(a.Families(), "reqs_total"); got != 9 {
		t.Errorf("after a stale snapshot = %v, want 9", got)
	}
	a.Observe(0, 300, map[string]*dto.MetricFamily{}) // successor without the series yet
	if got := value(a.Families(), "reqs_total"); got != 9 {
		t.Errorf("with the series absent = %v, want 9", got)
	}
	fams := a.Families()
	if l := fams[0].Metric[0].Label; len(l) != 1 || l[0].GetName() != "slot" || l[0].GetValue() != "0" {
		t.Errorf("labels = %v, want slot=0", l)
	}
}

func TestAggregatorForgetsARemovedSlot(t *testing.T) {
	a := New()
	a.Observe(0, 100, counterFamily("reqs_total", 7))
	a.Observe(1, 101, counterFamily("reqs_total", 5))
	a.Observe(1, 102, counterFamily("reqs_total", 2)) // slot 1's worker replaced once
	a.Forget(1, 102)
	a.Observe(1, 102, counterFamily("reqs_total", 3)) // a late snapshot of the removed worker
	fams := a.Families()
	if len(fams) != 1 || len(fams[0].Metric) != 1 {
		t.Fatalf("families after slot 1 was removed = %v, want slot 0's series alone", fams)
	}
	if l := fams[0].Metric[0].Label; l[0].GetValue() != "0" || value(fams, "reqs_total") != 7 {
		t.Errorf("series = %v, want slot 0's 7", fams[0].Metric[0])
	}
	a.Observe(1, 200, counterFamily("reqs_total", 1)) // the slot added again
	got := map[string]float64{}
	for _, m := range a.Families()[0].Metric {
		got[m.Label[0].GetValue()] = m.GetCounter().GetValue()
	}
	if want := map[string]float64{"0": 7, "1": 1}; !maps.Equal(got, want) {
		t.Errorf("series by slot with slot 1 added again = %v, want %v: the removed workers' counts are gone", got, want)
	}
}
