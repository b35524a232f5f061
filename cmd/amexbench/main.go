// Command amexbench benchmarks amexd on this machine with vegeta: it attacks
// a loopback target (or an amexd it spawns) with one of the scenarios
// cached, fanout, writes, mixed or baseline, shows a progress line while it
// runs, and prints a table or JSON of throughput, latency quantiles,
// answers by status and errors by kind.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/amexd/amexd/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "amexbench:", err)
		os.Exit(1)
	}
}

// options are the command line's flags.
type options struct {
	target      string
	rate        int
	duration    time.Duration
	connections int
	keepAlive   bool
	workers     int
	json        bool
	spawn       bool
	scale       bool
	amexd       string
}

func parseFlags(args []string, stderr io.Writer) (options, string, error) {
	var o options
	fs := flag.NewFlagSet("amexbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: amexbench [flags] SCENARIO\n\n"+
			"Scenarios:\n"+
			"  cached    hot GET /events and /users/1 (warmed first), then the same attack on\n"+
			"            a bare net/http server serving the same bytes: amexd/baseline ratio\n"+
			"  fanout    cold GET /events/user/1 with K = 1, 10, 50, 100 preloaded events\n"+
			"            (one fresh amexd per K with --spawn)\n"+
			"  writes    POST /events through the simulator's addEvent failure cycle\n"+
			"  mixed     90% cached reads, 8% user events, 2% writes\n"+
			"  baseline  the bare net/http server alone\n"+
			"  chaos     fault injection (not in this tool yet)\n\n"+
			"Flags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.target, "target", "http://127.0.0.1:3000", "base URL of amexd; loopback hosts only")
	fs.IntVar(&o.rate, "rate", 0, "requests per second; 0 sends as fast as the connections allow")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each attack")
	fs.IntVar(&o.connections, "connections", 64, "concurrent requests and connections")
	fs.BoolVar(&o.keepAlive, "keepalive", true, "reuse connections between requests")
	fs.IntVar(&o.workers, "workers", 0, "amexd workers with --spawn (0: amexd's default, one per CPU)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.spawn, "spawn", false, "build and start amexd for the run (embedded simulator), stop it afterwards")
	fs.BoolVar(&o.scale, "scale", false, "run the scenario with a spawned amexd for workers = 1 … 2×CPUs")
	fs.StringVar(&o.amexd, "amexd", "", "amexd binary for --spawn (default: go build ./cmd/amexd of this module)")
	// Flags may follow the scenario ("amexbench cached --duration 5s"), which
	// the flag package alone would take for more arguments.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return o, "", fmt.Errorf("want exactly one scenario, got %d arguments", len(positional))
	}
	switch {
	case o.duration <= 0:
		return o, "", fmt.Errorf("-duration %s: must be positive", o.duration)
	case o.connections <= 0:
		return o, "", fmt.Errorf("-connections %d: must be positive", o.connections)
	case o.rate < 0:
		return o, "", fmt.Errorf("-rate %d: must not be negative", o.rate)
	case o.workers < 0:
		return o, "", fmt.Errorf("-workers %d: must not be negative", o.workers)
	}
	u, err := bench.CheckTarget(o.target)
	if err != nil {
		return o, "", err
	}
	o.target = u.String()
	return o, positional[0], nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, scenario, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	inPlace := false
	if f, ok := stderr.(*os.File); ok {
		inPlace = term.IsTerminal(int(f.Fd()))
	}
	tmp, err := os.MkdirTemp("", "amexbench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	r := &runner{opts: o, log: stderr, progress: bench.NewProgress(stderr, inPlace), tmp: tmp}

	res, runErr := r.run(ctx, scenario)
	if ctx.Err() != nil && errors.Is(runErr, ctx.Err()) {
		runErr = fmt.Errorf("interrupted, results are partial: %w", runErr)
	}
	if len(res.Reports) == 0 && len(res.Scale) == 0 {
		return runErr
	}
	if err := printResult(stdout, res, o.json); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

func printResult(w io.Writer, res result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("write json: %w", err)
		}
		return nil
	}
	if err := bench.WriteTable(w, res.Reports); err != nil {
		return err
	}
	if len(res.Scale) > 0 {
		fmt.Fprintln(w)
		return writeScale(w, res.Scale)
	}
	return nil
}
