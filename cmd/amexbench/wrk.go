package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/bench"
)

// The wrk scenario's fixed shape: the measurement, so that runs on
// different days compare.
const (
	wrkPath    = "/users/1"
	wrkThreads = 2
	wrkWorkers = 2
)

// wrkServer is one server the wrk scenario measures.
type wrkServer struct {
	name string
	url  string
	runs []bench.WrkResult
}

// wrkComparison sets one server's runs against another's, round by round.
// A zero minRatio or maxP99 is no target.
type wrkComparison struct {
	subject, reference *wrkServer
	minRatio, maxP99   float64
}

// wrkScenario measures, with wrk, amexd (2 workers, access log off and on)
// against what a user would run instead, nginx proxy_cache (2 workers,
// access log on) in front of the same upstream, and against two net/http
// servers (GOMAXPROCS=2, each in its own process) serving the same bytes:
// one with only Content-Type and Content-Length, one replaying every
// header amexd sends. Rounds alternate their order; it prints each run and
// the median ratios against the targets.
func (r *runner) wrkScenario(ctx context.Context, stdout io.Writer) (err error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk: the wrk binary is not on PATH (Debian: apt-get install wrk)")
	}
	if r.bin = r.opts.amexd; r.bin == "" {
		fmt.Fprintln(r.log, "building amexd …")
		if r.bin, err = bench.BuildAmexd(ctx, r.tmp); err != nil {
			return err
		}
	}
	simCfg := simulator.DefaultConfig()
	simCfg.ListErrorRate = 0
	up, err := bench.StartUpstream(simCfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, up.Close()) }()
	spawn := func(args ...string) (*bench.Daemon, error) {
		args = append([]string{"-upstream.url", up.URL()}, args...)
		return bench.Spawn(ctx, bench.SpawnOptions{Binary: r.bin, Dir: r.tmp, Workers: wrkWorkers, Args: args})
	}
	off, err := spawn("-log.access=false")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, off.Stop()) }()
	on, err := spawn("-log.access=true", "-log.format", "json", "-log.access_file", filepath.Join(r.tmp, "access.log"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, on.Stop()) }()
	ngx, err := bench.StartNginx(ctx, r.tmp, up.URL(), wrkWorkers)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ngx.Stop()) }()
	for _, base := range []string{off.URL, on.URL, ngx.URL} {
		if err := warm(ctx, base, wrkPath); err != nil {
			return err
		}
	}
	minimal, stopMinimal, err := startBaselineProcess(ctx, "minimal", off.URL+wrkPath)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopMinimal()) }()
	replay, stopReplay, err := startBaselineProcess(ctx, "replay", off.URL+wrkPath)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopReplay()) }()

	var (
		nginxS   = &wrkServer{name: "nginx proxy_cache, access log on", url: ngx.URL + wrkPath}
		minimalS = &wrkServer{name: "net/http minimal (Content-Type, Content-Length)", url: minimal + wrkPath}
		replayS  = &wrkServer{name: "net/http replaying amexd's headers", url: replay + wrkPath}
		offS     = &wrkServer{name: "amexd, access log off", url: off.URL + wrkPath}
		onS      = &wrkServer{name: "amexd, access log on (JSON to a file)", url: on.URL + wrkPath}
	)
	servers := []*wrkServer{nginxS, minimalS, replayS, offS, onS}
	rounds := r.opts.rounds
	for round := range rounds {
		order := slices.Clone(servers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			fmt.Fprintf(r.log, "round %d/%d: wrk on %s …\n", round+1, rounds, s.name)
			res, err := bench.Wrk(ctx, s.url, wrkThreads, r.opts.connections, r.opts.duration)
			if err != nil {
				return err
			}
			s.runs = append(s.runs, res)
		}
	}
	comparisons := []wrkComparison{
		{subject: onS, reference: nginxS, minRatio: 0.90, maxP99: 1.30},
		{subject: offS, reference: nginxS},
		{subject: onS, reference: minimalS},
		{subject: offS, reference: minimalS},
		{subject: offS, reference: replayS, minRatio: 0.80, maxP99: 1.50},
		{subject: onS, reference: replayS, minRatio: 0.70, maxP99: 1.50},
	}
	return writeWrk(stdout, r.opts, servers, comparisons)
}

// startBaselineProcess runs this binary's baseline-server mode (minimal or
// replay) with GOMAXPROCS=2, serving what from answers, and returns its
// base URL and a function that stops it.
func startBaselineProcess(ctx context.Context, mode, from string) (string, func() error, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("baseline process: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, "baseline-server", mode, from)
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", wrkWorkers))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, fmt.Errorf("baseline process: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, fmt.Errorf("baseline process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("baseline process: %w", err)
	}
	stop := func() error {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("baseline process: %w", err)
		}
		return nil
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return "", nil, errors.Join(fmt.Errorf("baseline process: no address: %w", err), stop())
	}
	return strings.TrimSpace(line), stop, nil
}

// serveBaseline is the baseline-server mode: it serves the body of from's
// answer on a free loopback port, with only Content-Type and
// Content-Length (mode minimal) or with every header from's answer carried
// (mode replay), prints the base URL on stdout and serves until stdin
// closes.
func serveBaseline(mode, from string) error {
	body, hdr, err := bench.Fetch(context.Background(), &http.Client{Timeout: 10 * time.Second}, from)
	if err != nil {
		return err
	}
	switch mode {
	case "minimal":
		hdr = bench.MinimalHeader(hdr, body)
	case "replay":
	default:
		return fmt.Errorf("mode %q: want minimal or replay", mode)
	}
	srv, err := bench.StartBaseline(body, hdr)
	if err != nil {
		return err
	}
	fmt.Println(srv.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else if n > 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return 0
}

// wrkRatios are a comparison's figures: per round, the subject's req/s
// and p99 over the reference's in the same round, and their medians.
type wrkRatios struct {
	rate, p99           float64
	rateRound, p99Round []float64
}

// ratios sets subject's runs against reference's, round by round; rounds
// one of them lacks are left out.
func ratios(subject, reference []bench.WrkResult) wrkRatios {
	var r wrkRatios
	for i := range min(len(subject), len(reference)) {
		s, ref := subject[i], reference[i]
		if ref.RequestsPerSec <= 0 || ref.P99 <= 0 {
			continue
		}
		r.rateRound = append(r.rateRound, s.RequestsPerSec/ref.RequestsPerSec)
		r.p99Round = append(r.p99Round, float64(s.P99)/float64(ref.P99))
	}
	r.rate, r.p99 = median(r.rateRound), median(r.p99Round)
	return r
}

func writeWrk(w io.Writer, o options, servers []*wrkServer, comparisons []wrkComparison) error {
	fmt.Fprintf(w, "wrk -t%d -c%d -d%s --latency GET %s (a cached read), %d rounds, order reversed every other round\n",
		wrkThreads, o.connections, o.duration, wrkPath, o.rounds)
	fmt.Fprintf(w, "amexd and nginx: %d workers, same upstream; net/http servers: GOMAXPROCS=%d, each in its own process, same bytes\n\n",
		wrkWorkers, wrkWorkers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tserver\treq/s\tp50\tp99\terrors")
	for round := range o.rounds {
		for _, s := range servers {
			if round >= len(s.runs) {
				continue
			}
			res := s.runs[round]
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\n", round+1, s.name, res.RequestsPerSec,
				res.P50.Round(10*time.Microsecond), res.P99.Round(10*time.Microsecond), res.Errors)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tagainst\treq/s ratio\ttarget\tp99 ratio\ttarget\tper round (req/s, p99)")
	for _, c := range comparisons {
		r := ratios(c.subject.runs, c.reference.runs)
		rounds := make([]string, len(r.rateRound))
		for i := range rounds {
			rounds[i] = fmt.Sprintf("%.2f %.2f", r.rateRound[i], r.p99Round[i])
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%.2f\t%s\t%s\n", c.subject.name, c.reference.name,
			r.rate, target(">=", c.minRatio, r.rate >= c.minRatio),
			r.p99, target("<=", c.maxP99, r.p99 <= c.maxP99), strings.Join(rounds, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRatios are medians of the per-round ratios (each run against the reference's run of the same round).")
	fmt.Fprintln(w, "wrk shares the machine with the servers; on a busy machine the absolute figures move, the ratios less.")
	return nil
}

// target describes a target and whether it was met; "-" when there is none.
func target(op string, v float64, ok bool) string {
	if v == 0 {
		return "-"
	}
	if ok {
		return fmt.Sprintf("%s %.2f met", op, v)
	}
	return fmt.Sprintf("%s %.2f NOT met", op, v)
}
