package process

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestStatsCarryProcessFigures(t *testing.T) {
	e := newEnv(t, testConfig())
	for range 5 {
		e.do(t, "GET", "/users", "")
	}
	e.do(t, "GET", "/nope", "") // a 404 is not a server error
	e.app.App.Drain()
	e.do(t, "GET", "/readyz", "") // a 503: the one server error

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
