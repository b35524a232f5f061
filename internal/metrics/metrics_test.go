package metrics

import (
	"strings"
	"testing"
	"time"
)

// A route's series resolved once count into the very series Request finds
// by its labels, for every status code, in range of the table or not.
func TestRouteRecordsIntoTheRequestSeries(t *testing.T) {
	w := NewWorker(func() CacheStats { return CacheStats{} })
	r := w.Route("/users/:id", "GET")
	w.Route("/events", "GET")
	for range 3 {
		r.Request(200, 2*time.Millisecond)
	}
	r.Request(304, time.Millisecond)
	r.Request(999, time.Millisecond)
	w.Request("/users/:id", "GET", 200, time.Millisecond)
	out, err := w.Exposition()
	if err != nil {
		t.Fatal(err)
	}
	var requests []string
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "amexd_http_requests_total{") {
			requests = append(requests, strings.TrimSpace(line))
		}
	}
	want := []string{
		`amexd_http_requests_total{code="200",method="GET",route="/users/:id"} 4`,
		`amexd_http_requests_total{code="304",method="GET",route="/users/:id"} 1`,
		`amexd_http_requests_total{code="999",method="GET",route="/users/:id"} 1`,
	}
	if strings.Join(requests, "\n") != strings.Join(want, "\n") {
		t.Errorf("request series:\n%s\nwant:\n%s", strings.Join(requests, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(string(out), `route="/events"`) {
		t.Errorf("a route without answers has series:\n%s", out)
	}
	if count := `amexd_http_request_duration_seconds_count{method="GET",route="/users/:id"} 6`; !strings.Contains(string(out), count) {
		t.Errorf("exposition lacks %s:\n%s", count, out)
	}
}

// BenchmarkRequest records one answer by its labels (Worker.Request) and
// through its route's series resolved once (Route.Request).
func BenchmarkRequest(b *testing.B) {
	w := NewWorker(func() CacheStats { return CacheStats{} })
	b.Run("labels", func(b *testing.B) {
		for b.Loop() {
			w.Request("/users/:id", "GET", 200, time.Millisecond)
		}
	})
	r := w.Route("/users/:id", "GET")
	b.Run("route", func(b *testing.B) {
		for b.Loop() {
			r.Request(200, time.Millisecond)
		}
	})
}
