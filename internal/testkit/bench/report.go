package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Report is the outcome of one attack: what the table prints and what
// --json encodes.
type Report struct {
	// Name labels the row: the scenario, and its variant when it has several.
	Name     string        `json:"name"`
	Requests uint64        `json:"requests"`
	Duration time.Duration `json:"duration_ns"`
	// Rate is the rate requests were sent at, per second.
	Rate float64 `json:"rate"`
	// Throughput is successful (2xx/3xx) answers per second, counting the
	// wait for the last answers.
	Throughput float64 `json:"throughput"`
	// Success is the fraction of requests answered 2xx/3xx.
	Success float64 `json:"success"`
	Latency Latency `json:"latency_ms"`
	// Status counts answers by HTTP status code; requests that got no answer
	// are in Errors instead.
	Status map[int]uint64 `json:"status"`
	// Errors counts transport failures by kind; every kind is present.
	Errors map[ErrorKind]uint64 `json:"errors"`
	// BaselineRatio is Throughput over the bare net/http baseline's in the
	// same run, when the scenario measured one.
	BaselineRatio float64 `json:"baseline_ratio,omitempty"`
	// Notes are scenario-specific findings printed under the table.
	Notes []string `json:"notes,omitempty"`
	// Timeline is the attack's results over time, when it recorded them.
	Timeline *Timeline `json:"-"`
}

// Latency holds latency quantiles of one attack. It encodes to JSON as
// milliseconds.
type Latency struct {
	P50, P90, P99, Max, Mean time.Duration
}

// MarshalJSON encodes the quantiles as fractional milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return json.Marshal(map[string]float64{
		"p50": ms(l.P50), "p90": ms(l.P90), "p99": ms(l.P99), "max": ms(l.Max), "mean": ms(l.Mean),
	})
}

// NewReport builds a report from closed metrics and the transport errors
// counted by kind. The "0" status vegeta records for requests without an
// answer is left out of Status.
func NewReport(name string, m *vegeta.Metrics, errs map[ErrorKind]uint64) Report {
	r := Report{
		Name:       name,
		Requests:   m.Requests,
		Duration:   m.Duration + m.Wait,
		Rate:       m.Rate,
		Throughput: m.Throughput,
		Success:    m.Success,
		Latency: Latency{
			P50: m.Latencies.P50, P90: m.Latencies.P90, P99: m.Latencies.P99,
			Max: m.Latencies.Max, Mean: m.Latencies.Mean,
		},
		Status: make(map[int]uint64, len(m.StatusCodes)),
		Errors: make(map[ErrorKind]uint64, 4),
	}
	for code, n := range m.StatusCodes {
		c, err := strconv.Atoi(code)
		if err != nil || c == 0 {
			continue
		}
		r.Status[c] += uint64(n)
	}
	for _, k := range AllErrorKinds() {
		r.Errors[k] = errs[k]
	}
	return r
}

// WriteTable prints the reports as one aligned table, then each report's
// notes under a line naming it.
func WriteTable(w io.Writer, reports []Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\trequests\tthroughput/s\tp50\tp90\tp99\tmax\tstatus\terrors")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Name, r.Requests, r.Throughput,
			FormatDuration(r.Latency.P50), FormatDuration(r.Latency.P90),
			FormatDuration(r.Latency.P99), FormatDuration(r.Latency.Max),
			FormatStatus(r.Status), FormatErrors(r.Errors))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	for _, r := range reports {
		for _, n := range r.Notes {
			if _, err := fmt.Fprintf(w, "%s: %s\n", r.Name, n); err != nil {
				return fmt.Errorf("write table: %w", err)
			}
		}
	}
	return nil
}

// FormatDuration prints a latency with three significant figures in the
// unit that suits it (µs, ms or s).
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// FormatStatus prints answers by status as "200:12 503:3", or "-".
func FormatStatus(status map[int]uint64) string {
	if len(status) == 0 {
		return "-"
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(status)) {
		parts = append(parts, fmt.Sprintf("%d:%d", code, status[code]))
	}
	return strings.Join(parts, " ")
}

// FormatErrors prints the transport failures that happened by kind, as
// "timeout:2", or "-".
func FormatErrors(errs map[ErrorKind]uint64) string {
	var parts []string
	for _, k := range AllErrorKinds() {
		if n := errs[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", k, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
