package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// table collects rows and aligns them with tabwriter on String.
type table struct {
	b  strings.Builder
	tw *tabwriter.Writer
}

func newTable(header ...string) *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.b, 0, 4, 2, ' ', 0)
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) String() string {
	_ = t.tw.Flush() // a strings.Builder never fails a write
	return t.b.String()
}

// formatStatus renders /status: the supervisor, its configuration summary,
// then one row per worker.
func formatStatus(st operator.Status) string {
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY"
		if st.Reason != "" {
			health += ": " + st.Reason
		}
	}
	head := newTable()
	head.row("supervisor", fmt.Sprintf("pid %d, version %s, up %s, generation %d", st.PID, st.Version, seconds(st.UptimeSeconds), st.Generation))
	head.row("listen", st.Listen)
	head.row("health", health)
	head.row("config", configLine(st.Config))
	if rl := st.RateLimit; rl != nil {
		line := fmt.Sprintf("shared table %d of %d slots live, %d requests overflowed", rl.TableUsed, rl.TableSlots, rl.TableOverflow)
		if rl.TableOverflow > 0 {
			line += " (TABLE FULL: raise ratelimit.table_slots)"
		}
		head.row("ratelimit", line)
	}
	if id := st.Idempotency; id != nil {
		line := fmt.Sprintf("table %d of %d keys live, %d evicted before their TTL", id.Keys, id.MaxKeys, id.Evicted)
		if id.Evicted > 0 {
			line += " (raise idempotency.max_keys)"
		}
		head.row("idempotency", line)
	}

	var dropped uint64
	for _, w := range st.Workers {
		dropped += w.AccessLogDropped
	}
	if dropped > 0 {
		head.row("access log", fmt.Sprintf("%d lines dropped by failed writes (disk full? see the workers' warnings)", dropped))
	}

	t := newTable("SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "REQUESTS", "HITS", "MISSES", "STALE")
	for _, w := range st.Workers {
		t.row(strconv.Itoa(w.Slot), pid(w.PID), workerState(w), seconds(w.UptimeSeconds), strconv.Itoa(w.Restarts),
			u64(w.Requests), u64(w.Cache.Hits), u64(w.Cache.Misses), u64(w.Cache.Stale))
	}
	return head.String() + "\n" + t.String()
}

// formatWorkers renders /workers with the slot sockets' accept queues, how
// long ago each worker last reported, its memory, CPU time and latency of
// the last minute, and the slot's last replacement, relative to now.
func formatWorkers(ws []operator.WorkerInfo, now time.Time) string {
	t := newTable("SLOT", "PID", "STATE", "GEN", "UPTIME", "RESTARTS", "REQUESTS", "INFLIGHT", "REJECTED", "QUEUE", "BACKLOG", "HEARTBEAT",
		"RSS", "CPU", "P50", "P99", "LAST REPLACED")
	for _, w := range ws {
		beat, rss, cpu, p50, p99 := "-", "-", "-", "-", "-"
		if !w.LastHeartbeat.IsZero() {
			beat = now.Sub(w.LastHeartbeat).Round(100*time.Millisecond).String() + " ago"
		}
		if w.PID != 0 && w.RSSBytes > 0 {
			rss = fmt.Sprintf("%.1fMiB", float64(w.RSSBytes)/(1<<20))
			cpu = strconv.FormatFloat(w.CPUSeconds, 'f', 1, 64) + "s"
			p50, p99 = millis(w.P50Ms), millis(w.P99Ms)
		}
		t.row(strconv.Itoa(w.Slot), pid(w.PID), workerState(w), strconv.Itoa(w.Generation), seconds(w.UptimeSeconds),
			strconv.Itoa(w.Restarts), u64(w.Requests), strconv.FormatInt(w.Inflight, 10), u64(w.LimiterRejections),
			known(w.QueueDepth), known(w.QueueBacklog), beat, rss, cpu, p50, p99, lastReplaced(w.LastReplacement, now))
	}
	return t.String()
}

// millis renders a latency in milliseconds, "-" when none was measured.
func millis(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return strconv.FormatFloat(ms, 'f', -1, 64) + "ms"
}

// lastReplaced renders why and how long ago a slot's worker was replaced.
func lastReplaced(r *operator.Replacement, now time.Time) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s of %d, %s ago", r.Reason, r.PID, now.Sub(r.At).Round(time.Second))
}

// formatBreakers renders /breakers: a row per worker and breaker, then the
// cluster summary per breaker.
func formatBreakers(cs control.ClusterStatus) string {
	t := newTable("SLOT", "PID", "WORKER", "BREAKER", "STATE", "FAILURES", "OPENS", "RETRY IN")
	for _, w := range cs.Workers {
		if len(w.Breakers) == 0 {
			t.row(strconv.Itoa(w.Slot), pid(w.PID), w.State, "-", "-", "-", "-", "-")
		}
		for _, b := range w.Breakers {
			retry := "-"
			if b.RetryAfterMs > 0 {
				retry = (time.Duration(b.RetryAfterMs) * time.Millisecond).Round(100 * time.Millisecond).String()
			}
			t.row(strconv.Itoa(w.Slot), pid(w.PID), w.State, b.Name, b.State, strconv.Itoa(b.FailuresInWindow), u64(b.Opens), retry)
		}
	}
	s := newTable("BREAKER", "OPEN", "HALF-OPEN", "CLOSED")
	for _, b := range cs.Summary {
		s.row(b.Name, strconv.Itoa(b.Open), strconv.Itoa(b.HalfOpen), strconv.Itoa(b.Closed))
	}
	return t.String() + "\n" + s.String()
}

func formatHealth(h operator.Health) string {
	word := "healthy"
	if !h.Healthy {
		word = "unhealthy"
	}
	line := fmt.Sprintf("%s: %d of %d slots serving", word, h.Serving, h.Slots)
	if h.Reason != "" {
		line += " (" + h.Reason + ")"
	}
	return line + "\n"
}

func formatReset(names []string, workers int) string {
	if len(names) == 0 {
		return "no breaker to reset\n"
	}
	return fmt.Sprintf("reset %s in %d %s\n", strings.Join(names, ", "), workers, plural(workers, "worker"))
}

// configLine prints the configuration summary as key=value pairs in key
// order, quoting values with spaces.
func configLine(cfg map[string]any) string {
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := fmt.Sprint(cfg[k])
		if v == "" || strings.ContainsAny(v, " \t") {
			v = strconv.Quote(v)
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

func workerState(w operator.WorkerInfo) string {
	if w.Degraded {
		return w.State + " (degraded)"
	}
	return w.State
}

// seconds renders an uptime rounded to the second, as 1h2m3s.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

func pid(p int) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

// known renders n, or "-" for the daemon's -1 meaning unknown.
func known(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}
