package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func syntheticMetrics() *vegeta.Metrics {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	results := []vegeta.Result{
		{Code: 200, Latency: 1 * time.Millisecond},
		{Code: 200, Latency: 2 * time.Millisecond},
		{Code: 200, Latency: 3 * time.Millisecond},
		{Code: 503, Latency: 4 * time.Millisecond, Error: "503 Service Unavailable"},
		{Code: 0, Latency: 500 * time.Microsecond, Error: "Get \"http://127.0.0.1:1/\": dial tcp 127.0.0.1:1: connect: connection refused"},
	}
	var m vegeta.Metrics
	for i := range results {
		results[i].Timestamp = start.Add(time.Duration(i) * 250 * time.Millisecond)
		m.Add(&results[i])
	}
	m.Close()
	return &m
}

func TestNewReportFromMetrics(t *testing.T) {
	rep := NewReport("cached", syntheticMetrics(), map[ErrorKind]uint64{ErrRefused: 1})
	if rep.Requests != 5 {
		t.Errorf("Requests = %d, want 5", rep.Requests)
	}
	if rep.Status[200] != 3 || rep.Status[503] != 1 || len(rep.Status) != 2 {
		t.Errorf("Status = %v, want 200:3 503:1 and no 0", rep.Status)
	}
	if rep.Latency.Max != 4*time.Millisecond {
		t.Errorf("Max = %s, want 4ms", rep.Latency.Max)
	}
	if len(rep.Errors) != len(AllErrorKinds()) || rep.Errors[ErrRefused] != 1 {
		t.Errorf("Errors = %v, want every kind, refused:1", rep.Errors)
	}
	// 3 successes over 1 s of sends plus the last answer's 500µs.
	if rep.Throughput < 2.9 || rep.Throughput > 3.0 {
		t.Errorf("Throughput = %f, want about 3/1.0005s", rep.Throughput)
	}
}

func TestWriteTable(t *testing.T) {
	rep := NewReport("cached", syntheticMetrics(), map[ErrorKind]uint64{ErrRefused: 1})
	rep.Notes = []string{"amexd/baseline = 0.75"}
	idle := Report{Name: "baseline-with-long-name", Status: map[int]uint64{}, Errors: map[ErrorKind]uint64{}}
	var b strings.Builder
	if err := WriteTable(&b, []Report{rep, idle}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want header, 2 rows, 1 note:\n%s", len(lines), b.String())
	}
	header, row, idleRow := lines[0], lines[1], lines[2]
	for _, want := range []string{"requests", "throughput/s", "p50", "p90", "p99", "max", "status", "errors"} {
		if !strings.Contains(header, want) {
			t.Errorf("header %q lacks %q", header, want)
		}
	}
	for _, want := range []string{" 5 ", "200:3 503:1", "refused:1", "4.00ms"} {
		if !strings.Contains(row, want) {
			t.Errorf("row %q lacks %q", row, want)
		}
	}
	// Aligned columns: "requests" starts at the same offset in every line.
	col := strings.Index(header, "requests")
	if !strings.HasPrefix(row[col:], "5 ") || !strings.HasPrefix(idleRow[col:], "0 ") {
		t.Errorf("requests column not aligned at %d:\n%s", col, b.String())
	}
	if !strings.Contains(idleRow, "-") {
		t.Errorf("idle row %q should show - for no status and no errors", idleRow)
	}
	if lines[3] != "cached: amexd/baseline = 0.75" {
		t.Errorf("note line = %q", lines[3])
	}
}

func TestReportJSON(t *testing.T) {
	rep := NewReport("cached", syntheticMetrics(), nil)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Requests int                `json:"requests"`
		Latency  map[string]float64 `json:"latency_ms"`
		Status   map[string]int     `json:"status"`
		Errors   map[string]int     `json:"errors"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Requests != 5 || got.Latency["max"] != 4 || got.Status["503"] != 1 {
		t.Errorf("decoded %+v from %s", got, b)
	}
	if _, ok := got.Errors["timeout"]; !ok {
		t.Errorf("errors %v should list every kind, timeout among them", got.Errors)
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{250 * time.Microsecond, "250µs"},
		{1500 * time.Microsecond, "1.50ms"},
		{2500 * time.Millisecond, "2.50s"},
	} {
		if got := FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want ErrorKind
	}{
		{`Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused`, ErrRefused},
		{`Get "http://127.0.0.1:3000/events": read tcp 127.0.0.1:5->127.0.0.1:3000: read: connection reset by peer`, ErrReset},
		{`Get "http://127.0.0.1:3000/events": EOF`, ErrReset},
		{`Get "http://127.0.0.1:3000/events": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`, ErrTimeout},
		{`Get "http://127.0.0.1:3000/events": dial tcp 127.0.0.1:3000: i/o timeout`, ErrTimeout},
		{`net/http: invalid header field name`, ErrOther},
	} {
		if got := Classify(tc.msg); got != tc.want {
			t.Errorf("Classify(%q) = %s, want %s", tc.msg, got, tc.want)
		}
	}
}
