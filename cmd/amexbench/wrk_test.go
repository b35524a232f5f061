package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/testkit/bench"
)

func wrkRun(rate float64, p99 time.Duration) bench.WrkResult {
	return bench.WrkResult{RequestsPerSec: rate, P99: p99}
}

func TestRatiosAreMediansOfRounds(t *testing.T) {
	ms := time.Millisecond
	subject := []bench.WrkResult{wrkRun(90, 2*ms), wrkRun(40, 9*ms), wrkRun(60, 3*ms)}
	reference := []bench.WrkResult{wrkRun(100, 2*ms), wrkRun(100, 3*ms), wrkRun(50, 2*ms)}
	r := ratios(subject, reference)
	if want := []float64{0.9, 0.4, 1.2}; !slices.Equal(r.rateRound, want) {
		t.Errorf("req/s per round = %v, want %v", r.rateRound, want)
	}
	if want := []float64{1, 3, 1.5}; !slices.Equal(r.p99Round, want) {
		t.Errorf("p99 per round = %v, want %v", r.p99Round, want)
	}
	// Medians, not means: the one bad round (0.4, 3) moves neither.
	if r.rate != 0.9 || r.p99 != 1.5 {
		t.Errorf("medians = %.2f, %.2f; want 0.90, 1.50", r.rate, r.p99)
	}
	// A reference that measured nothing, or a round only one side has, is
	// left out rather than dividing by zero.
	r = ratios([]bench.WrkResult{wrkRun(10, ms), wrkRun(10, ms), wrkRun(10, ms)}, []bench.WrkResult{wrkRun(0, 0), wrkRun(20, 2*ms)})
	if len(r.rateRound) != 1 || r.rate != 0.5 || r.p99 != 0.5 {
		t.Errorf("ratios with a failed reference = %+v, want the one round 0.5, 0.5", r)
	}
}

func TestWriteWrkReportsEachComparison(t *testing.T) {
	ms := time.Millisecond
	nginx := &wrkServer{name: "nginx", runs: []bench.WrkResult{wrkRun(100, 2*ms), wrkRun(100, 2*ms), wrkRun(100, 2*ms)}}
	minimal := &wrkServer{name: "minimal", runs: []bench.WrkResult{wrkRun(200, ms), wrkRun(200, ms), wrkRun(200, ms)}}
	on := &wrkServer{name: "amexd on", runs: []bench.WrkResult{wrkRun(95, 2*ms), wrkRun(80, 3*ms), wrkRun(92, 2*ms)}}
	var out bytes.Buffer
	err := writeWrk(&out, options{rounds: 3, connections: 64, duration: 5 * time.Second},
		[]*wrkServer{nginx, minimal, on},
		[]wrkComparison{{subject: on, reference: nginx, minRatio: 0.90, maxP99: 1.30}, {subject: on, reference: minimal}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	// find returns the first line starting with prefix, its columns
	// joined by one space.
	find := func(prefix string) string {
		for _, l := range lines {
			if l = strings.Join(strings.Fields(l), " "); strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting %q in:\n%s", prefix, out.String())
		return ""
	}
	if got, want := find("amexd on nginx"), "amexd on nginx 0.92 >= 0.90 met 1.00 <= 1.30 met 0.95 1.00, 0.80 1.50, 0.92 1.00"; got != want {
		t.Errorf("against nginx:\n got %q\nwant %q", got, want)
	}
	if got, want := find("amexd on minimal"), "amexd on minimal 0.46 - 2.00 - 0.47 2.00, 0.40 3.00, 0.46 2.00"; got != want {
		t.Errorf("against minimal:\n got %q\nwant %q", got, want)
	}
	if got := find("3 amexd on"); got != "3 amexd on 92 0s 2ms 0" {
		t.Errorf("round 3's run = %q", got)
	}
}
