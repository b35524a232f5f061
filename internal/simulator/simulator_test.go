package simulator

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

	"github.com/amexd/amexd/internal/eventapi"
)

// quietConfig is a configuration without delays or faults, seeded, so each
// test turns on only the behaviour it checks.
func quietConfig() Config {
	return Config{Seed: 1}
}

func newSim(t testing.TB, mutate func(*Config)) *Simulator {
	t.Helper()
	cfg := quietConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
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

func users(t testing.TB, s *Simulator) []eventapi.User {
	t.Helper()
	rec := do(t, s, http.MethodGet, eventapi.PathUsers, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("getUsers: status %d", rec.Code)
	}
	return decode[[]eventapi.User](t, rec.Body.Bytes())
}

func events(t testing.TB, s *Simulator) []eventapi.Event {
	t.Helper()
	rec := do(t, s, http.MethodGet, eventapi.PathEvents, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("getEvents: status %d", rec.Code)
	}
	return decode[[]eventapi.Event](t, rec.Body.Bytes())
}

// The original mock's answers, byte for byte as JSON.stringify writes them.
const (
	seedUsersJSON = `[{"userName":"user1","id":1,"email":"hello@gmail.com","events":["event-1","event-3"]},` +
		`{"userName":"user2","id":2,"email":"hello2@gmail.com","events":["event-2"]},` +
		`{"userName":"user3","id":2,"email":"hello3@gmail.com","events":["event-4"]}]`
	seedEventsJSON = `[{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"},` +
		`{"id":1,"name":"Event 2","userId":2,"details":"This is the first event"},` +
		`{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"},` +
		`{"id":1,"name":"Event 4","userId":3,"details":"This is the first event"}]`
)

func TestSeedDataIsTheOriginals(t *testing.T) {
	s := newSim(t, nil)
	for _, tc := range []struct{ path, want string }{
		{eventapi.PathUsers, seedUsersJSON},
		{eventapi.PathEvents, seedEventsJSON},
		{"/getUserById/3", `{"userName":"user3","id":2,"email":"hello3@gmail.com","events":["event-4"]}`},
		{"/getEventById/event-2", `{"id":1,"name":"Event 2","userId":2,"details":"This is the first event"}`},
	} {
		if got := do(t, s, http.MethodGet, tc.path, "").Body.String(); got != tc.want {
			t.Errorf("GET %s\n got %s\nwant %s", tc.path, got, tc.want)
		}
	}
}

func TestRoutes(t *testing.T) {
	tests := []struct {
		method, path, body string
		want               int
		empty              bool // a 200 with an empty body: no such record
		allow              string
	}{
		{"GET", "/getUsers", "", 200, false, ""},
		{"HEAD", "/getUsers", "", 200, false, ""},
		{"GET", "/getUserById/2", "", 200, false, ""},
		{"GET", "/getUserById/9", "", 200, true, ""},
		{"GET", "/getUserById/abc", "", 200, true, ""},
		{"GET", "/getUserById/", "", 404, false, ""},
		{"GET", "/getEvents", "", 200, false, ""},
		{"GET", "/getEventById/event-3", "", 200, false, ""},
		{"GET", "/getEventById/3", "", 200, true, ""},
		{"GET", "/getEventById/event-99", "", 200, true, ""},
		{"POST", "/addEvent", `{"id":7,"name":"Demo","userId":1}`, 200, false, ""},
		{"POST", "/addEvent", `{"id":"x","name":"Demo","userId":"1"}`, 200, false, ""},
		{"POST", "/addEvent", `{"name":`, 500, false, ""},
		{"POST", "/addEvent", `{"id":8,"name":"Demo","userId":9}`, 500, false, ""},
		{"POST", "/getUsers", "", 405, false, "HEAD, GET"},
		{"DELETE", "/getUserById/1", "", 405, false, "HEAD, GET"},
		{"GET", "/addEvent", "", 405, false, "POST"},
		{"GET", "/stats/reset", "", 405, false, "POST"},
		{"PUT", "/admin/config", "", 405, false, "HEAD, GET, POST"},
		{"GET", "/stats", "", 200, false, ""},
		{"POST", "/stats/reset", "", 204, false, ""},
		{"GET", "/admin/config", "", 200, false, ""},
		{"POST", "/admin/config", `{}`, 200, false, ""},
		{"GET", "/nope", "", 404, false, ""},
		{"GET", "/getUserById/1/x", "", 404, false, ""},
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
			if (rec.Body.Len() == 0) != tt.empty {
				t.Errorf("body %q, want empty %v", rec.Body, tt.empty)
			}
			if tt.want >= 400 {
				if e := decode[eventapi.Error](t, rec.Body.Bytes()); e.Error == "" {
					t.Errorf("empty error message")
				}
			}
		})
	}
}

func TestAddEventStoresTheBodyUnderItsID(t *testing.T) {
	s := newSim(t, nil)
	body := `{"id":1733071234567,"name":"Demo","userId":"2","extra":{"a":[1]}}`
	rec := do(t, s, "POST", "/addEvent", body)
	if rec.Code != http.StatusOK || rec.Body.String() != `{"success":true}` {
		t.Fatalf("addEvent: %d %s, want 200 {\"success\":true}", rec.Code, rec.Body)
	}
	if got := do(t, s, "GET", "/getEventById/1733071234567", "").Body.String(); got != body {
		t.Errorf("getEventById = %s, want the body as sent", got)
	}
	u := decode[eventapi.User](t, do(t, s, "GET", "/getUserById/2", "").Body.Bytes())
	if last := string(u.Events[len(u.Events)-1]); last != "1733071234567" {
		t.Errorf("user 2 events %s do not end with the number sent", u.Events)
	}
	// The same id again replaces the record and lists the id once more, as
	// the original does: it is not idempotent.
	do(t, s, "POST", "/addEvent", `{"id":1733071234567,"name":"Again","userId":2}`)
	u = decode[eventapi.User](t, do(t, s, "GET", "/getUserById/2", "").Body.Bytes())
	if n := len(u.Events); n != 3 {
		t.Errorf("user 2 has %d events (%s), want 3", n, u.Events)
	}
	if st := s.Stats(); st.AddEvent.Created != 1 || st.AddEvent.Replayed != 1 || st.Events != len(seedEvents)+1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAddEventUnknownUserStoresAnOrphan(t *testing.T) {
	s := newSim(t, nil)
	rec := do(t, s, "POST", "/addEvent", `{"id":"orphan","name":"x","userId":99}`)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	if got := do(t, s, "GET", "/getEventById/orphan", "").Body.String(); !strings.Contains(got, `"userId":99`) {
		t.Errorf("the orphan was not stored: %q", got)
	}
}

func TestAddEventFailureCycle(t *testing.T) {
	s := newSim(t, func(c *Config) {
		c.AddOK, c.AddFail, c.AddFailDelay = 5, 10, time.Millisecond
	})
	var got []int
	for i := range 45 {
		got = append(got, do(t, s, "POST", "/addEvent", fmt.Sprintf(`{"id":%d,"name":"x","userId":1}`, 100+i)).Code)
	}
	var want []int
	for i := range 45 {
		want = append(want, map[bool]int{true: 200, false: 503}[i%15 < 5])
	}
	if !slices.Equal(got, want) {
		t.Fatalf("statuses\n got %v\nwant %v", got, want)
	}
	st := s.Stats()
	if st.AddEvent.Created != 15 || st.AddEvent.Failed != 30 || st.Events != len(seedEvents)+15 {
		t.Errorf("stats %+v: failing calls must create nothing", st)
	}
	rec := do(t, s, "POST", "/addEvent", `{"id":1,"name":"x","userId":1}`)
	if st := s.Stats(); st.AddEvent.Failed != 30 || rec.Code != 200 {
		t.Fatalf("call 46: %d", rec.Code)
	}
	for range 4 {
		do(t, s, "POST", "/addEvent", `{"id":2,"name":"x","userId":1}`)
	}
	rec = do(t, s, "POST", "/addEvent", `{"id":3,"name":"x","userId":1}`)
	want503 := `{"success":false,"error":"Service temporarily unavailable","message":"Event API is experiencing high load"}`
	if rec.Code != 503 || rec.Body.String() != want503 {
		t.Errorf("a failing call: %d %s, want 503 %s", rec.Code, rec.Body, want503)
	}

	// A reset restarts the cycle mid-way.
	s.ResetStats()
	for i := range 6 {
		code := do(t, s, "POST", "/addEvent", `{"id":4,"name":"x","userId":1}`).Code
		if want := map[bool]int{true: 200, false: 503}[i < 5]; code != want {
			t.Fatalf("after reset call %d: status %d, want %d", i, code, want)
		}
	}
}

func TestAddEventNeverFailsWithAddFailZero(t *testing.T) {
	s := newSim(t, func(c *Config) { c.AddOK, c.AddFail = 1, 0 })
	for i := range 30 {
		if code := do(t, s, "POST", "/addEvent", fmt.Sprintf(`{"id":%d,"name":"x","userId":3}`, i)).Code; code != 200 {
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
		{"getEventById unknown", "GET", "/getEventById/nope", "", 200},
		{"failing addEvent", "POST", "/addEvent", `{"id":1,"name":"x","userId":1}`, 503},
	}
	s := newSim(t, func(c *Config) {
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
	s := newSim(t, func(c *Config) {
		c.EventDelay, c.AddOK, c.AddFail, c.AddFailDelay = time.Hour, 0, 1, time.Hour
	})
	for _, path := range []string{"/getEventById/event-1", "/addEvent"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			req := httptest.NewRequest("GET", path, strings.NewReader(`{"id":1,"name":"x","userId":1}`)).WithContext(ctx)
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
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"id":%d,"name":"event %d","userId":%d}`, 1000+i, i, i%3+1)
			resp, err := http.Post(srv.URL+eventapi.PathAddEvent, "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("call %d: status %d", i, resp.StatusCode)
				return
			}
			// Readers run alongside the writers so -race sees both.
			if r, err := http.Get(srv.URL + eventapi.PathUsers); err == nil {
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
	if evs := events(t, s); len(evs) != len(seedEvents)+n {
		t.Errorf("%d events, want %d", len(evs), len(seedEvents)+n)
	}
	listed := 0
	for _, u := range users(t, s) {
		listed += len(u.Events)
	}
	if listed != len(seedEvents)+n {
		t.Errorf("users list %d events, want %d", listed, len(seedEvents)+n)
	}
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
		for _, path := range []string{eventapi.PathUsers, eventapi.PathEvents} {
			t.Run(fmt.Sprintf("%v%s", rate, path), func(t *testing.T) {
				s := newSim(t, func(c *Config) { c.ListErrorRate = rate })
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
			got = append(got, fetch(t, noKeepAlive(), url+eventapi.PathUsers))
		}
		return got
	}
	var runs [][]int
	for range 2 {
		s := newSim(t, func(c *Config) { c.Seed, c.ListErrorRate = 42, 0.5 })
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
	s := newSim(t, func(c *Config) { c.PreloadUser, c.PreloadEvents = 2, 150 })
	us, evs := users(t, s), events(t, s)
	if got := len(us[1].Events); got != 1+150 {
		t.Errorf("user 2 has %d events, want 151", got)
	}
	if len(evs) != len(seedEvents)+150 || s.Stats().Events != len(evs) {
		t.Errorf("%d events, stats %+v", len(evs), s.Stats())
	}
	last, _ := eventapi.KeyOf(us[1].Events[len(us[1].Events)-1])
	if rec := do(t, s, "GET", "/getEventById/"+last, ""); rec.Code != 200 || rec.Body.Len() == 0 {
		t.Errorf("preloaded %s: status %d %q", last, rec.Code, rec.Body)
	}
}

func TestStatsAndReset(t *testing.T) {
	s := newSim(t, func(c *Config) { c.AddOK, c.AddFail = 1, 1 })
	calls := []struct{ method, path, body string }{
		{"GET", "/getUsers", ""},
		{"GET", "/getUsers", ""},
		{"GET", "/getUserById/1", ""},
		{"GET", "/getEvents", ""},
		{"GET", "/getEventById/1", ""},
		{"GET", "/getEventById/2", ""},
		{"GET", "/getEventById/x", ""},
		{"POST", "/addEvent", `{"id":10,"name":"a","userId":1}`},
		{"POST", "/addEvent", `{"id":11,"name":"b","userId":1}`},
		{"POST", "/addEvent", `{"id":12,"name":"c","userId":9}`},
		{"GET", "/stats", ""},
	}
	for _, c := range calls {
		do(t, s, c.method, c.path, c.body)
	}
	want := Stats{
		Calls:    CallCounts{GetUsers: 2, GetUserByID: 1, GetEvents: 1, GetEventByID: 3, AddEvent: 3},
		AddEvent: AddEventCounts{Created: 1, Failed: 1, Rejected: 1},
		Users:    3,
		Events:   len(seedEvents) + 2, // the unknown user's event is stored all the same
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
	want := `{"event_delay":"0s","add_ok":0,"add_fail":0,"add_fail_delay":"0s","list_error_rate":0,"seed":1,"preload_user":0,"preload_events":0}`
	if rec.Body.String() != want {
		t.Errorf("GET config\n got %s\nwant %s", rec.Body, want)
	}

	rec = do(t, s, "POST", PathAdminConfig, `{"event_delay":"20ms","add_ok":0,"add_fail":1,"add_fail_delay":"1ms","list_error_rate":0.25}`)
	if rec.Code != 200 {
		t.Fatalf("POST config: status %d: %s", rec.Code, rec.Body)
	}
	applied := Config{EventDelay: 20 * time.Millisecond, AddFail: 1, AddFailDelay: time.Millisecond, ListErrorRate: 0.25, Seed: 1}
	if got := s.Config(); got != applied {
		t.Errorf("Config() = %+v, want %+v", got, applied)
	}
	if got := decode[configJSON](t, rec.Body.Bytes()); *got.EventDelay != "20ms" {
		t.Errorf("POST answered event_delay %s", *got.EventDelay)
	}
	if code := do(t, s, "POST", "/addEvent", `{"id":1,"name":"x","userId":1}`).Code; code != 503 {
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
		if rec.Code != http.StatusBadRequest || !strings.Contains(decode[eventapi.Error](t, rec.Body.Bytes()).Error, b.wantErr) {
			t.Errorf("POST %s: status %d body %s, want 400 with %q", b.body, rec.Code, rec.Body, b.wantErr)
		}
	}
	if got := s.Config(); got != applied {
		t.Errorf("rejected updates changed the config: %+v", got)
	}
}

func TestUpdate(t *testing.T) {
	s := newSim(t, func(c *Config) { c.AddOK, c.AddFail = 1, 1 })
	if err := s.Update(func(c *Config) { c.AddFail = 0 }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if s.Config().AddFail != 0 {
		t.Errorf("Update not applied: %+v", s.Config())
	}
	err := s.Update(func(c *Config) { c.ListErrorRate = -0.1 })
	if err == nil || !strings.Contains(err.Error(), "simulator.list_error_rate: -0.1") {
		t.Errorf("Update with a bad rate: %v", err)
	}
	if err := s.Update(func(c *Config) { c.PreloadEvents = 3 }); err == nil {
		t.Error("Update changed preload_events")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		mutate  func(*Config)
		wantErr string
	}{
		{func(c *Config) { c.EventDelay = -time.Second }, "simulator.event_delay: -1s is negative"},
		{func(c *Config) { c.AddOK = -1 }, "simulator.add_ok: -1 is negative"},
		{func(c *Config) { c.AddFail = -1 }, "simulator.add_fail: -1 is negative"},
		{func(c *Config) { c.AddFailDelay = -time.Millisecond }, "simulator.add_fail_delay: -1ms is negative"},
		{func(c *Config) { c.ListErrorRate = 1.5 }, "simulator.list_error_rate: 1.5 is not in [0,1]"},
		{func(c *Config) { c.PreloadUser = 4 }, "simulator.preload_user: 4 is not a seed user"},
		{func(c *Config) { c.PreloadEvents = -1 }, "simulator.preload_events: -1 is not in"},
		{func(c *Config) { c.PreloadEvents = 5 }, "simulator.preload_events: 5 needs simulator.preload_user"},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New accepted an invalid config: %v", err)
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
		resp, err := client.Get(srv.URL + eventapi.PathUsers)
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
