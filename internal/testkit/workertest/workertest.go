// Package workertest is test kit for the worker's two packages (the HTTP
// app and the worker process): the configuration their tests run on, an
// upstream simulator on loopback, and one request sent and read whole.
package workertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/simulator"
)

// Config is the default configuration made deterministic and quick: no
// random drops, short delays, a memory rate-limit store with a limit no
// test reaches by accident, no access log, short upstream retries.
func Config() config.Config {
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

// Upstream serves a simulator of cfg.Simulator on loopback until the test
// ends, and returns cfg pointed at it, validated.
func Upstream(tb testing.TB, cfg config.Config) (*simulator.Simulator, config.Config) {
	tb.Helper()
	sim, err := simulator.New(cfg.Simulator)
	if err != nil {
		tb.Fatal(err)
	}
	up := httptest.NewServer(sim)
	tb.Cleanup(up.Close)
	cfg.Upstream.URL = up.URL
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return sim, cfg
}

// Do sends req with c and returns the answer's status, header and whole
// body.
func Do(tb testing.TB, c *http.Client, req *http.Request) (int, http.Header, []byte) {
	tb.Helper()
	res, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res.StatusCode, res.Header, b
}

// NewRequest is http.NewRequest for a test: body, when not empty, is sent
// as JSON.
func NewRequest(tb testing.TB, method, url, body string) *http.Request {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}
