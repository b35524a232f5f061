package bench

import (
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func TestTimelineSteps(t *testing.T) {
	tl := NewTimeline(time.Second)
	at := func(ms int) time.Time { return tl.start.Add(time.Duration(ms) * time.Millisecond) }
	// Step 0: latencies 1…100 ms, all 200. Step 1: nothing. Step 2: a 503
	// and a request without an answer.
	for i := 1; i <= 100; i++ {
		tl.Observe(&vegeta.Result{Timestamp: at(i), Code: 200, Latency: time.Duration(i) * time.Millisecond})
	}
	tl.Observe(&vegeta.Result{Timestamp: at(2100), Code: 503, Latency: 7 * time.Millisecond})
	tl.Observe(&vegeta.Result{Timestamp: at(2200), Code: 0})
	tl.Mark("kill")

	pts := tl.Points()
	if len(pts) != 3 {
		t.Fatalf("%d points, want 3: %+v", len(pts), pts)
	}
	p0 := pts[0]
	if p0.Requests != 100 || p0.Status[200] != 100 ||
		p0.P50 != 50*time.Millisecond || p0.P90 != 90*time.Millisecond || p0.P99 != 99*time.Millisecond {
		t.Errorf("step 0 = %+v, want 100 answers 200 with p50 50ms, p90 90ms, p99 99ms", p0)
	}
	if pts[1].Requests != 0 || pts[1].P99 != 0 || pts[1].At != time.Second {
		t.Errorf("step 1 = %+v, want empty at 1s", pts[1])
	}
	// The request without an answer counts as status 0 and has no latency.
	if p2 := pts[2]; p2.Requests != 2 || p2.Status[503] != 1 || p2.Status[0] != 1 || p2.P99 != 7*time.Millisecond {
		t.Errorf("step 2 = %+v, want a 503 of 7ms and one without an answer", p2)
	}
	if m := tl.Marks(); len(m) != 1 || m[0].Label != "kill" || m[0].At < 0 {
		t.Errorf("marks = %+v", m)
	}
}

func TestStepFor(t *testing.T) {
	for _, tc := range []struct{ d, want time.Duration }{
		{time.Second, 100 * time.Millisecond},
		{10 * time.Second, 100 * time.Millisecond},
		{30 * time.Second, 300 * time.Millisecond},
		{time.Minute, 600 * time.Millisecond},
	} {
		if got := StepFor(tc.d); got != tc.want {
			t.Errorf("StepFor(%s) = %s, want %s", tc.d, got, tc.want)
		}
	}
}
