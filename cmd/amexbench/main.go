// Command amexbench benchmarks amexd on this machine with vegeta: it attacks
// a loopback target (or an amexd it spawns) with one of the scenarios
// cached, fanout, writes, mixed or baseline, shows a progress line while it
// runs, and prints a table or JSON of throughput, latency quantiles,
// answers by status and errors by kind. Its chaos scenario injects faults
// into a spawned amexd under load and reports, per fault, the answers, the
// failures, the time to recover and a check of the events written. With
// --html FILE it also writes the run as one self-contained HTML page of
// charts over time.
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
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/amexd/amexd/internal/testkit/bench"
	"github.com/amexd/amexd/internal/testkit/benchpage"
)

func main() {
	// The wrk scenario's baseline, run by amexbench in a process of its own.
	if len(os.Args) == 4 && os.Args[1] == "baseline-server" {
		if err := serveBaseline(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "amexbench baseline-server:", err)
			os.Exit(1)
		}
		return
	}
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
	hosts       int
	shared      string
	html        string
	rounds      int
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
			"  wrk       wrk -t2 on GET /users/1: nginx proxy_cache (2 workers) in front of the\n"+
			"            same upstream, two net/http servers (GOMAXPROCS=2: minimal headers,\n"+
			"            amexd's headers) and two amexd it builds and starts (2 workers;\n"+
			"            access log off, on), in alternated rounds; prints req/s and p99\n"+
			"            ratios against the targets (default -duration 5s, -rounds 3: about\n"+
			"            2 minutes). Needs wrk and nginx.\n"+
			"  chaos     with --spawn: under a steady mixed load, each fault in turn (kill -9\n"+
			"            of workers, reloads, upstream down, upstream slow, addEvent failure\n"+
			"            cycle) for --duration against a fresh amexd and upstream; a report\n"+
			"            per fault with recovery times and a check of every event written\n"+
			"  cluster   (root) builds --hosts amexd hosts in their own network namespaces\n"+
			"            behind HAProxy with one Redis and one simulator, runs mixed through\n"+
			"            HAProxy, reports it with the upstream calls, and tears it all down\n\n"+
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
	fs.IntVar(&o.hosts, "hosts", 3, "hosts of the cluster scenario")
	fs.StringVar(&o.shared, "shared", "redis", "cache.shared of the cluster scenario's hosts: redis or none")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the wrk scenario")
	fs.StringVar(&o.amexd, "amexd", "", "amexd binary for --spawn (default: go build ./cmd/amexd of this module)")
	fs.StringVar(&o.html, "html", "", "also write the run as a self-contained HTML `file`: charts over time and the summary table")
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
	if positional[0] == "wrk" && !flagSet(fs, "duration") {
		o.duration = 5 * time.Second
	}
	switch {
	case o.rounds < 1:
		return o, "", fmt.Errorf("-rounds %d: must be at least 1", o.rounds)
	case o.duration <= 0:
		return o, "", fmt.Errorf("-duration %s: must be positive", o.duration)
	case o.connections <= 0:
		return o, "", fmt.Errorf("-connections %d: must be positive", o.connections)
	case o.rate < 0:
		return o, "", fmt.Errorf("-rate %d: must not be negative", o.rate)
	case o.hosts < 1:
		return o, "", fmt.Errorf("-hosts %d: must be at least 1", o.hosts)
	case o.shared != "redis" && o.shared != "none":
		return o, "", fmt.Errorf("-shared %q: want redis or none", o.shared)
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
	pg := benchpage.Page{Title: "amexbench " + scenario, Command: "amexbench " + strings.Join(args, " "), Generated: time.Now()}
	if scenario == "chaos" {
		reps, err := r.chaos(ctx, stdout)
		if o.html != "" && len(reps) > 0 {
			pg.Sections = benchpage.ChaosSections(reps)
			err = errors.Join(err, writePage(o.html, pg))
		}
		return err
	}
	if scenario == "wrk" {
		return r.wrkScenario(ctx, stdout)
	}

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
	if o.html != "" {
		for _, rep := range res.Reports {
			pg.Sections = append(pg.Sections, benchpage.Section{Title: rep.Name, Reports: []bench.Report{rep},
				Details: strings.Join(rep.Notes, "\n"), Timeline: rep.Timeline})
		}
		runErr = errors.Join(runErr, writePage(o.html, pg))
	}
	return runErr
}

// writePage writes pg to the file path, replacing it only once the page is
// complete.
func writePage(path string, pg benchpage.Page) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("html: %w", err)
	}
	err = benchpage.Write(f, pg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("html %s: %w", path, err)
	}
	return nil
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

// chaos runs every fault for --duration, each against its own freshly
// spawned amexd and upstream so that one fault's after-effects do not
// colour the next, prints the reports of the faults it ran and returns
// them.
func (r *runner) chaos(ctx context.Context, stdout io.Writer) ([]bench.FaultReport, error) {
	if !r.opts.spawn {
		return nil, errors.New("chaos against an existing --target is not implemented in this tool yet; " +
			"use --spawn: the faults need amexd's upstream and operator socket")
	}
	if r.bin = r.opts.amexd; r.bin == "" {
		fmt.Fprintln(r.log, "building amexd …")
		var err error
		if r.bin, err = bench.BuildAmexd(ctx, r.tmp); err != nil {
			return nil, err
		}
	}
	cfg := bench.ChaosConfig{Duration: r.opts.duration, Rate: r.opts.rate, Progress: r.progress}
	var reps []bench.FaultReport
	var runErr error
	for _, f := range bench.AllFaults() {
		rep, err := r.chaosFault(ctx, f, cfg)
		reps = append(reps, rep)
		if err != nil {
			runErr = errors.Join(runErr, err)
			if ctx.Err() != nil {
				runErr = fmt.Errorf("interrupted, results are partial: %w", runErr)
				break
			}
		}
	}
	if r.opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"faults": reps}); err != nil {
			return reps, errors.Join(runErr, fmt.Errorf("write json: %w", err))
		}
		return reps, errors.Join(runErr, chaosVerdict(reps))
	}
	if err := bench.WriteChaos(stdout, reps); err != nil {
		return reps, errors.Join(runErr, err)
	}
	return reps, errors.Join(runErr, chaosVerdict(reps))
}

// chaosVerdict fails the run when a fault left problems or lost data, so
// that scripts can rely on amexbench's exit status.
func chaosVerdict(reps []bench.FaultReport) error {
	var bad []string
	for _, rep := range reps {
		if len(rep.Problems) > 0 || !rep.Data.OK() {
			bad = append(bad, string(rep.Fault))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("chaos: problems or data loss under %s (see the report)", strings.Join(bad, ", "))
	}
	return nil
}

func (r *runner) chaosFault(ctx context.Context, f bench.Fault, cfg bench.ChaosConfig) (rep bench.FaultReport, err error) {
	up, err := bench.StartUpstream(bench.ChaosSimConfig())
	if err != nil {
		return bench.FaultReport{Fault: f}, err
	}
	defer func() { err = errors.Join(err, up.Close()) }()
	args := bench.ChaosDaemonArgs(up.URL())
	d, err := bench.Spawn(ctx, bench.SpawnOptions{Binary: r.bin, Dir: r.tmp, Workers: r.opts.workers, Args: args})
	if err != nil {
		return bench.FaultReport{Fault: f}, err
	}
	defer func() { err = errors.Join(err, d.Stop()) }()
	fmt.Fprintf(r.log, "fault %s: amexd at %s (workers %s), upstream at %s\n", f, d.URL, workerCount(r.opts.workers), up.URL())
	return bench.RunFault(ctx, bench.ChaosTarget{URL: d.URL, Socket: d.Socket}, up, f, cfg)
}

// flagSet reports whether the command line set the named flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
