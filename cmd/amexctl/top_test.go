package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

func TestQuantileSince(t *testing.T) {
	inf := math.Inf(1)
	prev := histogram{bounds: []float64{0.01, 0.1, 1, inf}, counts: []float64{10, 10, 10, 10}}
	// Since prev: 50 observations up to 10ms, 50 more between 10 and 100ms.
	cur := histogram{bounds: prev.bounds, counts: []float64{60, 110, 110, 110}}
	for _, tc := range []struct {
		q    float64
		want float64
	}{
		{0.5, 0.01},
		{0.99, 0.01 + 0.09*(99.0-50)/50},
	} {
		got, ok := quantileSince(prev, cur, tc.q)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("q%.2f = %v %v, want %v", tc.q, got, ok, tc.want)
		}
	}
	if _, ok := quantileSince(cur, cur, 0.99); ok {
		t.Error("a quantile with no new observation")
	}
	// Everything above the largest bound: the largest bound, as Prometheus.
	over := histogram{bounds: prev.bounds, counts: []float64{10, 10, 10, 20}}
	if got, ok := quantileSince(prev, over, 0.99); !ok || got != 1 {
		t.Errorf("q0.99 of observations above 1s = %v %v, want 1", got, ok)
	}
}

func TestRenderTop(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	worker := func(slot, pid int, reqs, hits, misses, rej uint64) operator.WorkerInfo {
		return operator.WorkerInfo{Slot: slot, PID: pid, State: "ready", Requests: reqs, LimiterRejections: rej,
			Cache: control.CacheStats{Hits: hits, Misses: misses}}
	}
	inf := math.Inf(1)
	prev := &topSample{at: at, status: operator.Status{PID: 7, Generation: 1, Healthy: true, UptimeSeconds: 60,
		Workers: []operator.WorkerInfo{worker(0, 100, 1000, 900, 100, 0), worker(1, 101, 500, 0, 0, 0)}},
		latency: map[int]histogram{0: {bounds: []float64{0.001, 0.01, inf}, counts: []float64{0, 0, 0}}},
		rss:     map[int]int64{}}
	cur := &topSample{at: at.Add(2 * time.Second), status: operator.Status{PID: 7, Generation: 1, Healthy: true, UptimeSeconds: 62,
		// Slot 1's worker was replaced: no rate for it this frame.
		Workers: []operator.WorkerInfo{worker(0, 100, 1400, 1200, 200, 20), worker(1, 102, 3, 0, 0, 0)}},
		breakers: map[int][]control.Breaker{0: {{Name: "getUsers", State: "closed"}, {Name: "addEvent", State: "open"}}},
		latency:  map[int]histogram{0: {bounds: []float64{0.001, 0.01, inf}, counts: []float64{0, 400, 400}}},
		rss:      map[int]int64{100: 20 << 20, 102: -1}}
	got := renderTop(prev, cur)
	for _, want := range []string{
		"amexd pid 7  generation 1  up 1m2s  healthy  12:00:02",
		"total 200.0 req/s  cache hits 75.0%  workers 2",
		"0     100  ready  200.0  9.9ms  75.0%  0         10.0   addEvent open  20.0MiB",
		"1     102  ready  -      -      -      0         -      -              -",
		"q or Ctrl-C to quit",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("frame lacks %q:\n%s", want, got)
		}
	}
	if first := renderTop(nil, cur); !strings.Contains(first, "rates from the next refresh") {
		t.Errorf("first frame:\n%s", first)
	}
}
