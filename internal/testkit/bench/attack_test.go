package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func TestAttackCountsByStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`[]`))
	}))
	defer srv.Close()

	var seen, withRetryAfter int
	var progress strings.Builder
	p := NewProgress(&progress, false)
	p.tick = 200 * time.Millisecond
	a := Attack{
		Name: "e2e",
		Targeter: vegeta.NewStaticTargeter(
			vegeta.Target{Method: http.MethodGet, URL: srv.URL + "/ok"},
			vegeta.Target{Method: http.MethodGet, URL: srv.URL + "/busy"},
		),
		Rate:        40,
		Duration:    time.Second,
		Connections: 4,
		KeepAlive:   true,
		Inspect: func(r *vegeta.Result) {
			seen++
			if r.Code == http.StatusServiceUnavailable && r.Headers.Get("Retry-After") != "" {
				withRetryAfter++
			}
		},
		Progress: p,
	}
	rep, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests < 36 || rep.Requests > 44 {
		t.Errorf("Requests = %d, want about 40 (40/s for 1s)", rep.Requests)
	}
	ok, busy := rep.Status[200], rep.Status[503]
	if ok+busy != rep.Requests || ok < busy || ok-busy > 1 {
		t.Errorf("Status = %v for %d requests, want an even split of 200 and 503", rep.Status, rep.Requests)
	}
	if uint64(seen) != rep.Requests || uint64(withRetryAfter) != busy {
		t.Errorf("Inspect saw %d results (%d 503 with Retry-After), want %d (%d)", seen, withRetryAfter, rep.Requests, busy)
	}
	for k, n := range rep.Errors {
		if n != 0 {
			t.Errorf("Errors[%s] = %d, want 0", k, n)
		}
	}
	if !strings.Contains(progress.String(), "e2e:") || !strings.Contains(progress.String(), "requests ") {
		t.Errorf("progress output %q lacks a progress line", progress.String())
	}
	if strings.Contains(progress.String(), "\r") {
		t.Errorf("progress to a non-terminal must not rewrite lines: %q", progress.String())
	}
}

func TestAttackCountsRefused(t *testing.T) {
	// A listener closed right away leaves a port nobody answers on.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()

	a := Attack{
		Name:        "refused",
		Targeter:    vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: url}),
		Rate:        20,
		Duration:    250 * time.Millisecond,
		Connections: 2,
	}
	rep, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.Errors[ErrRefused] != rep.Requests || len(rep.Status) != 0 {
		t.Errorf("Requests %d, Errors %v, Status %v: want every request refused", rep.Requests, rep.Errors, rep.Status)
	}
	if rep.Throughput != 0 {
		t.Errorf("Throughput = %f, want 0", rep.Throughput)
	}
}

func TestAttackStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a := Attack{
		Name:        "cancelled",
		Targeter:    vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: srv.URL}),
		Rate:        10,
		Duration:    time.Minute,
		Connections: 2,
		Inspect:     func(*vegeta.Result) { cancel() },
	}
	start := time.Now()
	rep, err := a.Run(ctx)
	if err != context.Canceled {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if rep.Requests == 0 || time.Since(start) > 10*time.Second {
		t.Errorf("got %d requests in %s; want the attack to stop soon after the first", rep.Requests, time.Since(start))
	}
}

func TestAttackRejectsUnboundedRuns(t *testing.T) {
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: "http://127.0.0.1:1"})
	for _, a := range []Attack{
		{Name: "no duration", Targeter: tr, Connections: 1},
		{Name: "no connections", Targeter: tr, Duration: time.Second},
		{Name: "negative rate", Targeter: tr, Duration: time.Second, Connections: 1, Rate: -1},
		{Name: "no targeter", Duration: time.Second, Connections: 1},
	} {
		if _, err := a.Run(context.Background()); err == nil {
			t.Errorf("%s: Run succeeded, want an error", a.Name)
		}
	}
}
