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
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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

// wrkScenario measures, with wrk, amexd (2 workers, access log off and on)
// against a bare net/http server (GOMAXPROCS=2, in its own process)
// serving the same bytes and headers, in rounds whose order alternates,
// and prints each run and the ratios against the targets.
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
	spawn := func(args ...string) (*bench.Daemon, error) {
		return bench.Spawn(ctx, bench.SpawnOptions{Binary: r.bin, Dir: r.tmp, Workers: wrkWorkers, Args: args})
	}
	off, err := spawn("-log.access=false")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, off.Stop()) }()
	on, err := spawn("-log.access=true", "-log.format", "json")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, on.Stop()) }()
	if err := warm(ctx, off.URL, wrkPath); err != nil {
		return err
	}
	if err := warm(ctx, on.URL, wrkPath); err != nil {
		return err
	}
	base, stopBase, err := startBaselineProcess(ctx, off.URL+wrkPath)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopBase()) }()

	servers := []*wrkServer{
		{name: "bare net/http", url: base + wrkPath},
		{name: "amexd, log.access false", url: off.URL + wrkPath},
		{name: "amexd, access log on (JSON to a file)", url: on.URL + wrkPath},
	}
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
	return writeWrk(stdout, r.opts, servers)
}

// startBaselineProcess runs this binary's baseline-server mode with
// GOMAXPROCS=2, serving what from answers, and returns its base URL and a
// function that stops it.
func startBaselineProcess(ctx context.Context, from string) (string, func() error, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("baseline process: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, "baseline-server", from)
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

// serveBaseline is the baseline-server mode: it serves the body and
// headers of from's answer on a free loopback port, prints the base URL on
// stdout and serves until stdin closes.
func serveBaseline(from string) error {
	body, hdr, err := bench.Fetch(context.Background(), &http.Client{Timeout: 10 * time.Second}, from)
	if err != nil {
		return err
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

func writeWrk(w io.Writer, o options, servers []*wrkServer) error {
	fmt.Fprintf(w, "wrk -t%d -c%d -d%s --latency GET %s (a cached read), %d rounds, order reversed every other round\n",
		wrkThreads, o.connections, o.duration, wrkPath, o.rounds)
	fmt.Fprintf(w, "amexd: %d workers; bare net/http: GOMAXPROCS=%d in its own process, same bytes and headers\n\n", wrkWorkers, wrkWorkers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tserver\treq/s\tp50\tp99\terrors")
	for round := range o.rounds {
		for _, s := range servers {
			res := s.runs[round]
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\n", round+1, s.name, res.RequestsPerSec,
				res.P50.Round(10*time.Microsecond), res.P99.Round(10*time.Microsecond), res.Errors)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	base := servers[0]
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\treq/s ratio to bare\ttarget\tp99 / bare p99\ttarget\tper round (ratio, p99 ratio)")
	targets := []float64{0.80, 0.70}
	for i, s := range servers[1:] {
		var ratios, p99s []float64
		var rounds []string
		for round, res := range s.runs {
			b := base.runs[round]
			ratio, p99 := res.RequestsPerSec/b.RequestsPerSec, float64(res.P99)/float64(b.P99)
			ratios, p99s = append(ratios, ratio), append(p99s, p99)
			rounds = append(rounds, fmt.Sprintf("%.2f %.2f", ratio, p99))
		}
		ratio, p99 := median(ratios), median(p99s)
		fmt.Fprintf(tw, "%s\t%.2f (%s)\t>= %.2f\t%.2f (%s)\t<= 1.50\t%s\n", s.name,
			ratio, verdict(ratio >= targets[i]), targets[i], p99, verdict(p99 <= 1.5), strings.Join(rounds, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRatios are medians of the per-round ratios (each amexd run against the bare run of the same round).")
	fmt.Fprintln(w, "wrk shares the machine with the servers; on a busy machine the absolute figures move, the ratios less.")
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
