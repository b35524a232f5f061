package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu    sync.Mutex
	calls map[string]int // "op:outcome" → count
	trans []string       // "op:from>to"
}

func (r *recorder) Call(op, outcome string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[op+":"+outcome]++
}

func (r *recorder) Transition(op, from, to string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trans = append(r.trans, op+":"+from+">"+to)
}

func (r *recorder) count(op, outcome string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[op+":"+outcome]
}

func (r *recorder) transitions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.trans...)
}

var testUsers = []eventapi.User{
	{ID: 1, Name: "Ada", Email: "ada@example.com", Events: []string{"event-1"}},
	{ID: 2, Name: "Bob", Email: "bob@example.com", Events: []string{}},
}

// server is an httptest server whose n-th request (from 1) is answered by
// handle; it counts requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, handle func(n int64, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handle(s.hits.Add(1), w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func testConfig(url string) (Config, BreakerConfig) {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Timeout = 2 * time.Second
	cfg.RetryBase = time.Millisecond
	cfg.RetryMax = 5 * time.Millisecond
	cfg.RetryBudget = 5 * time.Second
	bcfg := DefaultBreakerConfig()
	bcfg.OpenTimeout = time.Minute
	bcfg.MaxOpenTimeout = time.Minute
	return cfg, bcfg
}

func newTestClient(t testing.TB, cfg Config, bcfg BreakerConfig, opts ...Option) *Client {
	t.Helper()
	c, err := New(cfg, bcfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestClientRetriesThenSucceeds(t *testing.T) {
	srv := newServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			writeJSON(w, http.StatusServiceUnavailable, eventapi.Error{Error: "busy"})
			return
		}
		writeJSON(w, http.StatusOK, testUsers)
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	users, err := c.Users(context.Background())
	if err != nil {
		t.Fatalf("Users: %v", err)
	}
	if len(users) != 2 || users[0].Name != "Ada" || users[0].Events[0] != "event-1" {
		t.Fatalf("Users = %+v", users)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("server hits = %d, want 2", got)
	}
	if obs.count(OpGetUsers, OutcomeError) != 1 || obs.count(OpGetUsers, OutcomeOK) != 1 {
		t.Fatalf("observer calls = %v", obs.calls)
	}
}

func TestClientBreakerStopsRetries(t *testing.T) {
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusServiceUnavailable, eventapi.Error{Error: "down"})
	})
	cfg, bcfg := testConfig(srv.URL)
	cfg.Retries = 3
	bcfg.Failures = 3
	c := newTestClient(t, cfg, bcfg)

	_, err := c.Users(context.Background())
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("first call: %v, want *UnavailableError", err)
	}
	if got := srv.hits.Load(); got != 3 {
		t.Fatalf("first call made %d attempts, want 3", got)
	}

	_, err = c.Users(context.Background())
	if !errors.As(err, &ue) || !errors.Is(err, ErrBreakerOpen) || ue.RetryAfter <= 0 || ue.Op != OpGetUsers {
		t.Fatalf("second call: %#v, want UnavailableError for getUsers, ErrBreakerOpen, RetryAfter > 0", err)
	}
	if got := srv.hits.Load(); got != 3 {
		t.Fatalf("second call reached the server (%d hits in all)", got)
	}
	// Breakers are per operation: getEvents is still closed.
	if st := c.Breaker(OpGetEvents).Status().State; st != StateClosed {
		t.Fatalf("getEvents breaker = %s, want closed", st)
	}
}

func TestClientStopsRetryingWhenBreakerTrips(t *testing.T) {
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	cfg, bcfg := testConfig(srv.URL)
	cfg.Retries = 10
	bcfg.Failures = 2
	c := newTestClient(t, cfg, bcfg)

	_, err := c.Events(context.Background())
	if !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Events: %v, want ErrBreakerOpen", err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("attempts = %d, want 2 (stopped when the breaker opened)", got)
	}
}

func TestClientAddEventSameIDOnRetry(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int // answers in order
	}{
		{"created first time", []int{http.StatusCreated}},
		{"replay is success", []int{http.StatusOK}},
		{"503 twice then created", []int{http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusCreated}},
		{"500 then replay", []int{http.StatusInternalServerError, http.StatusOK}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu  sync.Mutex
				ids []string
			)
			srv := newServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				var ev eventapi.Event
				if r.Method != http.MethodPost || r.URL.Path != eventapi.PathAddEvent || json.NewDecoder(r.Body).Decode(&ev) != nil {
					writeJSON(w, http.StatusBadRequest, eventapi.Error{Error: "bad request"})
					return
				}
				mu.Lock()
				ids = append(ids, ev.ID)
				mu.Unlock()
				status := tc.statuses[n-1]
				if status >= 500 {
					writeJSON(w, status, eventapi.Error{Error: "flaky"})
					return
				}
				writeJSON(w, status, ev)
			})
			cfg, bcfg := testConfig(srv.URL)
			c := newTestClient(t, cfg, bcfg)

			in := eventapi.Event{ID: NewEventID(), Name: "launch", UserID: 1}
			out, err := c.AddEvent(context.Background(), in)
			if err != nil {
				t.Fatalf("AddEvent: %v", err)
			}
			if out != in {
				t.Fatalf("AddEvent = %+v, want %+v", out, in)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(ids) != len(tc.statuses) {
				t.Fatalf("attempts = %d, want %d", len(ids), len(tc.statuses))
			}
			for i, id := range ids {
				if id != in.ID {
					t.Fatalf("attempt %d sent ID %q, want %q", i+1, id, in.ID)
				}
			}
		})
	}
}

func TestClientAddEventNeedsID(t *testing.T) {
	srv := newServer(t, func(int64, http.ResponseWriter, *http.Request) {})
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg)
	if _, err := c.AddEvent(context.Background(), eventapi.Event{Name: "x", UserID: 1}); err == nil {
		t.Fatal("AddEvent without ID succeeded")
	}
	if got := srv.hits.Load(); got != 0 {
		t.Fatalf("server hits = %d, want 0", got)
	}
}

func TestClientAnswersAreNotFailures(t *testing.T) {
	tests := []struct {
		name   string
		status int
		check  func(t *testing.T, err error)
	}{
		{"404 is ErrNotFound", http.StatusNotFound, func(t *testing.T, err error) {
			var ue *UnavailableError
			if !errors.Is(err, ErrNotFound) || errors.As(err, &ue) {
				t.Fatalf("err = %v, want ErrNotFound only", err)
			}
		}},
		{"400 is RejectedError", http.StatusBadRequest, func(t *testing.T, err error) {
			var re *RejectedError
			if !errors.As(err, &re) || re.Status != 400 || re.Message != "no such thing" || re.Op != OpGetUserByID {
				t.Fatalf("err = %#v, want RejectedError 400 %q", err, "no such thing")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tc.status, eventapi.Error{Error: "no such thing"})
			})
			cfg, bcfg := testConfig(srv.URL)
			bcfg.Failures = 3
			c := newTestClient(t, cfg, bcfg)
			const calls = 5
			for range calls {
				_, err := c.User(context.Background(), 42)
				tc.check(t, err)
			}
			if got := srv.hits.Load(); got != calls {
				t.Fatalf("server hits = %d, want %d (no retries)", got, calls)
			}
			if st := c.Breaker(OpGetUserByID).Status(); st.State != StateClosed || st.FailuresInWindow != 0 {
				t.Fatalf("breaker = %+v, want closed with no failures", st)
			}
		})
	}
}

func TestClientConnectionDroppedIsRetried(t *testing.T) {
	srv := newServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
			return
		}
		writeJSON(w, http.StatusOK, eventapi.User{ID: 7, Name: "Eve"})
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	u, err := c.User(context.Background(), 7)
	if err != nil || u.ID != 7 {
		t.Fatalf("User = %+v, %v", u, err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("server hits = %d, want 2", got)
	}
	if obs.count(OpGetUserByID, OutcomeError) != 1 {
		t.Fatalf("observer calls = %v, want one error", obs.calls)
	}
	if got := c.Breaker(OpGetUserByID).Status().FailuresInWindow; got != 1 {
		t.Fatalf("FailuresInWindow = %d, want 1", got)
	}
}

func TestClientAttemptTimeout(t *testing.T) {
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; ends when the client hangs up
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	cfg.Timeout = 50 * time.Millisecond
	cfg.Retries = 2
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	_, err := c.Event(context.Background(), "event-1")
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, context.DeadlineExceeded) || ue.RetryAfter != defaultRetryAfter {
		t.Fatalf("Event: %v, want UnavailableError from a deadline, RetryAfter 1s", err)
	}
	if got := obs.count(OpGetEventByID, OutcomeTimeout); got != 2 {
		t.Fatalf("timeouts observed = %d, want 2", got)
	}
	if got := c.Breaker(OpGetEventByID).Status().FailuresInWindow; got != 2 {
		t.Fatalf("FailuresInWindow = %d, want 2", got)
	}
}

func TestClientCallerCancelNotFailure(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.Events(ctx)
	var ue *UnavailableError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ue) {
		t.Fatalf("Events: %v, want context.Canceled and no UnavailableError", err)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("server hits = %d, want 1 (no retry after cancel)", got)
	}
	if st := c.Breaker(OpGetEvents).Status(); st.FailuresInWindow != 0 {
		t.Fatalf("FailuresInWindow = %d, want 0", st.FailuresInWindow)
	}
	if obs.count(OpGetEvents, OutcomeCanceled) != 1 {
		t.Fatalf("observer calls = %v, want one canceled", obs.calls)
	}
}

func TestClientMalformedBody(t *testing.T) {
	tests := []struct {
		name string
		body string
		call func(*Client) error
	}{
		{"not JSON", "<html>oops</html>", func(c *Client) error { _, err := c.Users(context.Background()); return err }},
		{"object for a list", `{"id":1}`, func(c *Client) error { _, err := c.Users(context.Background()); return err }},
		{"trailing garbage", `[{"id":1}] x`, func(c *Client) error { _, err := c.Users(context.Background()); return err }},
		{"truncated", `[{"id":1,"name":"A`, func(c *Client) error { _, err := c.Events(context.Background()); return err }},
		{"wrong types", `{"id":"one"}`, func(c *Client) error { _, err := c.User(context.Background(), 1); return err }},
		{"empty object", `{}`, func(c *Client) error { _, err := c.Event(context.Background(), "event-1"); return err }},
		{"null", `null`, func(c *Client) error { _, err := c.User(context.Background(), 1); return err }},
		{"empty body", ``, func(c *Client) error { _, err := c.Events(context.Background()); return err }},
		{"too large", "[" + strings.Repeat(" ", maxBody) + "]", func(c *Client) error { _, err := c.Users(context.Background()); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tc.body))
			})
			cfg, bcfg := testConfig(srv.URL)
			cfg.Retries = 2
			c := newTestClient(t, cfg, bcfg)
			err := tc.call(c)
			var ue *UnavailableError
			if !errors.As(err, &ue) || !errors.Is(err, errBadResponse) {
				t.Fatalf("err = %v, want UnavailableError for a bad response", err)
			}
			if got := srv.hits.Load(); got != 2 {
				t.Fatalf("server hits = %d, want 2 (a bad body is retried)", got)
			}
		})
	}
}

func TestClientRequests(t *testing.T) {
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == eventapi.PathEvents:
			writeJSON(w, http.StatusOK, []eventapi.Event{{ID: "event-1", Name: "a", UserID: 1}})
		case strings.HasPrefix(r.URL.Path, eventapi.PathEventByID):
			writeJSON(w, http.StatusOK, eventapi.Event{ID: strings.TrimPrefix(r.URL.Path, eventapi.PathEventByID), Name: "b", UserID: 2})
		case strings.HasPrefix(r.URL.Path, eventapi.PathUserByID):
			id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, eventapi.PathUserByID))
			writeJSON(w, http.StatusOK, eventapi.User{ID: id, Name: "u"})
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	})
	cfg, bcfg := testConfig(srv.URL + "/") // a trailing slash must not double up
	c := newTestClient(t, cfg, bcfg)
	ctx := context.Background()

	if evs, err := c.Events(ctx); err != nil || len(evs) != 1 || evs[0].ID != "event-1" {
		t.Fatalf("Events = %+v, %v", evs, err)
	}
	if ev, err := c.Event(ctx, "event-9"); err != nil || ev.ID != "event-9" || ev.UserID != 2 {
		t.Fatalf("Event = %+v, %v", ev, err)
	}
	if u, err := c.User(ctx, 12); err != nil || u.ID != 12 {
		t.Fatalf("User = %+v, %v", u, err)
	}
	got := c.Breakers()
	if len(got) != 5 || got[0].Name != OpGetUsers || got[4].Name != OpAddEvent {
		t.Fatalf("Breakers = %+v", got)
	}
	if c.Breaker("nope") != nil {
		t.Fatal("Breaker(nope) != nil")
	}
}

func TestClientReachable(t *testing.T) {
	srv := newServer(t, func(int64, http.ResponseWriter, *http.Request) {})
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg)
	if err := c.Reachable(context.Background()); err != nil {
		t.Fatalf("Reachable to a live server: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.URL = "http://" + addr
	dead := newTestClient(t, cfg, bcfg)
	if err := dead.Reachable(context.Background()); err == nil {
		t.Fatalf("Reachable to closed %s succeeded", addr)
	}
}

func TestNewEventID(t *testing.T) {
	re := regexp.MustCompile(`^event-[1-9][0-9]*$`)
	const n = 100_000
	seen := make(map[string]struct{}, n)
	for range n {
		id := NewEventID()
		if !re.MatchString(id) {
			t.Fatalf("NewEventID() = %q, want event-N", id)
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(id, "event-"), 10, 64)
		if err != nil || v < 1 || v >= 1<<53 {
			t.Fatalf("NewEventID() = %q, N outside [1, 2^53)", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate ID %q after %d", id, len(seen))
		}
		seen[id] = struct{}{}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Config)
		want string // substring of the error; empty: valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"http url", func(c *Config) { c.URL = "http://127.0.0.1:8080" }, ""},
		{"https url with path", func(c *Config) { c.URL = "https://api.example.com/v1" }, ""},
		{"relative url", func(c *Config) { c.URL = "/getUsers" }, `upstream.url: "/getUsers" must be an absolute http or https URL`},
		{"ftp url", func(c *Config) { c.URL = "ftp://host" }, `upstream.url: "ftp://host" must be an absolute http or https URL`},
		{"no host", func(c *Config) { c.URL = "http://" }, `upstream.url: "http://" has no host`},
		{"timeout", func(c *Config) { c.Timeout = 0 }, "upstream.timeout: 0s must be positive"},
		{"retries", func(c *Config) { c.Retries = 0 }, "upstream.retries: 0 must be at least 1"},
		{"write_retries", func(c *Config) { c.WriteRetries = -1 }, "upstream.write_retries: -1 must be at least 1"},
		{"retry_max", func(c *Config) { c.RetryMax = time.Millisecond }, "upstream.retry_max: 1ms must be at least retry_base (50ms)"},
		{"retry_budget", func(c *Config) { c.RetryBudget = -time.Second }, "upstream.retry_budget: -1s must not be negative"},
		{"max_conns_per_host", func(c *Config) { c.MaxConnsPerHost = 0 }, "upstream.max_conns_per_host: 0 must be at least 1"},
		{"idle_conn_timeout", func(c *Config) { c.IdleConnTimeout = 0 }, "upstream.idle_conn_timeout: 0s must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mut(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewNeedsURL(t *testing.T) {
	if _, err := New(DefaultConfig(), DefaultBreakerConfig()); err == nil {
		t.Fatal("New with an empty URL succeeded")
	}
	cfg, bcfg := testConfig("http://127.0.0.1:1")
	bcfg.Failures = 0
	if _, err := New(cfg, bcfg); err == nil || !strings.Contains(err.Error(), "breaker.failures") {
		t.Fatalf("New with a bad breaker config = %v", err)
	}
}

func BenchmarkUsers(b *testing.B) {
	body, err := json.Marshal(testUsers)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(b, cfg, bcfg)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Users(ctx); err != nil {
				b.Errorf("Users: %v", err)
				return
			}
		}
	})
}
