package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/catalog"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/metrics"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/workertest"
	"github.com/amexd/amexd/internal/upstream"
)

// env is a worker application in front of a simulator, both on loopback,
// with the dependencies the tests reach into.
type env struct {
	sim    *simulator.Simulator
	app    *App
	up     *upstream.Client
	cache  *cache.Cache
	idem   idempotency.Store
	series *metrics.Worker
	srv    *httptest.Server
	cfg    config.Config
	http   *http.Client
}

// testConfig is the configuration the worker tests run on.
func testConfig() config.Config { return workertest.Config() }

func newEnv(t testing.TB, cfg config.Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil)
}

// newEnvWith is newEnv with the application's logger.
func newEnvWith(t testing.TB, cfg config.Config, log *slog.Logger) *env {
	t.Helper()
	sim, cfg := workertest.Upstream(t, cfg)
	e, err := build(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	e.sim = sim
	e.srv = httptest.NewServer(e.app.Handler())
	t.Cleanup(e.srv.Close)
	e.http = e.srv.Client()
	return e
}

// build assembles the application for cfg on the dependencies a worker
// process gives it (worker/process.Build), in their simplest form: a
// memory rate-limit store unless cfg names another, a table of its own
// for Idempotency-Keys, access lines through log, no control channel.
func build(cfg config.Config, log *slog.Logger) (*env, error) {
	if log == nil {
		log = slog.Default()
	}
	e := &env{cfg: cfg}
	c, err := cache.New(cfg.Cache, cache.WithStaleOn(catalog.ServesStale))
	if err != nil {
		return nil, err
	}
	e.cache = c
	e.series = metrics.NewWorker(func() metrics.CacheStats { return metrics.CacheStats{} })
	e.up, err = upstream.New(cfg.Upstream, cfg.Breaker, upstream.WithLogger(log), upstream.WithObserver(e.series))
	if err != nil {
		e.close()
		return nil, err
	}
	store, err := ratelimit.NewStore(context.Background(), cfg.RateLimit, nil, ratelimit.WithLogger(log))
	if err != nil {
		e.close()
		return nil, err
	}
	idem, f, err := idempotency.NewTable(cfg.Idempotency)
	if err != nil {
		e.close()
		return nil, err
	}
	_ = f.Close() // the table keeps a descriptor of its own
	e.idem = idem
	var access *logging.AccessLog
	if cfg.Log.Access {
		access = logging.SlogAccessLog(log)
	}
	e.app, err = New(cfg, Deps{
		Catalog:     catalog.New(c, e.up, cfg.Fanout, catalog.WithLogger(log)),
		Limiter:     store,
		Idempotency: idem,
		Metrics:     e.series,
		Breakers:    e.up.Breakers,
		Ready:       e.up.Reachable,
		Log:         log,
		Access:      access,
		Slot:        0,
		PID:         1,
	})
	if err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// close releases what build made.
func (e *env) close() {
	if e.up != nil {
		e.up.Close()
	}
	if e.cache != nil {
		_ = e.cache.Close()
	}
	if e.idem != nil {
		_ = e.idem.Close()
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request (a JSON body when body is set; headers as name,
// value pairs) and returns the answer.
func (e *env) do(t testing.TB, method, path, body string, headers ...string) answer {
	t.Helper()
	return e.exchange(t, method, path, body, headers...).answer
}

// errorCode checks the one error shape and returns its code.
func (a answer) errorCode(t testing.TB) string {
	t.Helper()
	var body struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", a.body, err)
	}
	if body.Error.Code == "" || body.Error.Message == "" || body.Error.RequestID == "" {
		t.Fatalf("error body %s lacks code, message or request_id", a.body)
	}
	if got := a.header.Get("X-Request-ID"); got != body.Error.RequestID {
		t.Errorf("request_id %q differs from X-Request-ID %q", body.Error.RequestID, got)
	}
	return body.Error.Code
}

func TestReadRoutes(t *testing.T) {
	e := newEnv(t, testConfig())
	var users []eventapi.User
	a := e.do(t, "GET", "/users", "")
	if a.status != 200 || json.Unmarshal(a.body, &users) != nil || len(users) != 3 {
		t.Fatalf("GET /users = %d %s", a.status, a.body)
	}
	for _, tc := range []struct {
		path   string
		status int
		check  func(t *testing.T, body []byte)
	}{
		{"/users/1", 200, func(t *testing.T, b []byte) {
			var u eventapi.User
			if json.Unmarshal(b, &u) != nil || string(u.ID) != "1" || u.UserName != "user1" || len(u.Events) == 0 {
				t.Errorf("user 1 = %s", b)
			}
		}},
		{"/getUsers", 200, func(t *testing.T, b []byte) {
			var us []eventapi.User
			if json.Unmarshal(b, &us) != nil || len(us) != 3 {
				t.Errorf("getUsers = %s", b)
			}
		}},
		{"/events", 200, func(t *testing.T, b []byte) {
			var evs []eventapi.Event
			if json.Unmarshal(b, &evs) != nil || len(evs) != 4 {
				t.Errorf("events = %s", b)
			}
		}},
		{"/getEvents", 200, nil},
		{"/events/4", 200, func(t *testing.T, b []byte) {
			var ev eventapi.Event
			if json.Unmarshal(b, &ev) != nil || ev.Name != "Event 4" || string(ev.UserID) != "3" {
				t.Errorf("event 4 = %s, want event-4's record", b)
			}
		}},
		{"/events/event-2", 200, func(t *testing.T, b []byte) {
			var ev eventapi.Event
			if json.Unmarshal(b, &ev) != nil || ev.Name != "Event 2" || string(ev.ID) != "1" {
				t.Errorf("event-2 = %s", b)
			}
		}},
		{"/events/user/1", 200, func(t *testing.T, b []byte) {
			var evs []eventapi.Event
			if json.Unmarshal(b, &evs) != nil || len(evs) != len(users[0].Events) {
				t.Fatalf("user 1 events = %s, want %d", b, len(users[0].Events))
			}
			for i, ev := range evs {
				if string(ev.UserID) != "1" {
					t.Errorf("event %d = %+v, want %s of user 1", i, ev, users[0].Events[i])
				}
			}
		}},
		{"/getEventsByUserId/2", 200, nil},
		{"/healthz", 200, nil},
		{"/readyz", 200, nil},
		{"/events/circuit-status", 200, func(t *testing.T, b []byte) {
			var st struct {
				Workers []struct {
					Breakers []struct{ Name, State string }
				}
				Summary []struct {
					Name   string
					Closed int
				}
			}
			if json.Unmarshal(b, &st) != nil || len(st.Workers) != 1 || len(st.Workers[0].Breakers) != 5 || len(st.Summary) != 5 {
				t.Errorf("circuit status = %s", b)
			}
		}},
		{"/openapi.json", 200, nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			a := e.do(t, "GET", tc.path, "")
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.check != nil {
				tc.check(t, a.body)
			}
		})
	}
}

func TestCacheHeadersAndConditionalGet(t *testing.T) {
	e := newEnv(t, testConfig())
	first := e.do(t, "GET", "/users/2", "")
	second := e.do(t, "GET", "/users/2", "")
	if first.header.Get("X-Cache") != "MISS" || second.header.Get("X-Cache") != "HIT" {
		t.Fatalf("X-Cache %q then %q, want MISS then HIT", first.header.Get("X-Cache"), second.header.Get("X-Cache"))
	}
	etag := first.header.Get("ETag")
	if etag == "" || etag != second.header.Get("ETag") || string(first.body) != string(second.body) {
		t.Fatalf("ETag %q/%q or body changed between MISS and HIT", etag, second.header.Get("ETag"))
	}
	if got := e.sim.Stats().Calls.GetUserByID; got != 1 {
		t.Errorf("upstream getUserById called %d times, want 1", got)
	}
	nm := e.do(t, "GET", "/users/2", "", "If-None-Match", etag)
	if nm.status != http.StatusNotModified || len(nm.body) != 0 {
		t.Errorf("If-None-Match with the current ETag: %d %q, want 304 and no body", nm.status, nm.body)
	}
	other := e.do(t, "GET", "/users/2", "", "If-None-Match", `"0000"`)
	if other.status != 200 {
		t.Errorf("If-None-Match with another ETag: %d, want 200", other.status)
	}
}

func TestSecurityHeadersAndRequestID(t *testing.T) {
	e := newEnv(t, testConfig())
	a := e.do(t, "GET", "/healthz", "", "X-Request-ID", "abc-123")
	for h, want := range map[string]string{
		"X-Content-Type-Options":       "nosniff",
		"X-Frame-Options":              "DENY",
		"Referrer-Policy":              "no-referrer",
		"Cross-Origin-Resource-Policy": "same-origin",
		"X-Request-ID":                 "abc-123",
	} {
		if got := a.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if !strings.Contains(a.header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP = %q", a.header.Get("Content-Security-Policy"))
	}
	if a.header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent over plain HTTP")
	}
	bad := e.do(t, "GET", "/healthz", "", "X-Request-ID", "has spaces\tand tabs")
	if id := bad.header.Get("X-Request-ID"); id == "" || strings.ContainsAny(id, " \t") {
		t.Errorf("an insane incoming ID was kept or none generated: %q", id)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, testConfig())
	pre := e.do(t, "OPTIONS", "/events", "", "Origin", "http://localhost:3000", "Access-Control-Request-Method", "POST")
	if pre.status != http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Errorf("preflight from an allowed origin: %d, allow-origin %q", pre.status, pre.header.Get("Access-Control-Allow-Origin"))
	}
	other := e.do(t, "GET", "/users", "", "Origin", "https://evil.example")
	if got := other.header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("a foreign origin got Access-Control-Allow-Origin %q", got)
	}
	allowed := e.do(t, "GET", "/users", "", "Origin", "http://localhost:3000")
	if got := allowed.header.Get("Access-Control-Allow-Origin"); got != "http://localhost:3000" {
		t.Errorf("a GET from an allowed origin: allow-origin %q", got)
	}
	// Without an Origin (curl, another service) CORS has nothing to
	// allow, but a cache between must still know the answer varies by it.
	for _, a := range []answer{e.do(t, "GET", "/users", ""), e.do(t, "GET", "/users", "")} {
		if got := a.header.Values("Vary"); len(got) != 1 || got[0] != "Origin" {
			t.Errorf("a GET without Origin: Vary %q, want [Origin]", got)
		}
		if got := a.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("a GET without Origin got Access-Control-Allow-Origin %q", got)
		}
	}
}
