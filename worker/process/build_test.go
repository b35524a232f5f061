package process

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/workertest"
)

// env is a built worker in front of a simulator, both on loopback.
type env struct {
	sim  *simulator.Simulator
	app  *Worker
	srv  *httptest.Server
	cfg  config.Config
	http *http.Client
}

// testConfig is the configuration the worker tests run on.
func testConfig() config.Config { return workertest.Config() }

// newEnv builds a worker for cfg, as a worker process does, with a
// simulator as its upstream.
func newEnv(t testing.TB, cfg config.Config) *env {
	t.Helper()
	sim, cfg := workertest.Upstream(t, cfg)
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
	status, header, b := workertest.Do(t, e.http, workertest.NewRequest(t, method, e.srv.URL+path, body))
	return answer{status: status, header: header, body: b}
}
