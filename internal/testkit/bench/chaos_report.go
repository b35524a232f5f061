package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// followChaos prints a line per second about a fault run.
func (p *Progress) followChaos(fault Fault, tr *tracker, injections *atomic.Int64, done <-chan struct{}) {
	p.every(done, tr.sent.Load, func(elapsed time.Duration, n, rate uint64) string {
		return fmt.Sprintf("%s: %4.0fs  injections %d  requests %d  rate %d/s  errors %d  http>=400 %d",
			fault, elapsed.Seconds(), injections.Load(), n, rate, tr.failed.Load(), tr.httpErrs.Load())
	})
}

// WriteChaos prints each fault's report: a header line, the streams'
// table, then answers per request kind, recovery times, pids and the data
// check.
func WriteChaos(w io.Writer, reports []FaultReport) error {
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "== fault %s: %d injection(s) over %s\n", r.Fault, r.Injections, FormatDuration(r.FaultDuration))
		if err := WriteTable(w, r.Streams); err != nil {
			return err
		}
		if err := WriteChaosDetails(w, r); err != nil {
			return fmt.Errorf("write chaos report: %w", err)
		}
	}
	return nil
}

// WriteChaosDetails prints what a fault's report holds besides its
// streams: answers per request kind, recovery times, pids, the data check
// and the problems.
func WriteChaosDetails(w io.Writer, r FaultReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "request\trequests\tstatus\terrors\t503 w/o Retry-After\trecovery")
	for _, kind := range slices.Sorted(maps.Keys(r.Kinds)) {
		k := r.Kinds[kind]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\n", kind, k.Requests, FormatStatus(k.Status),
			FormatErrors(k.Errors), k.NoRetryAfter, formatRecovery(r.Recovery[kind], kind, r.Recovery))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "health 200 again after %s; pids %v -> %v (%d replaced)\n",
		formatRecovery(r.HealthRecovery, "", nil), r.PidsBefore, r.PidsAfter, r.Replaced())
	if len(r.SlotRecovery) > 0 {
		parts := make([]string, len(r.SlotRecovery))
		for i, d := range r.SlotRecovery {
			parts[i] = formatRecovery(d, "", nil)
		}
		fmt.Fprintf(w, "killed slots serving again after: %s\n", strings.Join(parts, " "))
	}
	d := r.Data
	verdict := "every event readable on every read, none missing upstream"
	if !d.OK() {
		verdict = fmt.Sprintf("%d unreadable, %d missing upstream", len(d.Unreadable), len(d.MissingUpstream))
	}
	fmt.Fprintf(w, "data: %d events answered 201, %d reads on new connections (%d repeated after 503/504): %s\n",
		d.Created, d.Reads, d.Retried, verdict)
	for _, p := range append(slices.Clone(d.Unreadable), d.MissingUpstream...) {
		fmt.Fprintf(w, "  data: %s\n", p)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	return nil
}

// formatRecovery prints a recovery time, "-" for a kind never measured and
// "never" for -1.
func formatRecovery(d time.Duration, kind string, all map[string]time.Duration) string {
	if all != nil {
		if _, ok := all[kind]; !ok {
			return "-"
		}
	}
	if d < 0 {
		return "never"
	}
	return FormatDuration(d)
}
