package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/operator"
)

// command is one amexctl subcommand.
type command struct {
	run func(ctx context.Context, inv *invocation, args []string) int
	// flags registers the command's own flags, if any.
	flags func(fs *flag.FlagSet, inv *invocation)
	// wait is the default --timeout.
	wait time.Duration
	// local commands do not talk to the daemon.
	local bool
	// live commands run until the operator quits; wait bounds each of
	// their requests instead of the whole command.
	live bool
}

// commandNamed looks a subcommand up by name.
func commandNamed(name string) (command, bool) {
	switch name {
	case "status":
		return command{run: runStatus, wait: defaultWait}, true
	case "workers":
		return command{run: runWorkers, wait: defaultWait}, true
	case "breakers":
		return command{run: runBreakers, wait: defaultWait}, true
	case "health":
		return command{run: runHealth, wait: defaultWait}, true
	case "reload":
		return command{run: runReload, wait: reloadWait}, true
	case "upgrade":
		return command{run: runUpgrade, wait: reloadWait}, true
	case "scale":
		return command{run: runScale, wait: reloadWait}, true
	case "cache":
		return command{run: runCache, wait: defaultWait}, true
	case "metrics":
		return command{run: runMetrics, wait: defaultWait}, true
	case "top":
		return command{run: runTop, flags: topFlags, wait: defaultWait, live: true}, true
	case "pprof":
		return command{run: runPprof, flags: pprofFlags, wait: defaultWait}, true
	case "token":
		return command{run: runToken, flags: tokenFlags, local: true}, true
	}
	return command{}, false
}

// send sends e with in and decodes the answer; with --json it also prints
// the answer as it came. It reports false, after printing why, when the
// daemon could not be reached, answered with a status e does not answer
// with, or sent an answer that does not decode.
func send[In, Out any](ctx context.Context, inv *invocation, e operator.Endpoint[In, Out], in In) (Out, bool) {
	var out Out
	a, err := inv.client.Do(ctx, e.Method, e.Path, operator.Body(in))
	if err != nil {
		inv.fail(err)
		return out, false
	}
	if inv.opts.json {
		printPretty(inv.stdout, a.Body)
	}
	if !e.Accepts(a.Code) {
		fmt.Fprintf(inv.stderr, "amexctl: %s refused: %s\n", e, a.Message())
		return out, false
	}
	if err := json.Unmarshal(a.Body, &out); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: %s: decode answer: %v\n", e, err)
		return out, false
	}
	return out, true
}

// printPretty writes a JSON body indented, and any other body as it is.
func printPretty(w io.Writer, body []byte) {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(body), "", "  "); err != nil {
		_, _ = w.Write(body)
		return
	}
	buf.WriteByte('\n')
	_, _ = w.Write(buf.Bytes())
}

// show sends e and prints its answer with format, or as JSON with --json.
func show[Out any](ctx context.Context, inv *invocation, e operator.Endpoint[operator.None, Out], format func(Out) string) int {
	return showWith(ctx, inv, e, operator.None{}, format)
}

// showWith is show for a request with a body.
func showWith[In, Out any](ctx context.Context, inv *invocation, e operator.Endpoint[In, Out], in In, format func(Out) string) int {
	out, ok := send(ctx, inv, e, in)
	switch {
	case !ok:
		return exitFailed
	case inv.opts.json:
		return exitOK
	}
	return writeOut(inv, format(out))
}

func noArgs(inv *invocation, name string, args []string) bool {
	if len(args) > 0 {
		inv.usageError("%s takes no arguments, got %q", name, strings.Join(args, " "))
		return false
	}
	return true
}

func runStatus(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "status", args) {
		return exitUsage
	}
	return show(ctx, inv, operator.GetStatus, formatStatus)
}

func runWorkers(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "workers", args) {
		return exitUsage
	}
	return show(ctx, inv, operator.GetWorkers, func(ws operator.Workers) string { return formatWorkers(ws.Workers, time.Now()) })
}

func runBreakers(ctx context.Context, inv *invocation, args []string) int {
	if len(args) > 0 && args[0] == "reset" {
		return runBreakersReset(ctx, inv, args[1:])
	}
	if !noArgs(inv, "breakers", args) {
		return exitUsage
	}
	return show(ctx, inv, operator.GetBreakers, formatBreakers)
}

func runBreakersReset(ctx context.Context, inv *invocation, args []string) int {
	if len(args) > 1 {
		return inv.usageError("breakers reset takes at most one breaker name, got %q", strings.Join(args, " "))
	}
	var in operator.BreakerReset
	if len(args) == 1 {
		in.Name = args[0]
	}
	r, ok := send(ctx, inv, operator.PostBreakersReset, in)
	switch {
	case !ok:
		return exitFailed
	case inv.opts.json:
		return exitOK
	}
	return writeOut(inv, formatReset(r.Reset, r.Workers))
}

func runHealth(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "health", args) {
		return exitUsage
	}
	h, ok := send(ctx, inv, operator.GetHealth, operator.None{})
	if !ok {
		return exitFailed
	}
	code := exitOK
	if !h.Healthy {
		code = exitFailed
	}
	if inv.opts.json {
		return code
	}
	if writeOut(inv, formatHealth(h)) != exitOK {
		return exitFailed
	}
	return code
}

func runReload(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "reload", args) {
		return exitUsage
	}
	return show(ctx, inv, operator.PostReload, func(r operator.Reloaded) string {
		return fmt.Sprintf("reloaded: generation %d in %v\n", r.Generation, time.Duration(r.DurationMs)*time.Millisecond)
	})
}

// runUpgrade asks for the upgrade and then waits until the supervisor runs
// the new binary too: the same process reports the answer's count of
// re-executions and version, so that exit 0 means every process does. A
// failed re-execution exits 1 with its reason.
func runUpgrade(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "upgrade", args) {
		return exitUsage
	}
	up, ok := send(ctx, inv, operator.PostUpgrade, operator.None{})
	if !ok {
		return exitFailed
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := operator.Call(ctx, inv.client, operator.GetStatus, operator.None{})
		switch {
		case err != nil || st.PID != up.PID:
		case st.Execs < up.Execs && st.ExecError != "":
			fmt.Fprintf(inv.stderr, "amexctl: upgrade: the workers run %s, but the supervisor could not re-execute: %s\n", up.Version, st.ExecError)
			return exitFailed
		case st.Execs >= up.Execs && st.Version == up.Version && st.Healthy:
			return upgraded(inv, up)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(inv.stderr, "amexctl: upgrade: the workers run %s, but the supervisor did not re-execute within %v (last status: %v, version %q)\n",
				up.Version, inv.wait, err, st.Version)
			return exitFailed
		case <-tick.C:
		}
	}
}

// upgraded reports an upgrade the new image has taken over.
func upgraded(inv *invocation, up operator.Upgraded) int {
	if inv.opts.json {
		return exitOK
	}
	return writeOut(inv, fmt.Sprintf("upgraded: %s → %s, pid %d, generation %d, workers replaced in %v\n",
		up.FromVersion, up.Version, up.PID, up.Generation, time.Duration(up.DurationMs)*time.Millisecond))
}

func runScale(ctx context.Context, inv *invocation, args []string) int {
	n, err := strconv.Atoi(strings.Join(args, " "))
	if len(args) != 1 || err != nil || n < 1 {
		return inv.usageError("usage: amexctl scale N (a number of workers, at least 1)")
	}
	return showWith(ctx, inv, operator.PostScale, operator.Scale{Workers: n}, func(r operator.Scaled) string {
		return fmt.Sprintf("scaled to %d %s in %v\n", r.Workers, plural(r.Workers, "worker"), time.Duration(r.DurationMs)*time.Millisecond)
	})
}

func runCache(ctx context.Context, inv *invocation, args []string) int {
	if len(args) != 1 || args[0] != "purge" {
		return inv.usageError("usage: amexctl cache purge")
	}
	return show(ctx, inv, operator.PostCachePurge, func(r operator.Purged) string {
		if r.Shared {
			return fmt.Sprintf("purged the shared tier in Redis and the cache of %d %s\n", r.Workers, plural(r.Workers, "worker"))
		}
		return fmt.Sprintf("purged the cache of %d %s\n", r.Workers, plural(r.Workers, "worker"))
	})
}

// runMetrics prints the Prometheus text as it comes; --json changes nothing
// because the answer is not JSON.
func runMetrics(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "metrics", args) {
		return exitUsage
	}
	text, err := inv.client.Metrics(ctx)
	if err != nil {
		return inv.fail(err)
	}
	return writeOut(inv, string(text))
}

func writeOut(inv *invocation, s string) int {
	if _, err := io.WriteString(inv.stdout, s); err != nil {
		fmt.Fprintln(inv.stderr, "amexctl: write output:", err)
		return exitFailed
	}
	return exitOK
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
