package supervisor

import (
	"maps"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/config"
)

func TestNextBackoff(t *testing.T) {
	const lo, hi, healthy = 100 * time.Millisecond, 30 * time.Second, time.Minute
	cases := []struct {
		prev, lived, want time.Duration
	}{
		{0, 0, lo},
		{lo, time.Second, 200 * time.Millisecond},
		{20 * time.Second, time.Second, hi},
		{hi, time.Second, hi},
		{hi, healthy, lo},
	}
	for _, c := range cases {
		if got := nextBackoff(c.prev, c.lived, lo, hi, healthy); got != c.want {
			t.Errorf("nextBackoff(%s, lived %s) = %s, want %s", c.prev, c.lived, got, c.want)
		}
	}
}

func TestReloadable(t *testing.T) {
	cur := config.Default()
	cur.Workers = 2
	next := cur
	next.Fanout = 3
	if err := reloadable(cur, next); err != nil {
		t.Errorf("fanout change refused: %v", err)
	}
	next.Workers = 3
	if err := reloadable(cur, next); err != nil {
		t.Errorf("worker count change refused (a reload scales): %v", err)
	}
	next.Listen = ":4000"
	if err := reloadable(cur, next); err == nil {
		t.Error("listen change accepted")
	}
}

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
	a := newAggregator()
	a.observe(0, 100, counterFamily("reqs_total", 7))
	a.observe(0, 200, counterFamily("reqs_total", 2)) // successor
	if got := value(a.families(), "reqs_total"); got != 9 {
		t.Errorf("after replacement = %v, want 9", got)
	}
	a.observe(0, 100, counterFamily("reqs_total", 8)) // late snapshot of the old worker
	if got := value(a.families(), "reqs_total"); got != 9 {
		t.Errorf("after a stale snapshot = %v, want 9", got)
	}
	a.observe(0, 300, map[string]*dto.MetricFamily{}) // successor without the series yet
	if got := value(a.families(), "reqs_total"); got != 9 {
		t.Errorf("with the series absent = %v, want 9", got)
	}
	fams := a.families()
	if l := fams[0].Metric[0].Label; len(l) != 1 || l[0].GetName() != "slot" || l[0].GetValue() != "0" {
		t.Errorf("labels = %v, want slot=0", l)
	}
}

func TestAggregatorForgetsARemovedSlot(t *testing.T) {
	a := newAggregator()
	a.observe(0, 100, counterFamily("reqs_total", 7))
	a.observe(1, 101, counterFamily("reqs_total", 5))
	a.observe(1, 102, counterFamily("reqs_total", 2)) // slot 1's worker replaced once
	a.forget(1, 102)
	a.observe(1, 102, counterFamily("reqs_total", 3)) // a late snapshot of the removed worker
	fams := a.families()
	if len(fams) != 1 || len(fams[0].Metric) != 1 {
		t.Fatalf("families after slot 1 was removed = %v, want slot 0's series alone", fams)
	}
	if l := fams[0].Metric[0].Label; l[0].GetValue() != "0" || value(fams, "reqs_total") != 7 {
		t.Errorf("series = %v, want slot 0's 7", fams[0].Metric[0])
	}
	a.observe(1, 200, counterFamily("reqs_total", 1)) // the slot added again
	got := map[string]float64{}
	for _, m := range a.families()[0].Metric {
		got[m.Label[0].GetValue()] = m.GetCounter().GetValue()
	}
	if want := map[string]float64{"0": 7, "1": 1}; !maps.Equal(got, want) {
		t.Errorf("series by slot with slot 1 added again = %v, want %v: the removed workers' counts are gone", got, want)
	}
}

// TestListenerStaysNonBlocking: starting a worker (os/exec calls Fd on
// the listener file) must not make the slot's socket blocking for the
// workers already accepting on it.
func TestListenerStaysNonBlocking(t *testing.T) {
	lns, err := openListeners("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].file.Close()
	fd := lns[0].file.Fd()
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Error("the slot socket is blocking after Fd")
	}
}
