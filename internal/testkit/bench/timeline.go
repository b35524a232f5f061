package bench

import (
	"math"
	"slices"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Timeline records what a run saw over time, in steps of fixed length:
// the answers by status and their latencies, placed by the time each
// request was sent, and marks for the moments something was done to the
// target (a kill, a reload, the upstream stopped). It is safe for
// concurrent use, so the several attacks of a fault run can share one.
type Timeline struct {
	mu      sync.Mutex
	start   time.Time
	step    time.Duration
	buckets []bucket
	marks   []Mark
}

type bucket struct {
	status    map[int]uint64
	latencies []time.Duration
}

// Mark is a moment of a run worth seeing on its charts.
type Mark struct {
	// At is the time since the timeline's start.
	At    time.Duration `json:"at_ns"`
	Label string        `json:"label"`
}

// Point is one step of a timeline.
type Point struct {
	// At is the step's start, from the timeline's start.
	At time.Duration `json:"at_ns"`
	// Requests counts the requests sent in the step; Status their answers
	// by status code, 0 for requests that got no answer.
	Requests uint64         `json:"requests"`
	Status   map[int]uint64 `json:"status"`
	// Latency quantiles of the step's answered requests; zero without one.
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
}

// NewTimeline starts a timeline now, with steps of step (100 ms at least).
func NewTimeline(step time.Duration) *Timeline {
	return &Timeline{start: time.Now(), step: max(step, 100*time.Millisecond)}
}

// StepFor is a step that gives a run of length d about a hundred points,
// and never less than 100 ms.
func StepFor(d time.Duration) time.Duration {
	return max((d / 100).Round(100*time.Millisecond), 100*time.Millisecond)
}

// Step is the length of the timeline's steps.
func (t *Timeline) Step() time.Duration { return t.step }

// Observe records one result.
func (t *Timeline) Observe(res *vegeta.Result) {
	i := max(int(res.Timestamp.Sub(t.start)/t.step), 0)
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.buckets) <= i {
		t.buckets = append(t.buckets, bucket{status: make(map[int]uint64)})
	}
	b := &t.buckets[i]
	b.status[int(res.Code)]++
	if res.Code != 0 {
		b.latencies = append(b.latencies, res.Latency)
	}
}

// Mark records label at the present moment; on a nil timeline it does
// nothing.
func (t *Timeline) Mark(label string) {
	if t == nil {
		return
	}
	at := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marks = append(t.marks, Mark{At: at, Label: label})
}

// Marks returns the marks in the order they were made.
func (t *Timeline) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.marks)
}

// Points returns one point per step, from the first to the last step in
// which a request was sent; steps without requests have zero counts.
func (t *Timeline) Points() []Point {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Point, len(t.buckets))
	for i, b := range t.buckets {
		p := Point{At: time.Duration(i) * t.step, Status: make(map[int]uint64, len(b.status))}
		for code, n := range b.status {
			p.Status[code] = n
			p.Requests += n
		}
		if len(b.latencies) > 0 {
			lat := slices.Clone(b.latencies)
			slices.Sort(lat)
			p.P50, p.P90, p.P99 = quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99)
		}
		out[i] = p
	}
	return out
}

// quantile returns the q-quantile of sorted, which must not be empty, by
// the nearest-rank method.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
