package eventapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// quietConfig is a configuration without delays or faults, seeded, so each
// test turns on only the behaviour it checks.
func quietConfig() SimConfig {
	return SimConfig{Seed: 1}
}

func newSim(t testing.TB, mutate func(*SimConfig)) *Simulator {
	t.Helper()
	cfg := quietConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewSimulator(cfg)
	if err != nil {
		t.Fatalf("NewSimulator: %v", err)
	}
	return s
}

func do(t testing.TB, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, body, err)
	}
	return v
}

func users(t testing.TB, s *Simulator) []User {
	t.Helper()
	rec := do(t, s, http.MethodGet, PathUsers, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("getUsers: status %d", rec.Code)
	}
	return decode[[]User](t, rec.Body.Bytes())
}

func events(t testing.TB, s *Simulator) []Event {
	t.Helper()
	rec := do(t, s, http.MethodGet, PathEvents, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("getEvents: status %d", rec.Code)
	}
	return decode[[]Event](t, rec.Body.Bytes())
}

// checkCoherent asserts that event IDs are unique and that every user's
// Events list is exactly its events in creation order.
func checkCoherent(t *testing.T, us []User, evs []Event) {
	t.Helper()
	seen := make(map[string]bool)
	byUser := make(map[int][]string)
	for _, e := range evs {
		if seen[e.ID] {
			t.Errorf("duplicate event id %s", e.ID)
		}
		seen[e.ID] = true
		byUser[e.UserID] = append(byUser[e.UserID], e.ID)
	}
	for _, u := range us {
		if !slices.Equal(u.Events, byUser[u.ID]) {
			t.Errorf("user %d lists %v, events say %v", u.ID, u.Events, byUser[u.ID])
		}
		delete(byUser, u.ID)
	}
	if len(byUser) != 0 {
		t.Errorf("events of unknown users: %v", byUser)
	}
}

func TestSeedData(t *testing.T) {
	s := newSim(t, nil)
	us, evs := users(t, s), events(t, s)
	if len(us) != 3 {
		t.Fatalf("got %d users, want 3", len(us))
	}
	names, emails := map[string]bool{}, map[string]bool{}
	for i, u := range us {
		if u.ID != i+1 {
			t.Errorf("user %d has id %d", i, u.ID)
		}
		if n := len(u.Events); n < 2 || n > 3 {
			t.Errorf("user %d has %d events, want 2 or 3", u.ID, n)
		}
		names[u.Name], emails[u.Email] = true, true
	}
	if len(names) != 3 || len(emails) != 3 {
		t.Errorf("names %v and emails %v are not distinct", names, emails)
	}
	for i, e := range evs {
		if want := fmt.Sprintf("event-%d", i+1); e.ID != want {
			t.Errorf("event %d has id %s, want %s", i, e.ID, want)
		}
	}
	checkCoherent(t, us, evs)
}

func TestRoutes(t *testing.T) {
	tests := []struct {
		method, path, body string
		want               int
		allow              string
	}{
		{"GET", "/getUsers", "", 200, ""},
		{"HEAD", "/getUsers", "", 200, ""},
		{"GET", "/getUserById/2", "", 200, ""},
		{"GET", "/getUserById/9", "", 404, ""},
		{"GET", "/getUserById/abc", "", 400, ""},
		{"GET", "/getUserById/0", "", 400, ""},
		{"GET", "/getUserById/-1", "", 400, ""},
		{"GET", "/getUserById/", "", 404, ""},
		{"GET", "/getEvents", "", 200, ""},
		{"GET", "/getEventById/event-3", "", 200, ""},
		{"GET", "/getEventById/3", "", 200, ""},
		{"GET", "/getEventById/event-99", "", 404, ""},
		{"GET", "/getEventById/event-x", "", 400, ""},
		{"GET", "/getEventById/event-0", "", 400, ""},
		{"GET", "/getEventById/event-03", "", 400, ""},
		{"POST", "/addEvent", `{"name":"Demo","userId":1}`, 201, ""},
		{"POST", "/addEvent", `{"name":`, 400, ""},
		{"POST", "/addEvent", `{"name":"Demo","userId":"1"}`, 201, ""},
		{"POST", "/addEvent", `{"name":"Demo","userId":"one"}`, 400, ""},
		{"POST", "/addEvent", `{"name":"Demo","userId":true}`, 400, ""},
		{"POST", "/addEvent", `{"id":{},"name":"Demo","userId":1}`, 400, ""},
		{"POST", "/addEvent", `{"name":"  ","userId":1}`, 400, ""},
		{"POST", "/addEvent", `{"name":"Demo"}`, 400, ""},
		{"POST", "/addEvent", `{"name":"Demo","userId":9}`, 404, ""},
		{"POST", "/addEvent", `{"id":"7","name":"Demo","userId":1}`, 409, ""},
		{"POST", "/addEvent", `{"id":"event-1","name":"Other","userId":1}`, 409, ""},
		{"POST", "/addEvent", `{"name":"` + strings.Repeat("x", maxBodyBytes) + `","userId":1}`, 413, ""},
		{"POST", "/getUsers", "", 405, "HEAD, GET"},
		{"DELETE", "/getUserById/1", "", 405, "HEAD, GET"},
		{"GET", "/addEvent", "", 405, "POST"},
		{"GET", "/stats/reset", "", 405, "POST"},
		{"PUT", "/admin/config", "", 405, "HEAD, GET, POST"},
		{"GET", "/stats", "", 200, ""},
		{"POST", "/stats/reset", "", 204, ""},
		{"GET", "/admin/config", "", 200, ""},
		{"POST", "/admin/config", `{}`, 200, ""},
		{"GET", "/nope", "", 404, ""},
		{"GET", "/getUserById/1/x", "", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path[:min(len(tt.path), 40)], func(t *testing.T) {
			rec := do(t, newSim(t, nil), tt.method, tt.path, tt.body)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.want, rec.Body)
			}
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if tt.want == http.StatusNoContent || tt.method == http.MethodHead {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.want >= 400 {
				if e := decode[Error](t, rec.Body.Bytes()); e.Error == "" {
					t.Errorf("empty error message")
				}
			}
		})
	}
}

func TestGetByID(t *testing.T) {
	s := newSim(t, nil)
	u := decode[User](t, do(t, s, "GET", "/getUserById/2", "").Body.Bytes())
	if u.ID != 2 || len(u.Events) == 0 {
		t.Errorf("getUserById/2 = %+v", u)
	}
	for _, id := range []string{"3", "event-3"} {
		e := decode[Event](t, do(t, s, "GET", "/getEventById/"+id, "").Body.Bytes())
		if e.ID != "event-3" || e.Name == "" || e.UserID == 0 {
			t.Errorf("getEventById/%s = %+v", id, e)
		}
	}
	rec := do(t, s, "GET", "/getUserById/7", "")
	if e := decode[Error](t, rec.Body.Bytes()); e.Error != "user 7 not found" {
		t.Errorf("unknown user error %q", e.Error)
	}
}

func TestAddEvent(t *testing.T) {
	s := newSim(t, nil)
	before := len(events(t, s))
	rec := do(t, s, "POST", "/addEvent", `{"name":" Demo ","userId":2,"details":"d"}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	got := decode[Event](t, rec.Body.Bytes())
	want := Event{ID: fmt.Sprintf("event-%d", before+1), Name: "Demo", UserID: 2, Details: "d"}
	if got != want {
		t.Fatalf("created %+v, want %+v", got, want)
	}
	if e := decode[Event](t, do(t, s, "GET", "/getEventById/"+got.ID, "").Body.Bytes()); e != want {
		t.Errorf("getEventById = %+v", e)
	}
	u := decode[User](t, do(t, s, "GET", "/getUserById/2", "").Body.Bytes())
	if u.Events[len(u.Events)-1] != want.ID {
		t.Errorf("user 2 events %v do not end with %s", u.Events, want.ID)
	}
	checkCoherent(t, users(t, s), events(t, s))
	if st := s.Stats(); st.AddEvent.Created != 1 || st.Events != before+1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAddEventSuppliedID(t *testing.T) {
	s := newSim(t, nil)
	steps := []struct {
		body   string
		want   int
		wantID string
	}{
		{`{"id":"event-100","name":"A","userId":1}`, 201, "event-100"},
		{`{"name":"B","userId":2}`, 201, "event-101"},
		{`{"id":"event-100","name":"A","userId":1,"details":"ignored"}`, 200, "event-100"},
		{`{"id":"event-100","name":"A","userId":3}`, 409, ""},
		{`{"id":"event-100","name":"Z","userId":1}`, 409, ""},
		{`{"id":"event-50","name":"C","userId":3}`, 201, "event-50"},
		{`{"name":"D","userId":3}`, 201, "event-102"},
		{`{"id":"event-9223372036854775807","name":"E","userId":1}`, 201, "event-9223372036854775807"},
		{`{"name":"F","userId":1}`, 409, ""},
		{`{"id":"event-9223372036854775808","name":"G","userId":1}`, 400, ""},
	}
	for i, st := range steps {
		rec := do(t, s, "POST", "/addEvent", st.body)
		if rec.Code != st.want {
			t.Fatalf("step %d: status %d, want %d: %s", i, rec.Code, st.want, rec.Body)
		}
		if st.wantID != "" {
			if got := decode[Event](t, rec.Body.Bytes()).ID; got != st.wantID {
				t.Fatalf("step %d: id %s, want %s", i, got, st.wantID)
			}
		}
	}
	checkCoherent(t, users(t, s), events(t, s))
	stats := s.Stats()
	want := AddEventCounts{Created: 5, Replayed: 1, Rejected: 4}
	if stats.AddEvent != want || stats.Events != len(seedEvents)+5 {
		t.Errorf("stats %+v, want addEvent %+v and %d events", stats, want, len(seedEvents)+5)
	}
}

// TestAddEventOriginalClient is a client built like the original service:
// it sends {"id": Date.now(), ...} with userId as a string, reads
// "success" and stores what it sent. IDs stay unique whatever it sends.
func TestAddEventOriginalClient(t *testing.T) {
	s := newSim(t, nil)
	before := len(events(t, s))
	steps := []struct {
		body, wantID string
		want         int
	}{
		{`{"id":1733000000000,"name":"x","userId":"3"}`, "event-1733000000000", 201},
		{`{"id":1733000000000,"name":"x","userId":3}`, "event-1733000000000", 200},
		{`{"id":1733000000000,"name":"other","userId":"3"}`, "", 409},
		{`{"id":"1733000000001","name":"y","userId":"2"}`, "event-1733000000001", 201},
		{`{"id":"client-ref-9","name":"z","userId":1}`, "event-1733000000002", 201},
		{`{"id":-5,"name":"w","userId":1}`, "event-1733000000003", 201},
	}
	for i, st := range steps {
		rec := do(t, s, "POST", "/addEvent", st.body)
		if rec.Code != st.want {
			t.Fatalf("step %d: status %d, want %d: %s", i, rec.Code, st.want, rec.Body)
		}
		if st.wantID == "" {
			continue
		}
		got := decode[Created](t, rec.Body.Bytes())
		if !got.Success || got.ID != st.wantID {
			t.Fatalf("step %d: answer %s, want success and id %s", i, rec.Body, st.wantID)
		}
	}
	if n := len(events(t, s)); n != before+4 {
		t.Errorf("%d events, want %d", n, before+4)
	}
	checkCoherent(t, users(t, s), events(t, s))
}

func TestAddEventFailureCycle(t *testing.T) {
	s := newSim(t, func(c *SimConfig) {
		c.AddOK, c.AddFail, c.AddFailDelay = 5, 10, time.Millisecond
	})
	var got []int
	for range 45 {
		got = append(got, do(t, s, "POST", "/addEvent", `{"name":"x","userId":1}`).Code)
	}
	var want []int
	for i := range 45 {
		want = append(want, map[bool]int{true: 201, false: 503}[i%15 < 5])
	}
	if !slices.Equal(got, want) {
		t.Fatalf("statuses\n got %v\nwant %v", got, want)
	}
	st := s.Stats()
	if st.AddEvent.Created != 15 || st.AddEvent.Failed != 30 || st.Events != len(seedEvents)+15 {
		t.Errorf("stats %+v: failing calls must create nothing", st)
	}
	checkCoherent(t, users(t, s), events(t, s))

	// A reset restarts the cycle mid-way.
	do(t, s, "POST", "/addEvent", `{"name":"x","userId":1}`)
	s.ResetStats()
	for i := range 6 {
		code := do(t, s, "POST", "/addEvent", `{"name":"x","userId":1}`).Code
		if want := map[bool]int{true: 201, false: 503}[i < 5]; code != want {
			t.Fatalf("after reset call %d: status %d, want %d", i, code, want)
		}
	}
}

func TestAddEventNeverFailsWithAddFailZero(t *testing.T) {
	s := newSim(t, func(c *SimConfig) { c.AddOK, c.AddFail = 1, 0 })
	for i := range 30 {
		if code := do(t, s, "POST", "/addEvent", `{"name":"x","userId":3}`).Code; code != 201 {
			t.Fatalf("call %d: status %d", i, code)
		}
	}
}

func TestDelays(t *testing.T) {
	const delay = 40 * time.Millisecond
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"getEventById", "GET", "/getEventById/event-1", "", 200},
		{"getEventById bad id", "GET", "/getEventById/nope", "", 400},
		{"failing addEvent", "POST", "/addEvent", `{"name":"x","userId":1}`, 503},
	}
	s := newSim(t, func(c *SimConfig) {
		c.EventDelay, c.AddOK, c.AddFail, c.AddFailDelay = delay, 0, 1, delay
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			rec := do(t, s, tt.method, tt.path, tt.body)
			if elapsed := time.Since(start); elapsed < delay {
				t.Errorf("answered after %v, want at least %v", elapsed, delay)
			}
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d", rec.Code, tt.want)
			}
		})
	}
}

func TestCancellationAbortsDelay(t *testing.T) {
	s := newSim(t, func(c *SimConfig) {
		c.EventDelay, c.AddOK, c.AddFail, c.AddFailDelay = time.Hour, 0, 1, time.Hour
	})
	for _, path := range []string{"/getEventById/event-1", "/addEvent"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			req := httptest.NewRequest("GET", path, strings.NewReader(`{"name":"x","userId":1}`)).WithContext(ctx)
			if path == "/addEvent" {
				req.Method = "POST"
			}
			rec := httptest.NewRecorder()
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.ServeHTTP(rec, req)
			}()
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("handler still waiting after its context was cancelled")
			}
			if rec.Code != http.StatusServiceUnavailable {
				t.Errorf("status %d, want 503", rec.Code)
			}
		})
	}
	if st := s.Stats(); st.Events != len(seedEvents) {
		t.Errorf("a cancelled addEvent created something: %+v", st)
	}
}

func TestConcurrentAddEvent(t *testing.T) {
	s := newSim(t, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	const n = 50
	ids := make([]string, n)
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"name":"event %d","userId":%d}`, i, i%3+1)
			resp, err := http.Post(srv.URL+PathAddEvent, "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var e Event
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 201 {
				errs <- fmt.Errorf("call %d: status %d, decode %v", i, resp.StatusCode, err)
				return
			}
			ids[i] = e.ID
			// Readers run alongside the writers so -race sees both.
			if r, err := http.Get(srv.URL + PathUsers); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			} else {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if slices.Sort(ids); len(slices.Compact(ids)) != n {
		t.Errorf("ids not unique: %v", ids)
	}
	evs := events(t, s)
	if len(evs) != len(seedEvents)+n {
		t.Errorf("%d events, want %d", len(evs), len(seedEvents)+n)
	}
	checkCoherent(t, users(t, s), evs)
}

// fetch GETs path on a fresh connection, so that http.Transport never
// retries a dropped request on its own, and reports the status or -1 for a
// connection-level failure.
func fetch(t *testing.T, client *http.Client, url string) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func noKeepAlive() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestListErrorRate(t *testing.T) {
	for _, rate := range []float64{0, 1} {
		for _, path := range []string{PathUsers, PathEvents} {
			t.Run(fmt.Sprintf("%v%s", rate, path), func(t *testing.T) {
				s := newSim(t, func(c *SimConfig) { c.ListErrorRate = rate })
				srv := httptest.NewServer(s)
				defer srv.Close()
				want := map[float64]int{0: 200, 1: -1}[rate]
				for i := range 20 {
					if got := fetch(t, noKeepAlive(), srv.URL+path); got != want {
						t.Fatalf("call %d: got %d, want %d (-1: connection error)", i, got, want)
					}
				}
				if want == -1 && s.Stats().Dropped != 20 {
					t.Errorf("stats dropped %d, want 20", s.Stats().Dropped)
				}
			})
		}
	}
}

func TestDropsReproducibleWithSeed(t *testing.T) {
	sequence := func(s *Simulator, url string) []int {
		var got []int
		for range 40 {
			got = append(got, fetch(t, noKeepAlive(), url+PathUsers))
		}
		return got
	}
	var runs [][]int
	for range 2 {
		s := newSim(t, func(c *SimConfig) { c.Seed, c.ListErrorRate = 42, 0.5 })
		srv := httptest.NewServer(s)
		runs = append(runs, sequence(s, srv.URL))
		// Reseeding through /admin/config replays the same sequence.
		if rec := do(t, s, "POST", PathAdminConfig, `{"seed":42}`); rec.Code != 200 {
			t.Fatalf("reseed: status %d", rec.Code)
		}
		runs = append(runs, sequence(s, srv.URL))
		srv.Close()
	}
	for i := 1; i < len(runs); i++ {
		if !slices.Equal(runs[0], runs[i]) {
			t.Errorf("run %d differs:\n%v\n%v", i, runs[0], runs[i])
		}
	}
	if !slices.Contains(runs[0], -1) || !slices.Contains(runs[0], 200) {
		t.Errorf("rate 0.5 gave no mix of drops and successes: %v", runs[0])
	}
}

func TestPreload(t *testing.T) {
	s := newSim(t, func(c *SimConfig) { c.PreloadUser, c.PreloadEvents = 2, 150 })
	us, evs := users(t, s), events(t, s)
	if got := len(us[1].Events); got != 2+150 {
		t.Errorf("user 2 has %d events, want 152", got)
	}
	if len(evs) != len(seedEvents)+150 || s.Stats().Events != len(evs) {
		t.Errorf("%d events, stats %+v", len(evs), s.Stats())
	}
	checkCoherent(t, us, evs)
	last := us[1].Events[len(us[1].Events)-1]
	if rec := do(t, s, "GET", "/getEventById/"+last, ""); rec.Code != 200 {
		t.Errorf("preloaded %s: status %d", last, rec.Code)
	}
}

func TestStatsAndReset(t *testing.T) {
	s := newSim(t, func(c *SimConfig) { c.AddOK, c.AddFail = 1, 1 })
	calls := []struct{ method, path, body string }{
		{"GET", "/getUsers", ""},
		{"GET", "/getUsers", ""},
		{"GET", "/getUserById/1", ""},
		{"GET", "/getEvents", ""},
		{"GET", "/getEventById/1", ""},
		{"GET", "/getEventById/2", ""},
		{"GET", "/getEventById/x", ""},
		{"POST", "/addEvent", `{"name":"a","userId":1}`},
		{"POST", "/addEvent", `{"name":"b","userId":1}`},
		{"POST", "/addEvent", `{"name":"c","userId":9}`},
		{"GET", "/stats", ""},
	}
	for _, c := range calls {
		do(t, s, c.method, c.path, c.body)
	}
	want := Stats{
		Calls:    CallCounts{GetUsers: 2, GetUserByID: 1, GetEvents: 1, GetEventByID: 3, AddEvent: 3},
		AddEvent: AddEventCounts{Created: 1, Failed: 1, Rejected: 1},
		Users:    3,
		Events:   len(seedEvents) + 1,
	}
	if got := s.Stats(); got != want {
		t.Errorf("Stats() = %+v\nwant %+v", got, want)
	}
	rec := do(t, s, "GET", "/stats", "")
	if got := decode[Stats](t, rec.Body.Bytes()); got != want {
		t.Errorf("GET /stats = %+v", got)
	}
	for _, key := range []string{`"calls":{"getUsers":2,`, `"addEvent":{"created":1,`, `"dropped":0`, `"users":3`} {
		if !strings.Contains(rec.Body.String(), key) {
			t.Errorf("GET /stats body %s lacks %s", rec.Body, key)
		}
	}
	if rec := do(t, s, "POST", "/stats/reset", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("reset: status %d", rec.Code)
	}
	if got := s.Stats(); got != (Stats{Users: want.Users, Events: want.Events}) {
		t.Errorf("after reset %+v", got)
	}
}

func TestAdminConfig(t *testing.T) {
	s := newSim(t, nil)
	rec := do(t, s, "GET", PathAdminConfig, "")
	want := `{"event_delay":"0s","add_ok":0,"add_fail":0,"add_fail_delay":"0s","list_error_rate":0,"seed":1,"preload_user":0,"preload_events":0}` + "\n"
	if rec.Body.String() != want {
		t.Errorf("GET config\n got %s\nwant %s", rec.Body, want)
	}

	rec = do(t, s, "POST", PathAdminConfig, `{"event_delay":"20ms","add_ok":0,"add_fail":1,"add_fail_delay":"1ms","list_error_rate":0.25}`)
	if rec.Code != 200 {
		t.Fatalf("POST config: status %d: %s", rec.Code, rec.Body)
	}
	applied := SimConfig{EventDelay: 20 * time.Millisecond, AddFail: 1, AddFailDelay: time.Millisecond, ListErrorRate: 0.25, Seed: 1}
	if got := s.Config(); got != applied {
		t.Errorf("Config() = %+v, want %+v", got, applied)
	}
	if got := decode[configJSON](t, rec.Body.Bytes()); *got.EventDelay != "20ms" {
		t.Errorf("POST answered event_delay %s", *got.EventDelay)
	}
	if code := do(t, s, "POST", "/addEvent", `{"name":"x","userId":1}`).Code; code != 503 {
		t.Errorf("addEvent after add_ok 0: status %d, want 503", code)
	}

	bad := []struct{ body, wantErr string }{
		{`{"list_error_rate":1.5}`, "simulator.list_error_rate: 1.5 is not in [0,1]"},
		{`{"event_delay":"soon"}`, `simulator.event_delay: "soon" is not a duration`},
		{`{"event_delay":"1s","add_fail_delay":"later"}`, `simulator.add_fail_delay: "later" is not a duration`},
		{`{"add_fail_delay":"-1s"}`, "simulator.add_fail_delay: -1s is negative"},
		{`{"add_ok":-2}`, "simulator.add_ok: -2 is negative"},
		{`{"preload_user":1}`, "fixed at start"},
		{`{"evnt_delay":"1s"}`, "unknown field"},
		{`[`, "invalid config"},
	}
	for _, b := range bad {
		rec := do(t, s, "POST", PathAdminConfig, b.body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(decode[Error](t, rec.Body.Bytes()).Error, b.wantErr) {
			t.Errorf("POST %s: status %d body %s, want 400 with %q", b.body, rec.Code, rec.Body, b.wantErr)
		}
	}
	if got := s.Config(); got != applied {
		t.Errorf("rejected updates changed the config: %+v", got)
	}
}

func TestUpdate(t *testing.T) {
	s := newSim(t, func(c *SimConfig) { c.AddOK, c.AddFail = 1, 1 })
	if err := s.Update(func(c *SimConfig) { c.AddFail = 0 }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if s.Config().AddFail != 0 {
		t.Errorf("Update not applied: %+v", s.Config())
	}
	err := s.Update(func(c *SimConfig) { c.ListErrorRate = -0.1 })
	if err == nil || !strings.Contains(err.Error(), "simulator.list_error_rate: -0.1") {
		t.Errorf("Update with a bad rate: %v", err)
	}
	if err := s.Update(func(c *SimConfig) { c.PreloadEvents = 3 }); err == nil {
		t.Error("Update changed preload_events")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultSimConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		mutate  func(*SimConfig)
		wantErr string
	}{
		{func(c *SimConfig) { c.EventDelay = -time.Second }, "simulator.event_delay: -1s is negative"},
		{func(c *SimConfig) { c.AddOK = -1 }, "simulator.add_ok: -1 is negative"},
		{func(c *SimConfig) { c.AddFail = -1 }, "simulator.add_fail: -1 is negative"},
		{func(c *SimConfig) { c.AddFailDelay = -time.Millisecond }, "simulator.add_fail_delay: -1ms is negative"},
		{func(c *SimConfig) { c.ListErrorRate = 1.5 }, "simulator.list_error_rate: 1.5 is not in [0,1]"},
		{func(c *SimConfig) { c.PreloadUser = 4 }, "simulator.preload_user: 4 is not a seed user"},
		{func(c *SimConfig) { c.PreloadEvents = -1 }, "simulator.preload_events: -1 is not in"},
		{func(c *SimConfig) { c.PreloadEvents = 5 }, "simulator.preload_events: 5 needs simulator.preload_user"},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			cfg := DefaultSimConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
			if _, err := NewSimulator(cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewSimulator accepted an invalid config: %v", err)
			}
		})
	}
}

// BenchmarkGetUsers measures one GET /getUsers through a real HTTP server
// and a keep-alive client.
func BenchmarkGetUsers(b *testing.B) {
	s := newSim(b, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	client := srv.Client()
	for b.Loop() {
		resp, err := client.Get(srv.URL + PathUsers)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
