package metrics

import (
	"strings"
	"testing"
	"time"
)

func TestWatchProcessSeries(t *testing.T) {
	w := NewWorker(func() CacheStats { return CacheStats{} })
	w.WatchProcess(func() ProcessStats {
		return ProcessStats{RSSBytes: 5 << 20, CPUSeconds: 1.25, MemoryLimit: 1 << 30, P50: 2 * time.Millisecond, P99: 40 * time.Millisecond, Count: 7, Sum: 1500 * time.Millisecond}
	})
	out, err := w.Exposition()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"amexd_worker_resident_memory_bytes 5.24288e+06",
		"amexd_worker_cpu_seconds_total 1.25",
		"amexd_worker_memory_limit_bytes 1.073741824e+09",
		`amexd_worker_request_duration_last_minute_seconds{quantile="0.5"} 0.002`,
		`amexd_worker_request_duration_last_minute_seconds{quantile="0.99"} 0.04`,
		"# TYPE amexd_worker_request_duration_last_minute_seconds summary",
		"amexd_worker_request_duration_last_minute_seconds_sum 1.5",
		"amexd_worker_request_duration_last_minute_seconds_count 7",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
}
