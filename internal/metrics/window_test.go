package metrics

import (
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryDuration(t *testing.T) {
	prevLow := uint64(0)
	for b := 1; b < windowBuckets; b++ {
		low, width := bucketBounds(b)
		if low <= prevLow {
			t.Fatalf("bucket %d starts at %dµs, not above bucket %d (%dµs)", b, low, b-1, prevLow)
		}
		prevLow = low
		if width > 1 && float64(width)/float64(low) > 0.125 {
			t.Errorf("bucket %d is %dµs wide at %dµs, more than 12.5%%", b, width, low)
		}
	}
	for _, us := range []uint64{0, 1, 7, 8, 9, 15, 16, 17, 100, 999, 1000, 123456, 9_999_999} {
		b := bucketOf(time.Duration(us) * time.Microsecond)
		low, width := bucketBounds(b)
		if us < low || us >= low+width {
			t.Errorf("%dµs is in bucket %d, [%d, %d)", us, b, low, low+width)
		}
	}
	if b := bucketOf(24 * time.Hour); b != windowBuckets-1 {
		t.Errorf("a day is in bucket %d, want the last one", b)
	}
	if b := bucketOf(-time.Second); b != 0 {
		t.Errorf("a negative duration is in bucket %d, want 0", b)
	}
}

func TestLatencyWindowQuantiles(t *testing.T) {
	var w LatencyWindow
	now := time.Unix(1_700_000_000, 0)
	if n, p50, p99 := w.Quantiles(now); n != 0 || p50 != 0 || p99 != 0 {
		t.Errorf("empty window: %d, %s, %s", n, p50, p99)
	}
	for i := range 98 {
		w.Observe(now.Add(time.Duration(i)*time.Millisecond), time.Millisecond)
	}
	w.Observe(now, 100*time.Millisecond)
	w.Observe(now, 100*time.Millisecond)
	n, p50, p99 := w.Quantiles(now.Add(time.Second))
	near := func(got, want time.Duration) bool { return got >= want*7/8 && got <= want*9/8 }
	if n != 100 || !near(p50, time.Millisecond) || !near(p99, 100*time.Millisecond) {
		t.Errorf("got %d answers, p50 %s, p99 %s; want 100, ~1ms, ~100ms", n, p50, p99)
	}
}

func TestLatencyWindowForgetsOlderAnswers(t *testing.T) {
	var w LatencyWindow
	start := time.Unix(1_700_000_000, 0)
	w.Observe(start, time.Second)
	if n, _, _ := w.Quantiles(start.Add(50 * time.Second)); n != 1 {
		t.Errorf("after 50s the window holds %d answers, want 1", n)
	}
	if n, _, _ := w.Quantiles(start.Add(61 * time.Second)); n != 0 {
		t.Errorf("after 61s the window holds %d answers, want 0", n)
	}
	// The slice comes round again: the old count must not come back.
	later := start.Add(windowSlices * sliceWidth)
	w.Observe(later, time.Millisecond)
	n, p50, _ := w.Quantiles(later)
	if n != 1 || p50 > 2*time.Millisecond {
		t.Errorf("a minute later the window holds %d answers, p50 %s; want only the new 1ms one", n, p50)
	}
	// The totals keep every answer, forgotten ones included.
	if count, sum := w.Totals(); count != 2 || sum != time.Second+time.Millisecond {
		t.Errorf("totals %d answers, %s; want 2, 1.001s", count, sum)
	}
}

func TestLatencyWindowConcurrentObserve(t *testing.T) {
	var w LatencyWindow
	now := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				w.Observe(now, time.Duration(g*1000+i)*time.Microsecond)
			}
		})
	}
	wg.Wait()
	if n, _, _ := w.Quantiles(now); n != 8000 {
		t.Errorf("window holds %d answers, want 8000", n)
	}
}

func BenchmarkLatencyWindowObserve(b *testing.B) {
	var w LatencyWindow
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Observe(now, 300*time.Microsecond)
		}
	})
}
