package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// WrkResult is what one wrk run measured.
type WrkResult struct {
	RequestsPerSec float64       `json:"requests_per_sec"`
	P50            time.Duration `json:"p50_ns"`
	P99            time.Duration `json:"p99_ns"`
	// Errors are wrk's socket errors and non-2xx/3xx answers.
	Errors int64 `json:"errors"`
}

// Wrk runs wrk (the Debian package's binary, on PATH) with threads,
// connections and duration against url, and parses its report.
func Wrk(ctx context.Context, url string, threads, connections int, d time.Duration) (WrkResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(connections),
		"-d"+strconv.Itoa(secs)+"s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	res, err := ParseWrk(out)
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return res, nil
}

// ParseWrk reads wrk's --latency report.
func ParseWrk(out []byte) (WrkResult, error) {
	var (
		res          WrkResult
		haveRate     bool
		haveP99      bool
		latencyTable bool
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case f[0] == "Latency" && len(f) > 1 && f[1] == "Distribution":
			latencyTable = true
		case latencyTable && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return res, err
			}
			switch f[0] {
			case "50%", "50.000%":
				res.P50 = d
			case "99%", "99.000%":
				res.P99, haveP99 = d, true
			}
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return res, fmt.Errorf("requests/sec %q: %w", f[1], err)
			}
			res.RequestsPerSec, haveRate = v, true
		case f[0] == "Socket" && len(f) > 2 && f[1] == "errors:":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				res.Errors += n
			}
		case f[0] == "Non-2xx" && len(f) > 4:
			n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			res.Errors += n
		}
	}
	if !haveRate || !haveP99 {
		return res, fmt.Errorf("no Requests/sec or 99%% latency in wrk's output")
	}
	return res, nil
}

// parseWrkDuration reads wrk's "812.00us", "1.23ms", "2.00s" or "1.00m".
func parseWrkDuration(s string) (time.Duration, error) {
	if strings.HasSuffix(s, "m") && !strings.HasSuffix(s, "ms") {
		s = strings.TrimSuffix(s, "m") + "min"
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "min": time.Minute}
	for _, u := range []string{"us", "ms", "min", "s"} {
		if num, ok := strings.CutSuffix(s, u); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk latency %q: %w", s, err)
			}
			return time.Duration(v * float64(unit[u])), nil
		}
	}
	return 0, fmt.Errorf("wrk latency %q: unknown unit", s)
}
