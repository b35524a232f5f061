package worker

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/simulator"
)

func TestCreateEventInvalidatesReads(t *testing.T) {
	e := newEnv(t, testConfig())
	before := e.do(t, "GET", "/events/user/2", "")
	_ = e.do(t, "GET", "/events", "")
	_ = e.do(t, "GET", "/users", "")
	if before.status != 200 || e.do(t, "GET", "/events/user/2", "").header.Get("X-Cache") != "HIT" {
		t.Fatal("user 2's events were not cached")
	}

	a := e.do(t, "POST", "/events", `{"name":"  Launch party ","userId":2,"details":"rooftop"}`)
	if a.status != http.StatusCreated {
		t.Fatalf("POST /events = %d %s", a.status, a.body)
	}
	var ev eventapi.Event
	if err := json.Unmarshal(a.body, &ev); err != nil {
		t.Fatalf("created event = %s (%v)", a.body, err)
	}
	id, err := strconv.ParseInt(string(ev.ID), 10, 64)
	if err != nil || ev.Name != "Launch party" || string(ev.UserID) != "2" || id < 1<<52 {
		t.Fatalf("created event = %s (%v), want a numeric id of 53 bits", a.body, err)
	}
	if loc := a.header.Get("Location"); loc != "/events/"+string(ev.ID) {
		t.Errorf("Location = %q", loc)
	}
	contains := func(path string) bool {
		return strings.Contains(string(e.do(t, "GET", path, "").body), string(ev.ID))
	}
	for _, path := range []string{"/events/user/2", "/events", "/users", "/users/2", "/events/" + string(ev.ID)} {
		if !contains(path) {
			t.Errorf("GET %s after the write does not show %s", path, ev.ID)
		}
	}
	if got := e.sim.Stats().AddEvent.Created; got != 1 {
		t.Errorf("upstream created %d events, want 1", got)
	}
}

func TestUnsupportedMediaType(t *testing.T) {
	e := newEnv(t, testConfig())
	req, _ := http.NewRequest("POST", e.srv.URL+"/events", strings.NewReader(`{"name":"x","userId":1}`))
	req.Header.Set("Content-Type", "text/plain")
	res, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %d, want 415", res.StatusCode)
	}
}

// TestWritesThroughFailureCycle is the acceptance run: 20 sequential POSTs
// while addEvent fails 10 times after 5 successes.
func TestWritesThroughFailureCycle(t *testing.T) {
	cfg := testConfig()
	cfg.Breaker.OpenTimeout = time.Minute
	cfg.Breaker.MaxOpenTimeout = time.Minute
	e := newEnv(t, cfg)
	var created, unavailable int
	var callsAtOpen int64 = -1
	for i := range 20 {
		a := e.do(t, "POST", "/events", `{"name":"cycle `+strconv.Itoa(i)+`","userId":1}`)
		switch a.status {
		case http.StatusCreated:
			created++
		case http.StatusServiceUnavailable:
			unavailable++
			if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("POST %d: 503 with Retry-After %q", i, a.header.Get("Retry-After"))
			}
			if code := a.errorCode(t); code == "circuit_open" && callsAtOpen < 0 {
				callsAtOpen = e.sim.Stats().Calls.AddEvent
			}
		default:
			t.Fatalf("POST %d: %d %s; want 201 or 503", i, a.status, a.body)
		}
	}
	if created != 5 {
		t.Errorf("%d created, want the cycle's 5", created)
	}
	if callsAtOpen < 0 {
		t.Fatal("the breaker never answered circuit_open")
	}
	if got := e.sim.Stats().Calls.AddEvent; got != callsAtOpen {
		t.Errorf("upstream got %d addEvent calls after the breaker opened (%d at opening), want none", got-callsAtOpen, callsAtOpen)
	}
}

func TestHalfOpenAdmitsOneProbe(t *testing.T) {
	cfg := testConfig()
	cfg.Breaker.OpenTimeout = 100 * time.Millisecond
	cfg.Breaker.MaxOpenTimeout = 100 * time.Millisecond
	cfg.Simulator.AddOK = 0 // every addEvent fails
	cfg.Simulator.AddFailDelay = 50 * time.Millisecond
	e := newEnv(t, cfg)
	// breaker.failures failed calls open it; far more is a breaker that
	// never opens, which must fail here rather than hang the test.
	for posts := 0; e.up.Breaker("addEvent").Status().State != "open"; posts++ {
		if posts == 20*cfg.Breaker.Failures {
			t.Fatalf("addEvent's breaker still %s after %d failed POSTs (breaker.failures %d)",
				e.up.Breaker("addEvent").Status().State, posts, cfg.Breaker.Failures)
		}
		if a := e.do(t, "POST", "/events", `{"name":"trip","userId":1}`); a.status != http.StatusServiceUnavailable {
			t.Fatalf("POST while addEvent fails: %d", a.status)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.up.Breaker("addEvent").Status().State != "half-open" {
		if time.Now().After(deadline) {
			t.Fatal("breaker did not half-open")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	// The probe's failure reopens the breaker and, 100 ms later, it would
	// half-open again for a POST that a loaded machine had not sent yet. A
	// probe that stays in flight until every POST has been answered keeps
	// the half-open state for all 50, however slow the machine is.
	if err := e.sim.Update(func(c *simulator.Config) { c.AddFailDelay = 5 * time.Second }); err != nil {
		t.Fatal(err)
	}
	before := e.sim.Stats().Calls.AddEvent
	var wg sync.WaitGroup
	statuses := make([]int, 50)
	for i := range statuses {
		wg.Go(func() { statuses[i] = e.do(t, "POST", "/events", `{"name":"probe","userId":1}`).status })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusServiceUnavailable {
			t.Errorf("POST %d in half-open: %d, want 503", i, s)
		}
	}
	if probes := e.sim.Stats().Calls.AddEvent - before; probes != int64(cfg.Breaker.HalfOpenProbes) {
		t.Errorf("50 concurrent POSTs in half-open made %d upstream calls, want %d", probes, cfg.Breaker.HalfOpenProbes)
	}
}

func TestStaleWhileBreakerOpen(t *testing.T) {
	cfg := testConfig()
	cfg.Cache.Users.Fresh = time.Millisecond
	cfg.Breaker.OpenTimeout = time.Minute
	cfg.Breaker.MaxOpenTimeout = time.Minute
	e := newEnv(t, cfg)
	first := e.do(t, "GET", "/users", "")
	if first.status != 200 {
		t.Fatal(first.status)
	}
	if err := e.sim.Update(func(c *simulator.Config) { c.ListErrorRate = 1 }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, st, _ := e.cache.Peek("users"); st != "HIT" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the users entry stayed fresh")
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
	for e.up.Breaker("getUsers").Status().State != "open" {
		if time.Now().After(deadline) {
			t.Fatal("getUsers breaker did not open")
		}
		a := e.do(t, "GET", "/users", "")
		if a.status != 200 || a.header.Get("X-Cache") != "STALE" || string(a.body) != string(first.body) {
			t.Fatalf("GET /users while upstream fails: %d X-Cache %q", a.status, a.header.Get("X-Cache"))
		}
	}
	a := e.do(t, "GET", "/users", "")
	if a.status != 200 || a.header.Get("X-Cache") != "STALE" {
		t.Errorf("GET /users with the breaker open: %d X-Cache %q, want 200 STALE", a.status, a.header.Get("X-Cache"))
	}
	// Nothing cached for the events list: a clear 503, not a 500.
	ev := e.do(t, "GET", "/events", "")
	if ev.status != http.StatusServiceUnavailable || ev.header.Get("Retry-After") == "" {
		t.Errorf("GET /events with failing upstream and no stale entry: %d Retry-After %q", ev.status, ev.header.Get("Retry-After"))
	}
	ev.errorCode(t)
}

func TestRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit.Rate = "100-M"
	e := newEnv(t, cfg)
	for i := 1; i <= 100; i++ {
		a := e.do(t, "GET", "/events/circuit-status", "")
		if a.status != 200 {
			t.Fatalf("request %d: %d", i, a.status)
		}
		if got := a.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(100-i) {
			t.Fatalf("request %d: X-RateLimit-Remaining %q, want %d", i, got, 100-i)
		}
		if a.header.Get("X-RateLimit-Limit") != "100" || a.header.Get("X-RateLimit-Reset") == "" {
			t.Fatalf("request %d: limit headers %v", i, a.header)
		}
	}
	a := e.do(t, "GET", "/users", "")
	if a.status != http.StatusTooManyRequests {
		t.Fatalf("101st request: %d, want 429", a.status)
	}
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want 1..60 seconds", a.header.Get("Retry-After"))
	}
	if code := a.errorCode(t); code != "rate_limited" {
		t.Errorf("code %q", code)
	}
	if h := e.do(t, "GET", "/healthz", ""); h.status != 200 {
		t.Errorf("health probe limited: %d", h.status)
	}
}

func TestPerRouteLimit(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit.Routes = append(cfg.RateLimit.Routes, routeLimit("POST", "/events", "2-M"))
	e := newEnv(t, cfg)
	for i := range 2 {
		if a := e.do(t, "POST", "/events", `{"name":"r","userId":1}`); a.status != http.StatusCreated {
			t.Fatalf("POST %d: %d %s", i, a.status, a.body)
		}
	}
	if a := e.do(t, "POST", "/events", `{"name":"r","userId":1}`); a.status != http.StatusTooManyRequests {
		t.Errorf("third POST under a 2-M route limit: %d, want 429", a.status)
	}
	if a := e.do(t, "GET", "/users", ""); a.status != 200 {
		t.Errorf("GET after the POST limit: %d, want 200", a.status)
	}
}

func routeLimit(method, path, rate string) ratelimit.Route {
	return ratelimit.Route{Method: method, Path: path, Rate: rate}
}
