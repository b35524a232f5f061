package e2e

import (
	"net/http"
	"testing"
)

// TestLimitHoldsAcrossWorkers: with 3 workers and 30 per minute, 90 requests
// from one client, each on a new connection (so spread over the workers),
// get exactly 30 answers of 200 and 60 of 429.
func TestLimitHoldsAcrossWorkers(t *testing.T) {
	d := start(t, "-workers", "3", "-ratelimit.rate", "30-M", "-ratelimit.store", "shared")
	c := fresh()
	counts := map[int]int{}
	for range 90 {
		status, _ := get(t, c, d.url("/events/circuit-status"))
		counts[status]++
	}
	if counts[http.StatusOK] != 30 || counts[http.StatusTooManyRequests] != 60 || len(counts) != 2 {
		t.Errorf("answers by status %v, want exactly 30×200 and 60×429", counts)
	}
}
