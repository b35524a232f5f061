package process

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/simulator"
)

// env is a built worker in front of a simulator, both on loopback.
type env struct {
	sim  *simulator.Simulator
	app  *Worker
	srv  *httptest.Server
	cfg  config.Config
	http *http.Client
}

// testConfig is the default configuration made deterministic and quick:
// no random drops, short delays, a memory rate-limit store.
func testConfig() config.Config {
	cfg := config.Default()
	cfg.Simulator.Seed = 1
	cfg.Simulator.ListErrorRate = 0
	cfg.Simulator.EventDelay = 20 * time.Millisecond
	cfg.Simulator.AddFailDelay = time.Millisecond
	cfg.RateLimit.Store = "memory"
	cfg.RateLimit.Rate = "100000-M"
	cfg.Log.Access = false
	cfg.Upstream.RetryBase = time.Millisecond
	cfg.Upstream.RetryMax = 5 * time.Millisecond
	return cfg
}

// newEnv builds a worker for cfg, as a worker process does, with a
// simulator as its upstream.
func newEnv(t testing.TB, cfg config.Config) *env {
	t.Helper()
	sim, err := simulator.New(cfg.Simulator)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	cfg.Upstream.URL = up.URL
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := Build(context.Background(), cfg, Options{Slot: 0, PID: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	srv := httptest.NewServer(w.App.Handler())
	t.Cleanup(srv.Close)
	return &env{sim: sim, app: w, srv: srv, cfg: cfg, http: srv.Client()}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request, with a JSON body when body is set, and returns the
// answer.
func (e *env) do(t testing.TB, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: res.StatusCode, header: res.Header, body: b}
}
