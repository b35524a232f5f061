package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
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

// TestFullTableStillLimits: with a table of 16 slots and 51 other clients
// in the window (each from its own loopback address), a brand-new client
// still gets exactly its 3 requests. The pressure is logged once (the log
// interval is longer than the test), counted on /metrics and shown by
// amexctl status.
func TestFullTableStillLimits(t *testing.T) {
	d := start(t, "-workers", "2", "-ratelimit.rate", "3-M", "-ratelimit.table_slots", "16",
		"-ratelimit.log_interval", "1h")
	for i := range 51 {
		src := fmt.Sprintf("127.0.1.%d", i+1)
		if status, _ := get(t, from(src), d.url("/events/circuit-status")); status != http.StatusOK {
			t.Fatalf("first request from %s: %d", src, status)
		}
	}
	newcomer := from("127.0.2.1")
	var got []int
	for range 6 {
		status, _ := get(t, newcomer, d.url("/events/circuit-status"))
		got = append(got, status)
	}
	if want := []int{200, 200, 200, 429, 429, 429}; !slices.Equal(got, want) {
		t.Errorf("a new client's 6 requests with the table full: %v, want %v", got, want)
	}

	// 16 clients hold the slots; the other 35 and the newcomer's 6
	// requests went to the overflow sketch.
	const overflowed = 35 + 6
	if n := d.metric(t, "amexd_ratelimit_table_overflow_total"); n != overflowed {
		t.Errorf("amexd_ratelimit_table_overflow_total = %v, want %d", n, overflowed)
	}
	if n := d.metric(t, "amexd_ratelimit_table_used_slots"); n != 16 {
		t.Errorf("amexd_ratelimit_table_used_slots = %v, want 16", n)
	}
	log, err := d.Log()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log, "ratelimit: shared table full"); n != 1 {
		t.Errorf("the full table was logged %d times within one log interval, want once", n)
	}
	out := d.amexctl(t, "status")
	if want := fmt.Sprintf("shared table 16 of 16 slots live, %d requests overflowed (TABLE FULL", overflowed); !strings.Contains(out, want) {
		t.Errorf("amexctl status lacks %q:\n%s", want, out)
	}
}

// TestIPv6PrefixSharesBudget: behind a trusted proxy, clients at two
// addresses of one IPv6 /64 spend one budget; the next /64 has its own.
func TestIPv6PrefixSharesBudget(t *testing.T) {
	d := start(t, "-workers", "2", "-ratelimit.rate", "3-M", "-ratelimit.trusted_proxies", "127.0.0.1/32")
	c := fresh()
	request := func(client string) int {
		req, err := http.NewRequest(http.MethodGet, d.url("/events/circuit-status"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", client)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	var got []int
	for _, client := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::1", "2001:db8:1:2:ffff::2", "2001:db8:1:3::1"} {
		got = append(got, request(client))
	}
	if want := []int{200, 200, 200, 429, 200}; !slices.Equal(got, want) {
		t.Errorf("three requests from one /64, a fourth from another address in it, one from the next /64: %v, want %v", got, want)
	}
}
