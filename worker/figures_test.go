package worker

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestProbeGoesThroughTheChainUncounted(t *testing.T) {
	cfg := testConfig()
	cfg.Log.Access = true
	var logs bytes.Buffer
	e := newEnv(t, cfg)
	e.app.App.log = slog.New(slog.NewJSONHandler(&logs, nil))

	entered, release := make(chan struct{}), make(chan struct{})
	e.app.App.echo.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Request().RemoteAddr == probeAddr {
				close(entered)
				<-release
			}
			return next(c)
		}
	})
	probed := make(chan struct{})
	go func() {
		e.app.Probe()
		close(probed)
	}()
	<-entered // the probe reached the application's middleware
	select {
	case <-probed:
		t.Fatal("Probe returned while the request path was stuck")
	default:
	}
	close(release)
	<-probed
	if n := e.app.App.Requests(); n != 0 {
		t.Errorf("the probe counted as %d requests", n)
	}
	if logs.Len() != 0 {
		t.Errorf("the probe was logged: %s", logs.String())
	}
}

func TestStatsCarryProcessFigures(t *testing.T) {
	e := newEnv(t, testConfig())
	for range 5 {
		e.do(t, "GET", "/users", "")
	}
	e.do(t, "GET", "/nope", "") // a 404 is not a server error
	e.app.App.observe(time.Now(), time.Millisecond, 503)

	st := e.app.Stats()
	p := st.Process
	if p.RSSBytes == 0 || p.CPUSeconds <= 0 {
		t.Errorf("process figures %+v, want RSS and CPU time", p)
	}
	if p.Latency.Count != 7 || p.Latency.P50Ms <= 0 || p.Latency.P99Ms < p.Latency.P50Ms {
		t.Errorf("latency %+v, want 7 answers with p99 >= p50 > 0", p.Latency)
	}
	if st.Errors != 1 {
		t.Errorf("%d server errors, want 1", st.Errors)
	}
	metrics := string(e.app.Metrics())
	for _, name := range []string{"amexd_worker_resident_memory_bytes", "amexd_worker_cpu_seconds_total", "amexd_worker_request_duration_last_minute_seconds"} {
		if !bytes.Contains([]byte(metrics), []byte(name)) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "")
	setMemoryLimit(900<<20, slog.New(slog.DiscardHandler))
	if got := debug.SetMemoryLimit(-1); got != 900<<20 {
		t.Errorf("memory limit %d, want %d", got, 900<<20)
	}
	e := newEnv(t, testConfig())
	if got := e.app.Stats().Process.MemoryLimit; got != 900<<20 {
		t.Errorf("stats report a memory limit of %d, want %d", got, 900<<20)
	}
}
