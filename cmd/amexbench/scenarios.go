package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/amexd/amexd/internal/testkit/bench"
)

// fanoutSizes are the preloaded event counts the fanout scenario measures.
func fanoutSizes() []int { return []int{1, 10, 50, 100} }

// shortAttack caps the per-K attacks of fanout, which runs four of them.
const shortAttack = 3 * time.Second

// result is everything a run prints.
type result struct {
	Reports []bench.Report `json:"reports"`
	Scale   []scalePoint   `json:"scale,omitempty"`
}

// scalePoint is one row of the --scale table.
type scalePoint struct {
	Workers    int           `json:"workers"`
	Throughput float64       `json:"throughput"`
	P99        time.Duration `json:"p99_ns"`
}

// runner carries a run's settings to the scenarios.
type runner struct {
	opts     options
	log      io.Writer
	progress *bench.Progress
	// tmp holds the amexd binary, logs and sockets of spawned daemons.
	tmp string
	bin string
}

func (r *runner) run(ctx context.Context, scenario string) (result, error) {
	var fn func(ctx context.Context, base string) ([]bench.Report, error)
	switch scenario {
	case "cached":
		fn = r.cached
	case "writes":
		fn = r.writes
	case "mixed":
		fn = r.mixed
	case "baseline":
		if r.opts.scale {
			return result{}, errors.New("baseline: --scale needs an amexd scenario (cached, writes, mixed)")
		}
		reps, err := r.withTarget(ctx, 0, nil, r.baselineOnly)
		return result{Reports: reps}, err
	case "fanout":
		if r.opts.scale {
			return result{}, errors.New("fanout: --scale is not supported; fanout already spawns one amexd per K")
		}
		reps, err := r.fanout(ctx)
		return result{Reports: reps}, err
	case "cluster":
		reps, err := r.cluster(ctx)
		return result{Reports: reps}, err
	case "chaos":
		return result{}, errors.New("chaos: not implemented in this tool yet; fault injection lives in the fault suite")
	default:
		return result{}, fmt.Errorf("unknown scenario %q (want cached, fanout, writes, mixed, baseline, chaos or cluster)", scenario)
	}
	if r.opts.scale {
		return r.scale(ctx, scenario, fn)
	}
	reps, err := r.withTarget(ctx, r.opts.workers, nil, fn)
	return result{Reports: reps}, err
}

// withTarget runs fn against a freshly spawned amexd (with workers and the
// extra flags) when --spawn is set, otherwise against --target.
func (r *runner) withTarget(ctx context.Context, workers int, extra []string,
	fn func(ctx context.Context, base string) ([]bench.Report, error)) (reps []bench.Report, err error) {
	if !r.opts.spawn && !r.opts.scale {
		return fn(ctx, r.opts.target)
	}
	if r.bin == "" {
		if r.bin = r.opts.amexd; r.bin == "" {
			fmt.Fprintln(r.log, "building amexd …")
			if r.bin, err = bench.BuildAmexd(ctx, r.tmp); err != nil {
				return nil, err
			}
		}
	}
	d, err := bench.Spawn(ctx, bench.SpawnOptions{Binary: r.bin, Dir: r.tmp, Workers: workers, Args: extra})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, d.Stop()) }()
	fmt.Fprintf(r.log, "amexd started at %s (workers %s) %s\n", d.URL, workerCount(workers), strings.Join(extra, " "))
	return fn(ctx, d.URL)
}

func workerCount(n int) string {
	if n == 0 {
		return fmt.Sprintf("default, %d CPUs", runtime.NumCPU())
	}
	return fmt.Sprint(n)
}

// attack runs one attack with the command line's settings.
func (r *runner) attack(ctx context.Context, name string, tr vegeta.Targeter, inspect func(*vegeta.Result)) (bench.Report, error) {
	return r.attackFor(ctx, name, tr, r.opts.duration, inspect)
}

func (r *runner) attackFor(ctx context.Context, name string, tr vegeta.Targeter, d time.Duration, inspect func(*vegeta.Result)) (bench.Report, error) {
	a := bench.Attack{
		Name:        name,
		Targeter:    tr,
		Rate:        r.opts.rate,
		Duration:    d,
		Connections: r.opts.connections,
		KeepAlive:   r.opts.keepAlive,
		Inspect:     inspect,
		Progress:    r.progress,
	}
	if r.opts.html != "" {
		a.Timeline = bench.NewTimeline(bench.StepFor(d))
	}
	return a.Run(ctx)
}

func get(base string, paths ...string) vegeta.Targeter {
	tgts := make([]vegeta.Target, len(paths))
	for i, p := range paths {
		tgts[i] = vegeta.Target{Method: http.MethodGet, URL: base + p}
	}
	return vegeta.NewStaticTargeter(tgts...)
}

// warm GETs each path until it answers 200, so the attack that follows
// measures the cache and not the upstream's dropped connections.
func warm(ctx context.Context, base string, paths ...string) error {
	client := &http.Client{Timeout: 30 * time.Second}
	for _, p := range paths {
		var err error
		for range 10 {
			if _, _, err = bench.Fetch(ctx, client, base+p); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("warm: %w", err)
		}
	}
	return nil
}

func (r *runner) cached(ctx context.Context, base string) ([]bench.Report, error) {
	if err := warm(ctx, base, "/events", "/users/1"); err != nil {
		return nil, err
	}
	rep, err := r.attack(ctx, "cached", get(base, "/events", "/users/1"), nil)
	if err != nil || r.opts.scale {
		return []bench.Report{rep}, err
	}
	ref, err := r.baseline(ctx, base)
	if ref.Throughput > 0 {
		rep.BaselineRatio = rep.Throughput / ref.Throughput
		rep.Notes = append(rep.Notes, fmt.Sprintf("amexd/baseline = %.2f (throughput %.0f/s against %.0f/s)",
			rep.BaselineRatio, rep.Throughput, ref.Throughput))
	}
	return []bench.Report{rep, ref}, err
}

// baseline attacks a bare net/http server serving the bytes of the
// target's GET /events, or the simulator's events list if the target does
// not answer.
func (r *runner) baseline(ctx context.Context, base string) (bench.Report, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	var note string
	body, hdr, err := bench.Fetch(ctx, client, base+"/events")
	if err != nil {
		if body, hdr, err = bench.SimulatedEvents(); err != nil {
			return bench.Report{}, err
		}
		note = fmt.Sprintf("target's /events unavailable; serving the simulator's %d-byte events list", len(body))
	} else {
		note = fmt.Sprintf("serving the %d bytes of the target's GET /events", len(body))
	}
	srv, err := bench.StartBaseline(body, hdr)
	if err != nil {
		return bench.Report{}, err
	}
	rep, err := r.attack(ctx, "baseline", get(srv.URL, "/events"), nil)
	rep.Notes = append(rep.Notes, note)
	return rep, errors.Join(err, srv.Close())
}

func (r *runner) baselineOnly(ctx context.Context, base string) ([]bench.Report, error) {
	rep, err := r.baseline(ctx, base)
	return []bench.Report{rep}, err
}

// writeTargeter POSTs a new event for user 1 with a unique name each time.
func writeTargeter(base string) vegeta.Targeter {
	var n atomic.Uint64
	hdr := http.Header{"Content-Type": {"application/json"}}
	return func(t *vegeta.Target) error {
		t.Method = http.MethodPost
		t.URL = base + "/events"
		t.Header = hdr
		t.Body = fmt.Appendf(nil, `{"name":"amexbench %d","userId":1}`, n.Add(1))
		return nil
	}
}

// retryAfterCheck counts 503 answers and those among them without a
// Retry-After header.
type retryAfterCheck struct{ unavailable, missing uint64 }

func (c *retryAfterCheck) inspect(res *vegeta.Result) {
	if res.Code != http.StatusServiceUnavailable {
		return
	}
	c.unavailable++
	if res.Headers.Get("Retry-After") == "" {
		c.missing++
	}
}

func (c *retryAfterCheck) note(rep *bench.Report) error {
	rep.Notes = append(rep.Notes, fmt.Sprintf("201: %d, 503: %d, 503 without Retry-After: %d",
		rep.Status[http.StatusCreated], c.unavailable, c.missing))
	if c.missing > 0 {
		return fmt.Errorf("%s: %d answers 503 without Retry-After", rep.Name, c.missing)
	}
	return nil
}

func (r *runner) writes(ctx context.Context, base string) ([]bench.Report, error) {
	var check retryAfterCheck
	rep, err := r.attack(ctx, "writes", writeTargeter(base), check.inspect)
	return []bench.Report{rep}, errors.Join(err, check.note(&rep))
}

// mixedTargeter sends, out of every 50 requests, 45 cached reads (90%),
// 4 user-event lists (8%) and 1 write (2%), interleaved.
func mixedTargeter(base string) vegeta.Targeter {
	var n atomic.Uint64
	reads := get(base, "/events", "/users/1")
	userEvents := get(base, "/events/user/1")
	writes := writeTargeter(base)
	return func(t *vegeta.Target) error {
		switch i := n.Add(1) % 50; {
		case i == 0:
			return writes(t)
		case i%12 == 6:
			return userEvents(t)
		default:
			return reads(t)
		}
	}
}

func (r *runner) mixed(ctx context.Context, base string) ([]bench.Report, error) {
	if err := warm(ctx, base, "/events", "/users/1", "/events/user/1"); err != nil {
		return nil, err
	}
	var check retryAfterCheck
	rep, err := r.attack(ctx, "mixed", mixedTargeter(base), check.inspect)
	return []bench.Report{rep}, errors.Join(err, check.note(&rep))
}

// fanout measures GET /events/user/1 for each K: the first (cold) request,
// a repeat, and a short attack. With --spawn each K gets a fresh amexd whose
// simulator preloads K events for user 1; without it the target's data is
// used as it is, once.
func (r *runner) fanout(ctx context.Context) ([]bench.Report, error) {
	if !r.opts.spawn {
		rep, err := r.fanoutOnce(ctx, r.opts.target, "fanout")
		rep.Notes = append(rep.Notes, "without --spawn the target's own data is used; its events may already be cached")
		return []bench.Report{rep}, err
	}
	var reps []bench.Report
	for _, k := range fanoutSizes() {
		extra := []string{"-simulator.preload_user", "1", "-simulator.preload_events", fmt.Sprint(k)}
		got, err := r.withTarget(ctx, r.opts.workers, extra, func(ctx context.Context, base string) ([]bench.Report, error) {
			rep, err := r.fanoutOnce(ctx, base, fmt.Sprintf("fanout K=%d", k))
			return []bench.Report{rep}, err
		})
		reps = append(reps, got...)
		if err != nil {
			return reps, err
		}
	}
	return reps, nil
}

func (r *runner) fanoutOnce(ctx context.Context, base, name string) (bench.Report, error) {
	client := &http.Client{Timeout: time.Minute}
	url := base + "/events/user/1"
	first, n, err := timedGet(ctx, client, url)
	if err != nil {
		return bench.Report{Name: name}, fmt.Errorf("%s: first request: %w", name, err)
	}
	again, _, err := timedGet(ctx, client, url)
	if err != nil {
		return bench.Report{Name: name}, fmt.Errorf("%s: repeated request: %w", name, err)
	}
	rep, err := r.attackFor(ctx, name, get(base, "/events/user/1"), min(r.opts.duration, shortAttack), nil)
	rep.Notes = append(rep.Notes, fmt.Sprintf("first request %s (%s), repeated %s",
		bench.FormatDuration(first), n, bench.FormatDuration(again)))
	return rep, err
}

// timedGet GETs url and returns how long the whole answer took and how
// many items its JSON list held ("? items" when it is not a list).
func timedGet(ctx context.Context, client *http.Client, url string) (time.Duration, string, error) {
	start := time.Now()
	body, _, err := bench.Fetch(ctx, client, url)
	took := time.Since(start)
	if err != nil {
		return took, "", err
	}
	var items []json.RawMessage
	if json.Unmarshal(body, &items) != nil {
		return took, "? items", nil
	}
	return took, fmt.Sprintf("%d items", len(items)), nil
}

// scaleWorkers lists the worker counts of --scale: every count up to
// 2×CPUs on small machines; powers of two, the CPU count and 2×CPUs on
// large ones, where every count would take too long.
func scaleWorkers(cpus int) []int {
	top := 2 * cpus
	var ws []int
	if top <= 8 {
		for w := 1; w <= top; w++ {
			ws = append(ws, w)
		}
		return ws
	}
	for w := 1; w < top; w *= 2 {
		ws = append(ws, w)
	}
	ws = append(ws, cpus, top)
	slices.Sort(ws)
	return slices.Compact(ws)
}

func (r *runner) scale(ctx context.Context, scenario string,
	fn func(ctx context.Context, base string) ([]bench.Report, error)) (result, error) {
	var res result
	for _, w := range scaleWorkers(runtime.NumCPU()) {
		reps, err := r.withTarget(ctx, w, nil, fn)
		for _, rep := range reps {
			rep.Name = fmt.Sprintf("%s workers=%d", rep.Name, w)
			res.Reports = append(res.Reports, rep)
			res.Scale = append(res.Scale, scalePoint{Workers: w, Throughput: rep.Throughput, P99: rep.Latency.P99})
		}
		if err != nil {
			return res, fmt.Errorf("%s with %d workers: %w", scenario, w, err)
		}
	}
	return res, nil
}

func writeScale(w io.Writer, points []scalePoint) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workers\tthroughput/s\tp99")
	for _, p := range points {
		fmt.Fprintf(tw, "%d\t%.1f\t%s\n", p.Workers, p.Throughput, bench.FormatDuration(p.P99))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write scale table: %w", err)
	}
	return nil
}
