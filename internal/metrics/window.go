package metrics

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// The window is windowSlices slices of sliceWidth each: a quantile covers
// the current slice and the ones before it, 55 to 60 seconds of answers.
const (
	windowSlices = 12
	sliceWidth   = 5 * time.Second
)

// Buckets are log-linear over microseconds: exact below 8µs, then 8 per
// power of two (at most 12.5% wide), the last one open-ended (past ~17 min).
const (
	subBuckets    = 8
	windowBuckets = subBuckets * 28
)

// LatencyWindow is a histogram of the answer times of about the last
// minute, cheap enough to feed from every request: Observe is four atomic
// operations, and a mutex only when a slice starts again, once per slice.
// It also keeps the count and sum of every answer since it was made, which
// a Prometheus summary carries beside its quantiles.
type LatencyWindow struct {
	rotate sync.Mutex
	slices [windowSlices]windowSlice
	total  atomic.Uint64
	sumNs  atomic.Int64
}

type windowSlice struct {
	// epoch is which sliceWidth interval since 1970 the counts are of.
	epoch  atomic.Int64
	counts [windowBuckets]atomic.Uint64
}

// Observe records an answer that took d and ended at end.
func (w *LatencyWindow) Observe(end time.Time, d time.Duration) {
	epoch := end.UnixNano() / int64(sliceWidth)
	s := &w.slices[epoch%windowSlices]
	if s.epoch.Load() != epoch {
		w.restart(s, epoch)
	}
	s.counts[bucketOf(d)].Add(1)
	w.total.Add(1)
	w.sumNs.Add(int64(max(d, 0)))
}

// Totals returns how many answers were observed since the window was made
// and the sum of their times.
func (w *LatencyWindow) Totals() (count uint64, sum time.Duration) {
	return w.total.Load(), time.Duration(w.sumNs.Load())
}

// restart empties s for epoch, unless another caller just did.
func (w *LatencyWindow) restart(s *windowSlice, epoch int64) {
	w.rotate.Lock()
	defer w.rotate.Unlock()
	if s.epoch.Load() == epoch {
		return
	}
	for i := range s.counts {
		s.counts[i].Store(0)
	}
	s.epoch.Store(epoch)
}

// Quantiles returns how many answers the window as of now holds and its
// median and 99th percentile, each the middle of its bucket; zeros when
// the window is empty.
func (w *LatencyWindow) Quantiles(now time.Time) (count uint64, p50, p99 time.Duration) {
	current := now.UnixNano() / int64(sliceWidth)
	var sum [windowBuckets]uint64
	for i := range w.slices {
		s := &w.slices[i]
		if e := s.epoch.Load(); e <= current-windowSlices || e > current {
			continue
		}
		for b := range s.counts {
			n := s.counts[b].Load()
			sum[b] += n
			count += n
		}
	}
	if count == 0 {
		return 0, 0, 0
	}
	return count, rankValue(&sum, count, 0.5), rankValue(&sum, count, 0.99)
}

// rankValue is the middle of the bucket holding the answer at quantile q.
func rankValue(sum *[windowBuckets]uint64, count uint64, q float64) time.Duration {
	rank := max(uint64(q*float64(count)+0.5), 1)
	var seen uint64
	for b, n := range sum {
		if seen += n; seen >= rank {
			low, width := bucketBounds(b)
			return time.Duration(low)*time.Microsecond + time.Duration(width)*time.Microsecond/2
		}
	}
	return 0
}

// bucketOf is d's bucket: exact microseconds below subBuckets, then the top
// four bits of the microseconds, so eight sub-buckets per power of two.
func bucketOf(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < subBuckets {
		return int(us)
	}
	shift := bits.Len64(us) - 4
	top := us >> shift // in [8, 16)
	return min(subBuckets*(shift+1)+int(top-subBuckets), windowBuckets-1)
}

// bucketBounds returns the lowest microsecond value of bucket b and its
// width in microseconds.
func bucketBounds(b int) (low, width uint64) {
	if b < subBuckets {
		return uint64(b), 1
	}
	shift := b/subBuckets - 1
	return uint64(subBuckets+b%subBuckets) << shift, 1 << shift
}
