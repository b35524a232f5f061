package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/simulator"
)

// TestReadYourWritesAcrossWorkers: POST then GET on fresh connections,
// repeated, so reads land on every worker: the new event is always there.
func TestReadYourWritesAcrossWorkers(t *testing.T) {
	d := start(t, "-workers", "3", "-simulator.add_fail", "0", "-simulator.list_error_rate", "0",
		"-simulator.event_delay", "5ms", "-ratelimit.rate", "100000-M")
	c := fresh()
	paths := []string{"/events/user/2", "/events", "/users/2", "/users"}
	for i := range 15 {
		for _, p := range paths { // warm every worker's cache with the old answers
			for range 3 {
				if status, body := get(t, c, d.url(p)); status != 200 {
					t.Fatalf("GET %s: %d %s", p, status, body)
				}
			}
		}
		status, body := post(t, c, d.url("/events"), `{"name":"ryw `+strconv.Itoa(i)+`","userId":2}`)
		if status != http.StatusCreated {
			t.Fatalf("POST: %d %s", status, body)
		}
		var ev eventapi.Event
		if err := json.Unmarshal([]byte(body), &ev); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			for range 3 {
				if status, got := get(t, c, d.url(p)); status != 200 || !strings.Contains(got, string(ev.ID)) {
					t.Fatalf("write %d: GET %s right after the 201 (%d) lacks %s", i, p, status, ev.ID)
				}
			}
		}
	}
}

// failingUpstream is a simulator whose addEvent always fails.
func failingUpstream(t *testing.T) (*simulator.Simulator, string) {
	return upstreamWith(t, func(c *simulator.Config) { c.AddOK, c.AddFailDelay = 0, 0 })
}

// TestBreakerPropagation: while addEvent fails, three workers with
// propagation send the upstream no more addEvent calls than one worker
// alone would (the attempts that trip one breaker); without propagation
// each worker trips its own.
func TestBreakerPropagation(t *testing.T) {
	for _, tc := range []struct {
		propagate bool
		check     func(calls int64) bool
		want      string
	}{
		{true, func(n int64) bool { return n <= 3 }, "at most 3 (one worker's attempts before it trips)"},
		{false, func(n int64) bool { return n > 3 }, "more than 3 (each worker trips its own breaker)"},
	} {
		t.Run("propagate="+strconv.FormatBool(tc.propagate), func(t *testing.T) {
			sim, up := failingUpstream(t)
			d := start(t, "-workers", "3", "-upstream.url", up, "-breaker.open_timeout", "1m",
				"-breaker.max_open_timeout", "1m", "-breaker.propagate="+strconv.FormatBool(tc.propagate),
				"-upstream.retry_base", "1ms", "-upstream.retry_max", "2ms", "-ratelimit.rate", "100000-M")
			c := fresh()
			for range 30 {
				status, body := post(t, c, d.url("/events"), `{"name":"x","userId":1}`)
				if status != http.StatusServiceUnavailable {
					t.Fatalf("POST while addEvent fails: %d %s", status, body)
				}
			}
			calls := sim.Stats().Calls.AddEvent
			t.Logf("30 POSTs over 3 workers: %d addEvent calls upstream", calls)
			if !tc.check(calls) {
				t.Errorf("upstream got %d addEvent calls, want %s", calls, tc.want)
			}
		})
	}
}

// TestEventsSharedAcrossWorkers: events never change, so an event one worker
// fetched is offered to the others, and a user's events fetched once are
// not fetched again by another worker.
func TestEventsSharedAcrossWorkers(t *testing.T) {
	cfg := simulator.DefaultConfig()
	cfg.ListErrorRate = 0
	cfg.EventDelay = 50 * time.Millisecond
	cfg.PreloadUser, cfg.PreloadEvents = 2, 51 // and the 1 the seed gives user 2
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	d := start(t, "-workers", "3", "-upstream.url", up.URL, "-ratelimit.rate", "100000-M", "-supervisor.heartbeat_interval", "100ms")
	c := fresh()
	if status, body := get(t, c, d.url("/events/user/2")); status != 200 || strings.Count(body, `"id"`) != 52 {
		t.Fatalf("first GET: %d, %d events", status, strings.Count(body, `"id"`))
	}
	fetched := sim.Stats().Calls.GetEventByID
	if fetched != 52 {
		t.Fatalf("the first GET made %d getEventById calls, want 52", fetched)
	}
	// Wait until every worker holds the shared events (heartbeats report
	// cache entries), then read on fresh connections, spread over workers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := operator.Call(t.Context(), d.op, operator.GetWorkers, operator.None{})
		if err == nil && len(st.Workers) == 3 &&
			st.Workers[0].Cache.Entries >= 52 && st.Workers[1].Cache.Entries >= 52 && st.Workers[2].Cache.Entries >= 52 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers' caches did not receive the shared events: %+v", st)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	for range 12 {
		if status, _ := get(t, c, d.url("/events/user/2")); status != 200 {
			t.Fatalf("repeat: %d", status)
		}
	}
	if got := sim.Stats().Calls.GetEventByID; got != fetched {
		t.Errorf("repeats on other workers made %d more getEventById calls, want 0", got-fetched)
	}
}
