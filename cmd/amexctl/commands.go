package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/supervisor"
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
	case "cache":
		return command{run: runCache, wait: defaultWait}, true
	case "metrics":
		return command{run: runMetrics, wait: defaultWait}, true
	case "token":
		return command{run: runToken, flags: tokenFlags, local: true}, true
	}
	return command{}, false
}

// call sends one request and, with --json, prints the answer. It reports
// false, after printing why, when the daemon could not be reached or
// answered with a status outside accept (any 2xx when accept is empty).
func (inv *invocation) call(ctx context.Context, method, path string, body any, accept ...int) (response, bool) {
	resp, err := inv.client.do(ctx, method, path, body)
	if err != nil {
		inv.fail(err)
		return response{}, false
	}
	if inv.opts.json {
		printPretty(inv.stdout, resp.body)
	}
	ok := slices.Contains(accept, resp.code) || (len(accept) == 0 && resp.code/100 == 2)
	if !ok {
		fmt.Fprintf(inv.stderr, "amexctl: %s %s refused: %s\n", method, path, errorMessage(resp.code, resp.body))
	}
	return resp, ok
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

// get fetches path, decodes it into out and reports whether a table should
// be printed; code is the exit status when it should not.
func get[T any](ctx context.Context, inv *invocation, path string, out *T) (render bool, code int) {
	resp, ok := inv.call(ctx, http.MethodGet, path, nil)
	if !ok {
		return false, exitFailed
	}
	if inv.opts.json {
		return false, exitOK
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: GET %s: decode answer: %v\n", path, err)
		return false, exitFailed
	}
	return true, exitOK
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
	var st supervisor.Status
	if render, code := get(ctx, inv, "/status", &st); !render {
		return code
	}
	return writeOut(inv, formatStatus(st))
}

func runWorkers(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "workers", args) {
		return exitUsage
	}
	var ws struct {
		Workers []supervisor.WorkerInfo `json:"workers"`
	}
	if render, code := get(ctx, inv, "/workers", &ws); !render {
		return code
	}
	return writeOut(inv, formatWorkers(ws.Workers, time.Now()))
}

func runBreakers(ctx context.Context, inv *invocation, args []string) int {
	if len(args) > 0 && args[0] == "reset" {
		return runBreakersReset(ctx, inv, args[1:])
	}
	if !noArgs(inv, "breakers", args) {
		return exitUsage
	}
	var cs control.ClusterStatus
	if render, code := get(ctx, inv, "/breakers", &cs); !render {
		return code
	}
	return writeOut(inv, formatBreakers(cs))
}

func runBreakersReset(ctx context.Context, inv *invocation, args []string) int {
	if len(args) > 1 {
		return inv.usageError("breakers reset takes at most one breaker name, got %q", strings.Join(args, " "))
	}
	var body map[string]string
	if len(args) == 1 {
		body = map[string]string{"name": args[0]}
	}
	resp, ok := inv.call(ctx, http.MethodPost, "/breakers/reset", body)
	if !ok {
		return exitFailed
	}
	if inv.opts.json {
		return exitOK
	}
	var r struct {
		Reset   []string `json:"reset"`
		Workers int      `json:"workers"`
	}
	if err := json.Unmarshal(resp.body, &r); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: breakers reset: decode answer: %v\n", err)
		return exitFailed
	}
	return writeOut(inv, formatReset(r.Reset, r.Workers))
}

func runHealth(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "health", args) {
		return exitUsage
	}
	resp, ok := inv.call(ctx, http.MethodGet, "/health", nil, http.StatusOK, http.StatusServiceUnavailable)
	if !ok {
		return exitFailed
	}
	code := exitOK
	if resp.code != http.StatusOK {
		code = exitFailed
	}
	if inv.opts.json {
		return code
	}
	var h supervisor.Health
	if err := json.Unmarshal(resp.body, &h); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: health: decode answer: %v\n", err)
		return exitFailed
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
	resp, ok := inv.call(ctx, http.MethodPost, "/reload", nil)
	if !ok {
		return exitFailed
	}
	if inv.opts.json {
		return exitOK
	}
	var r struct {
		Generation int   `json:"generation"`
		DurationMs int64 `json:"duration_ms"`
	}
	if err := json.Unmarshal(resp.body, &r); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: reload: decode answer: %v\n", err)
		return exitFailed
	}
	return writeOut(inv, fmt.Sprintf("reloaded: generation %d in %v\n", r.Generation, time.Duration(r.DurationMs)*time.Millisecond))
}

func runCache(ctx context.Context, inv *invocation, args []string) int {
	if len(args) != 1 || args[0] != "purge" {
		return inv.usageError("usage: amexctl cache purge")
	}
	resp, ok := inv.call(ctx, http.MethodPost, "/cache/purge", nil)
	if !ok {
		return exitFailed
	}
	if inv.opts.json {
		return exitOK
	}
	var r struct {
		Workers int `json:"workers"`
	}
	if err := json.Unmarshal(resp.body, &r); err != nil {
		fmt.Fprintf(inv.stderr, "amexctl: cache purge: decode answer: %v\n", err)
		return exitFailed
	}
	return writeOut(inv, fmt.Sprintf("purged the cache of %d %s\n", r.Workers, plural(r.Workers, "worker")))
}

// runMetrics prints the Prometheus text as it comes; --json changes nothing
// because the answer is not JSON.
func runMetrics(ctx context.Context, inv *invocation, args []string) int {
	if !noArgs(inv, "metrics", args) {
		return exitUsage
	}
	resp, ok := inv.call(ctx, http.MethodGet, "/metrics", nil)
	if !ok {
		return exitFailed
	}
	if !inv.opts.json {
		return writeOut(inv, string(resp.body))
	}
	return exitOK
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
