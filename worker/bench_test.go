package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/amexd/amexd/internal/metrics"
	"github.com/amexd/amexd/internal/ratelimit"
)

// BenchmarkUserEventsFanout measures GET /events/user/:id for a user with K
// events against the simulator's real 500 ms getEventById: the cold first
// request (fetched in parallel, so about one upstream latency) and a repeat
// (served from the cache). Run with -benchtime 1x; it reports first-ms and
// repeat-ms.
func BenchmarkUserEventsFanout(b *testing.B) {
	for _, k := range []int{1, 10, 50, 100} {
		b.Run(fmt.Sprintf("K=%d", k), func(b *testing.B) {
			var first, repeat time.Duration
			for range b.N {
				b.StopTimer()
				cfg := testConfig()
				cfg.Simulator.EventDelay = 500 * time.Millisecond
				cfg.Simulator.PreloadUser = 1
				cfg.Simulator.PreloadEvents = k
				e := newEnv(b, cfg)
				e.app.log = slog.New(slog.NewTextHandler(io.Discard, nil))
				b.StartTimer()
				first += timeGet(b, e, "/events/user/1")
				b.StopTimer()
				repeat += timeGet(b, e, "/events/user/1")
			}
			b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "first-ms")
			b.ReportMetric(float64(repeat.Microseconds())/1000/float64(b.N), "repeat-ms")
		})
	}
}

func timeGet(b *testing.B, e *env, path string) time.Duration {
	start := time.Now()
	res, err := e.http.Get(e.srv.URL + path)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	d := time.Since(start)
	if res.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d", path, res.StatusCode)
	}
	return d
}

// BenchmarkCachedGet is the hot path: a cached GET through every middleware.
func BenchmarkCachedGet(b *testing.B) {
	cfg := testConfig()
	cfg.RateLimit.Rate = "1000000000-H"
	e := newEnv(b, cfg)
	h := e.app.Handler()
	warm := e.do(b, "GET", "/events", "")
	if warm.status != 200 {
		b.Fatal(warm.status)
	}
	b.ReportAllocs()
	// The setup's allocations (cache shards, simulator) are not the hot
	// path's; counted, they add up to half an allocation per op on a
	// busy machine's short runs.
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := discardWriter{h: http.Header{}}
			req, _ := http.NewRequest("GET", "/events", nil)
			req.RemoteAddr = "127.0.0.1:1234"
			h.ServeHTTP(&w, req)
			if w.status != 200 {
				b.Fatalf("status %d", w.status)
			}
		}
	})
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

// BenchmarkRateLimitMiddleware is the limiter's cost per request: one
// request through the rate-limit middleware alone, per store, against the
// same chain without it.
func BenchmarkRateLimitMiddleware(b *testing.B) {
	table, file, err := ratelimit.CreateTable(1 << 16)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { table.Close(); file.Close() })
	for _, store := range []string{"none", ratelimit.StoreMemory, ratelimit.StoreShared} {
		b.Run(store, func(b *testing.B) {
			cfg := testConfig()
			cfg.RateLimit.Rate = "16000000-H"
			e := echo.New()
			a := &App{echo: e, metrics: metrics.NewWorker(func() metrics.CacheStats { return metrics.CacheStats{} }), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if store != "none" {
				cfg.RateLimit.Store = store
				st, err := ratelimit.NewStore(context.Background(), cfg.RateLimit, file)
				if err != nil {
					b.Fatal(err)
				}
				limits, err := buildLimits(cfg, st)
				if err != nil {
					b.Fatal(err)
				}
				e.Use(a.limitRate(limits, 64))
			}
			e.GET("/x", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", "/x", nil)
				req.RemoteAddr = "192.0.2.1:1234"
				for pb.Next() {
					w := discardWriter{h: http.Header{}}
					e.ServeHTTP(&w, req)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		})
	}
}
