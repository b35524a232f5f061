package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/term"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// topOptions are top's own flags.
type topOptions struct {
	interval time.Duration
	count    int
}

func topFlags(fs *flag.FlagSet, inv *invocation) {
	fs.DurationVar(&inv.top.interval, "interval", time.Second, "time between refreshes")
	fs.IntVar(&inv.top.count, "n", 0, "stop after `N` refreshes (0: until q or Ctrl-C)")
}

// runTop shows the workers live, refreshed every --interval, until q or
// Ctrl-C (or -n refreshes). On a terminal it draws on the alternate screen
// and reads keys raw; elsewhere it prints one frame after another.
func runTop(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "top", args) {
		return exitUsage
	}
	if inv.top.interval < 100*time.Millisecond {
		return inv.usageError("top: --interval %s is below 100ms", inv.top.interval)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	screen := inv.stdout
	if tty, ok := inv.stdin.(*os.File); ok && term.IsTerminal(int(tty.Fd())) {
		restore, err := rawTerminal(tty, inv.stdout)
		if err != nil {
			return inv.fail(fmt.Errorf("top: terminal: %w", err))
		}
		defer restore()
		screen = crlf{inv.stdout}
		go readKeys(tty, cancel)
	}

	var prev *topSample
	tick := time.NewTicker(inv.top.interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		cur, err := takeSample(ctx, inv)
		if ctx.Err() != nil {
			return exitOK
		}
		if err != nil {
			fmt.Fprint(screen, clearScreen(screen)+"amexctl top: "+explain(err, inv.socket, inv.wait)+"\n(retrying; q or Ctrl-C to quit)\n")
		} else {
			fmt.Fprint(screen, clearScreen(screen)+renderTop(prev, cur))
			prev = cur
		}
		if inv.top.count > 0 && n >= inv.top.count {
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-tick.C:
		}
	}
}

// rawTerminal switches tty to raw mode and out to the alternate screen
// with the cursor hidden, and returns what undoes both.
func rawTerminal(tty *os.File, out io.Writer) (func(), error) {
	state, err := term.MakeRaw(int(tty.Fd()))
	if err != nil {
		return nil, err
	}
	fmt.Fprint(out, "\x1b[?1049h\x1b[?25l")
	return func() {
		fmt.Fprint(out, "\x1b[?25h\x1b[?1049l")
		_ = term.Restore(int(tty.Fd()), state)
	}, nil
}

// readKeys calls quit on q, Q, Ctrl-C or Ctrl-D, or when the terminal
// closes.
func readKeys(tty io.Reader, quit func()) {
	defer quit()
	buf := make([]byte, 16)
	for {
		n, err := tty.Read(buf)
		if err != nil {
			return
		}
		for _, b := range buf[:n] {
			if b == 'q' || b == 'Q' || b == 3 || b == 4 {
				return
			}
		}
	}
}

// crlf ends lines with \r\n, which a terminal in raw mode needs.
type crlf struct{ w io.Writer }

func (c crlf) Write(p []byte) (int, error) {
	if _, err := io.WriteString(c.w, strings.ReplaceAll(string(p), "\n", "\r\n")); err != nil {
		return 0, err
	}
	return len(p), nil
}

// clearScreen homes the cursor and clears the screen on a terminal; a
// plain output gets a blank line between frames instead.
func clearScreen(w io.Writer) string {
	if _, ok := w.(crlf); ok {
		return "\x1b[H\x1b[2J"
	}
	return "\n"
}

// topSample is what one refresh read from the daemon.
type topSample struct {
	at       time.Time
	status   operator.Status
	breakers map[int][]control.Breaker // by slot
	// latency is, per slot, the request duration histogram summed over
	// routes: cumulative counts by upper bound.
	latency map[int]histogram
	// rss is, per pid, the resident memory in bytes (-1 unknown).
	rss map[int]int64
}

// histogram is a cumulative histogram; bounds ascend and end with +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

func takeSample(ctx context.Context, inv *invocation) (*topSample, error) {
	rctx, cancel := context.WithTimeout(ctx, inv.wait)
	defer cancel()
	s := &topSample{at: time.Now(), breakers: map[int][]control.Breaker{}, rss: map[int]int64{}}
	var err error
	if s.status, err = operator.Call(rctx, inv.client, operator.GetStatus, operator.None{}); err != nil {
		return nil, err
	}
	cs, err := operator.Call(rctx, inv.client, operator.GetBreakers, operator.None{})
	if err != nil {
		return nil, err
	}
	for _, w := range cs.Workers {
		if cur := slotPID(s.status, w.Slot); cur == w.PID {
			s.breakers[w.Slot] = w.Breakers
		}
	}
	text, err := inv.client.Metrics(rctx)
	if err != nil {
		return nil, err
	}
	if s.latency, err = latencyBySlot(text); err != nil {
		return nil, err
	}
	for _, w := range s.status.Workers {
		s.rss[w.PID] = residentBytes(w.PID)
	}
	return s, nil
}

func slotPID(st operator.Status, slot int) int {
	for _, w := range st.Workers {
		if w.Slot == slot {
			return w.PID
		}
	}
	return 0
}

// latencyBySlot sums amexd_http_request_duration_seconds over routes and
// methods, per slot label.
func latencyBySlot(text []byte) (map[int]histogram, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(text)))
	if err != nil {
		return nil, fmt.Errorf("top: parse metrics: %w", err)
	}
	out := map[int]histogram{}
	f := fams["amexd_http_request_duration_seconds"]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		return out, nil
	}
	for _, m := range f.Metric {
		slot := -1
		for _, l := range m.Label {
			if l.GetName() == "slot" {
				slot, _ = strconv.Atoi(l.GetValue())
			}
		}
		if slot < 0 || m.Histogram == nil {
			continue
		}
		h := out[slot]
		for i, b := range m.Histogram.Bucket {
			if len(h.bounds) <= i {
				h.bounds = append(h.bounds, b.GetUpperBound())
				h.counts = append(h.counts, 0)
			}
			h.counts[i] += float64(b.GetCumulativeCount())
		}
		if n := len(m.Histogram.Bucket); len(h.bounds) == n {
			h.bounds = append(h.bounds, math.Inf(1))
			h.counts = append(h.counts, 0)
		}
		h.counts[len(h.counts)-1] += float64(m.Histogram.GetSampleCount())
		out[slot] = h
	}
	return out, nil
}

// quantileSince is the q-quantile of the observations cur has and prev had
// not, interpolated within its bucket as Prometheus's histogram_quantile
// does; false when there is none.
func quantileSince(prev, cur histogram, q float64) (float64, bool) {
	if len(cur.bounds) == 0 {
		return 0, false
	}
	delta := slices.Clone(cur.counts)
	if len(prev.counts) == len(cur.counts) {
		for i := range delta {
			delta[i] -= prev.counts[i]
		}
	}
	total := delta[len(delta)-1]
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, c := range delta {
		if c >= rank {
			upper := cur.bounds[i]
			if math.IsInf(upper, 1) {
				return lower, true
			}
			if c == below {
				return upper, true
			}
			return lower + (upper-lower)*(rank-below)/(c-below), true
		}
		lower, below = cur.bounds[i], c
	}
	return lower, true
}

// residentBytes reads a process's resident memory from /proc; -1 when it
// cannot (another machine's daemon, or no permission).
func residentBytes(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// renderTop draws one frame: the supervisor line, the totals, then a row
// per slot. Rates and the p99 are over the time since prev, so the first
// frame (prev nil) shows them as "-".
func renderTop(prev, cur *topSample) string {
	var b strings.Builder
	st := cur.status
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + st.Reason
	}
	fmt.Fprintf(&b, "amexd pid %d  generation %d  up %s  %s  %s\n", st.PID, st.Generation,
		seconds(st.UptimeSeconds), health, cur.at.Format("15:04:05"))

	var secs float64
	if prev != nil {
		secs = cur.at.Sub(prev.at).Seconds()
	}
	prevWorker := func(slot, pid int) (operator.WorkerInfo, bool) {
		if prev == nil || secs <= 0 {
			return operator.WorkerInfo{}, false
		}
		for _, w := range prev.status.Workers {
			if w.Slot == slot && w.PID == pid {
				return w, true
			}
		}
		return operator.WorkerInfo{}, false
	}

	t := newTable("SLOT", "PID", "STATE", "REQ/S", "P99", "HIT%", "INFLIGHT", "429/S", "BREAKERS", "RSS")
	var totalRate, totalHits, totalLookups float64
	haveRate := false
	for _, w := range st.Workers {
		rate, p99, hit, rej := "-", "-", "-", "-"
		if pw, ok := prevWorker(w.Slot, w.PID); ok {
			r := float64(w.Requests-pw.Requests) / secs
			rate = fmt.Sprintf("%.1f", r)
			rej = fmt.Sprintf("%.1f", float64(w.LimiterRejections-pw.LimiterRejections)/secs)
			totalRate += r
			haveRate = true
			hits := float64(w.Cache.Hits - pw.Cache.Hits)
			lookups := hits + float64(w.Cache.Misses-pw.Cache.Misses)
			totalHits += hits
			totalLookups += lookups
			if lookups > 0 {
				hit = fmt.Sprintf("%.1f%%", 100*hits/lookups)
			}
			if q, ok := quantileSince(prev.latency[w.Slot], cur.latency[w.Slot], 0.99); ok {
				p99 = formatSeconds(q)
			}
		}
		rss := "-"
		if n := cur.rss[w.PID]; n >= 0 && w.PID > 0 {
			rss = formatBytes(n)
		}
		t.row(strconv.Itoa(w.Slot), pid(w.PID), workerState(w), rate, p99, hit,
			strconv.FormatInt(w.Inflight, 10), rej, breakerText(cur.breakers[w.Slot]), rss)
	}
	if haveRate {
		hit := "-"
		if totalLookups > 0 {
			hit = fmt.Sprintf("%.1f%%", 100*totalHits/totalLookups)
		}
		fmt.Fprintf(&b, "total %.1f req/s  cache hits %s  workers %d\n", totalRate, hit, len(st.Workers))
	} else {
		fmt.Fprintf(&b, "total -  workers %d (rates from the next refresh)\n", len(st.Workers))
	}
	b.WriteString("\n")
	b.WriteString(t.String())
	b.WriteString("\nq or Ctrl-C to quit\n")
	return b.String()
}

// breakerText names the breakers that are not closed, or says all are.
func breakerText(bs []control.Breaker) string {
	if len(bs) == 0 {
		return "-"
	}
	var notClosed []string
	for _, br := range bs {
		if br.State != "closed" {
			notClosed = append(notClosed, br.Name+" "+br.State)
		}
	}
	if len(notClosed) == 0 {
		return fmt.Sprintf("%d closed", len(bs))
	}
	return strings.Join(notClosed, ", ")
}

func formatSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
