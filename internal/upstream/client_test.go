package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/testkit/freeport"
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

// testUsers is a getUsers answer with a field amexd does not know, which
// must come through.
const testUsers = `[{"userName":"Ada","id":1,"email":"ada@example.com","events":["event-1",1733071234567],"team":"core"},` +
	`{"userName":"Bob","id":2,"email":"bob@example.com","events":[]}]`

func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
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
		writeRaw(w, http.StatusOK, testUsers)
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	users, err := c.Users(context.Background())
	if err != nil {
		t.Fatalf("Users: %v", err)
	}
	if string(users) != testUsers {
		t.Fatalf("Users = %s, want the upstream's body %s", users, testUsers)
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

func TestClientAddEventRetriesOnlyWhatWasNotStored(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int // answers in order
		ok       bool
	}{
		{"stored first time", []int{http.StatusOK}, true},
		{"201 is success too", []int{http.StatusCreated}, true},
		{"503 twice then stored", []int{http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusOK}, true},
		// A 500 may come after the upstream stored the event (as it does for
		// an unknown user): a retry would append the id to the user twice.
		{"500 is not retried", []int{http.StatusInternalServerError}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu     sync.Mutex
				bodies []string
			)
			srv := newServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if r.Method != http.MethodPost || r.URL.Path != eventapi.PathAddEvent || err != nil {
					writeJSON(w, http.StatusBadRequest, eventapi.Error{Error: "bad request"})
					return
				}
				mu.Lock()
				bodies = append(bodies, string(b))
				mu.Unlock()
				status := tc.statuses[n-1]
				if status >= 500 {
					writeJSON(w, status, eventapi.Outcome{Error: "Service temporarily unavailable", Message: "high load"})
					return
				}
				writeJSON(w, status, eventapi.Outcome{Success: true})
			})
			cfg, bcfg := testConfig(srv.URL)
			c := newTestClient(t, cfg, bcfg)

			record := fmt.Sprintf(`{"id":%d,"name":"launch","userId":1}`, NewEventID())
			err := c.AddEvent(context.Background(), []byte(record))
			var ue *UnavailableError
			if tc.ok && err != nil || !tc.ok && !errors.As(err, &ue) {
				t.Fatalf("AddEvent: %v, want success %v (else UnavailableError)", err, tc.ok)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != len(tc.statuses) {
				t.Fatalf("attempts = %d, want %d", len(bodies), len(tc.statuses))
			}
			for i, b := range bodies {
				if b != record {
					t.Fatalf("attempt %d sent %s, want %s", i+1, b, record)
				}
			}
		})
	}
}

func TestClientAddEventSuccessMustSaySo(t *testing.T) {
	srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		writeRaw(w, http.StatusOK, `{"success":false}`)
	})
	cfg, bcfg := testConfig(srv.URL)
	cfg.WriteRetries = 1
	c := newTestClient(t, cfg, bcfg)
	if err := c.AddEvent(context.Background(), []byte(`{"id":1,"name":"x","userId":1}`)); !errors.Is(err, errBadResponse) {
		t.Fatalf("AddEvent = %v, want a bad response", err)
	}
}

func TestClientAddEventNeedsID(t *testing.T) {
	srv := newServer(t, func(int64, http.ResponseWriter, *http.Request) {})
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg)
	if err := c.AddEvent(context.Background(), []byte(`{"name":"x","userId":1}`)); err == nil {
		t.Fatal("AddEvent without ID succeeded")
	}
	if got := srv.hits.Load(); got != 0 {
		t.Fatalf("server hits = %d, want 0", got)
	}
}

func TestClientAnswersAreNotFailures(t *testing.T) {
	notFound := func(t *testing.T, err error) {
		var ue *UnavailableError
		if !errors.Is(err, ErrNotFound) || errors.As(err, &ue) {
			t.Fatalf("err = %v, want ErrNotFound only", err)
		}
	}
	tests := []struct {
		name   string
		status int
		body   string
		check  func(t *testing.T, err error)
	}{
		{"empty 200 is ErrNotFound", http.StatusOK, "", notFound},
		{"null is ErrNotFound", http.StatusOK, "null", notFound},
		{"404 is ErrNotFound", http.StatusNotFound, `{"error":"no such thing"}`, func(t *testing.T, err error) {
			var ue *UnavailableError
			if !errors.Is(err, ErrNotFound) || errors.As(err, &ue) {
				t.Fatalf("err = %v, want ErrNotFound only", err)
			}
		}},
		{"400 is RejectedError", http.StatusBadRequest, `{"error":"no such thing"}`, func(t *testing.T, err error) {
			var re *RejectedError
			if !errors.As(err, &re) || re.Status != 400 || re.Message != "no such thing" || re.Op != OpGetUserByID {
				t.Fatalf("err = %#v, want RejectedError 400 %q", err, "no such thing")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				writeRaw(w, tc.status, tc.body)
			})
			cfg, bcfg := testConfig(srv.URL)
			bcfg.Failures = 3
			c := newTestClient(t, cfg, bcfg)
			const calls = 5
			for range calls {
				_, err := c.User(context.Background(), "42")
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
		writeRaw(w, http.StatusOK, `{"userName":"Eve","id":7}`)
	})
	obs := &recorder{}
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg, WithObserver(obs))

	u, err := c.User(context.Background(), "7")
	if err != nil || string(u) != `{"userName":"Eve","id":7}` {
		t.Fatalf("User = %s, %v", u, err)
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
		{"array for a record", `[{"id":1}]`, func(c *Client) error { _, err := c.User(context.Background(), "1"); return err }},
		{"string for a record", `"event-1"`, func(c *Client) error { _, err := c.Event(context.Background(), "event-1"); return err }},
		{"null for a list", `null`, func(c *Client) error { _, err := c.Users(context.Background()); return err }},
		{"list of numbers", `[1,2]`, func(c *Client) error { _, err := c.Events(context.Background()); return err }},
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
			writeRaw(w, http.StatusOK, "[ {\"id\": 1, \"name\": \"a\", \"userId\": 1} ]\n")
		case strings.HasPrefix(r.URL.Path, eventapi.PathEventByID):
			writeRaw(w, http.StatusOK, fmt.Sprintf(`{"id":%q,"name":"b","userId":2}`, strings.TrimPrefix(r.URL.Path, eventapi.PathEventByID)))
		case strings.HasPrefix(r.URL.Path, eventapi.PathUserByID):
			writeRaw(w, http.StatusOK, fmt.Sprintf(`{"userName":"u","id":%s}`, strings.TrimPrefix(r.URL.Path, eventapi.PathUserByID)))
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	})
	cfg, bcfg := testConfig(srv.URL + "/") // a trailing slash must not double up
	c := newTestClient(t, cfg, bcfg)
	ctx := context.Background()

	if evs, err := c.Events(ctx); err != nil || string(evs) != `[{"id":1,"name":"a","userId":1}]` {
		t.Fatalf("Events = %s, %v; want the body compacted", evs, err)
	}
	if ev, err := c.Event(ctx, "event-9"); err != nil || string(ev) != `{"id":"event-9","name":"b","userId":2}` {
		t.Fatalf("Event = %s, %v", ev, err)
	}
	if u, err := c.User(ctx, "12"); err != nil || string(u) != `{"userName":"u","id":12}` {
		t.Fatalf("User = %s, %v", u, err)
	}
	got := c.Breakers()
	if len(got) != 5 || got[0].Name != OpGetUsers || got[4].Name != OpAddEvent {
		t.Fatalf("Breakers = %+v", got)
	}
	if c.Breaker("nope") != nil {
		t.Fatal("Breaker(nope) != nil")
	}
}

func TestClientFlakyListIsNotAnOutage(t *testing.T) {
	// One call in five drops its connection, four times the Event API's
	// rate: every call gets through on a retry and the breaker stays shut.
	srv := newServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n%5 == 0 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		writeRaw(w, http.StatusOK, testUsers)
	})
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg)
	for i := range 100 {
		if _, err := c.Users(context.Background()); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if st := c.Breaker(OpGetUsers).Status(); st.State != StateClosed || st.Opens != 0 {
		t.Fatalf("breaker = %+v, want closed, never opened", st)
	}
}

func TestClientReachable(t *testing.T) {
	srv := newServer(t, func(int64, http.ResponseWriter, *http.Request) {})
	cfg, bcfg := testConfig(srv.URL)
	c := newTestClient(t, cfg, bcfg)
	if err := c.Reachable(context.Background()); err != nil {
		t.Fatalf("Reachable to a live server: %v", err)
	}

	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = "http://" + addr
	dead := newTestClient(t, cfg, bcfg)
	if err := dead.Reachable(context.Background()); err == nil {
		t.Fatalf("Reachable to closed %s succeeded", addr)
	}
}

func TestNewEventID(t *testing.T) {
	const n = 100_000
	seen := make(map[int64]struct{}, n)
	for range n {
		id := NewEventID()
		if id < 1<<52 || id >= 1<<53 {
			t.Fatalf("NewEventID() = %d, outside [2^52, 2^53)", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate ID %d after %d", id, len(seen))
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
