package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

func TestRequestLimitSpreadsWithJitter(t *testing.T) {
	sc := config.Default().Supervisor
	if requestLimit(sc) != 0 {
		t.Error("a limit without max_requests")
	}
	sc.MaxRequests, sc.MaxRequestsJitter = 1000, 100
	seen := map[uint64]bool{}
	for range 200 {
		n := requestLimit(sc)
		if n < 1000 || n > 1100 {
			t.Fatalf("limit %d outside [1000, 1100]", n)
		}
		seen[n] = true
	}
	if len(seen) < 10 {
		t.Errorf("200 draws gave %d distinct limits; the jitter does not spread them", len(seen))
	}
}

func TestRecycleReason(t *testing.T) {
	now := time.Now()
	sc := config.Default().Supervisor
	sc.HealthyAfter = time.Minute
	sc.MaxMemory = 100 << 20
	old := now.Add(-2 * time.Minute)
	for _, tc := range []struct {
		name string
		p    proc
		want string
	}{
		{"young", proc{state: stateReady, readyAt: now, maxRequests: 10, stats: control.Stats{Requests: 50}}, ""},
		{"past its requests", proc{state: stateReady, readyAt: old, maxRequests: 10, stats: control.Stats{Requests: 10}}, reasonRequests},
		{"below its requests", proc{state: stateReady, readyAt: old, maxRequests: 10, stats: control.Stats{Requests: 9}}, ""},
		{"over max_memory", proc{state: stateReady, readyAt: old, stats: control.Stats{Process: control.Process{RSSBytes: 101 << 20}}}, reasonMemory},
		{"draining", proc{state: stateDraining, readyAt: old, maxRequests: 1, stats: control.Stats{Requests: 5}}, ""},
	} {
		if got := recycleReason(&tc.p, sc, now); got != tc.want {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCanaryVerdict(t *testing.T) {
	for _, tc := range []struct {
		name        string
		canary, old counts
		worse       string // substring of the verdict; empty for none
	}{
		{"same", counts{requests: 100, errors: 1, workers: 1}, counts{requests: 300, errors: 3, workers: 3}, ""},
		{"all 5xx", counts{requests: 20, errors: 20, workers: 1}, counts{requests: 60, workers: 3}, "20 of 20"},
		{"too few to judge", counts{requests: 3, errors: 3, workers: 1}, counts{requests: 60, workers: 3}, ""},
		{"breakers opened", counts{requests: 2, opens: 1, workers: 1}, counts{requests: 60, workers: 3}, "opened 1 circuit breakers"},
		{"old workers as bad", counts{requests: 20, errors: 20, workers: 1}, counts{requests: 60, errors: 60, workers: 3}, ""},
	} {
		got := verdict(tc.canary, tc.old)
		if (tc.worse == "") != (got == "") || !strings.Contains(got, tc.worse) {
			t.Errorf("%s: verdict %q, want one containing %q", tc.name, got, tc.worse)
		}
	}
}

// Entries whose keys a write invalidated around the transfer's start are
// not relayed: the fan-out of that write may have missed the new worker.
func TestWarmRelayDropsInvalidatedKeys(t *testing.T) {
	o := &owner{cfg: config.Default()}
	o.noteInvalidation([]string{"user:1", "user-events:1"})
	tr := &transfer{began: time.Now()}
	kept := o.withoutInvalidated(tr, []control.CacheEntry{{Key: "user:1"}, {Key: "user:2"}, {Key: "user-events:1"}})
	if len(kept) != 1 || kept[0].Key != "user:2" || tr.dropped != 2 {
		t.Errorf("kept %+v (dropped %d), want only user:2", kept, tr.dropped)
	}
	o.invalidated[0].at = time.Now().Add(-time.Hour)
	if kept := o.withoutInvalidated(tr, []control.CacheEntry{{Key: "user:1"}}); len(kept) != 1 {
		t.Error("an invalidation long before the transfer still drops its key")
	}
}
