package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// DefaultTimeout bounds each request of an attack when Attack.Timeout is
// zero.
const DefaultTimeout = 10 * time.Second

// Attack describes one vegeta attack. The zero values of Rate and Timeout
// mean "as fast as Connections allow" and DefaultTimeout.
type Attack struct {
	// Name labels the report and the progress line.
	Name     string
	Targeter vegeta.Targeter
	// Rate is requests per second; 0 sends as fast as Connections workers can.
	Rate     int
	Duration time.Duration
	// Connections caps both the concurrent requests and the open connections.
	Connections int
	KeepAlive   bool
	Timeout     time.Duration
	// Inspect, when set, sees every result, one at a time, before it is
	// counted; it may keep findings for the scenario's notes.
	Inspect func(*vegeta.Result)
	// Progress, when set, receives a progress line once per second.
	Progress *Progress
	// Timeline, when set, records every result over time.
	Timeline *Timeline
}

// Run carries out the attack until its duration is over or ctx ends, then
// reports. An attack stopped by ctx still reports what it saw, together
// with ctx's error.
func (a Attack) Run(ctx context.Context) (Report, error) {
	if a.Targeter == nil {
		return Report{}, errors.New("attack: no targeter")
	}
	if a.Duration <= 0 {
		return Report{}, fmt.Errorf("attack %s: duration %s must be positive, so the attack ends by itself", a.Name, a.Duration)
	}
	if a.Connections <= 0 {
		return Report{}, fmt.Errorf("attack %s: connections %d must be positive", a.Name, a.Connections)
	}
	if a.Rate < 0 {
		return Report{}, fmt.Errorf("attack %s: rate %d is negative", a.Name, a.Rate)
	}
	timeout := a.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	conns := uint64(a.Connections)
	workers := conns
	if a.Rate > 0 {
		// A paced attack starts small and lets vegeta add workers when
		// answers lag, up to the connection cap.
		workers = min(conns, vegeta.DefaultWorkers)
	}
	atk := vegeta.NewAttacker(
		vegeta.Workers(workers),
		vegeta.MaxWorkers(conns),
		vegeta.Connections(a.Connections),
		vegeta.MaxConnections(a.Connections),
		vegeta.KeepAlive(a.KeepAlive),
		vegeta.Timeout(timeout),
		vegeta.Redirects(vegeta.NoFollow),
		// Bodies are drained but not kept: a fast attack would otherwise
		// hold every response in memory until the report.
		vegeta.MaxBody(0),
		vegeta.HTTP2(false),
	)
	pacer := vegeta.ConstantPacer{Freq: a.Rate, Per: time.Second}

	var live liveCounts
	var wg sync.WaitGroup
	progressDone := make(chan struct{})
	if a.Progress != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Progress.follow(a.Name, &live, progressDone)
		}()
	}
	results := atk.Attack(a.Targeter, pacer, a.Duration, a.Name)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	var m vegeta.Metrics
	errs := make(map[ErrorKind]uint64, 4)
	for res := range results {
		if a.Inspect != nil {
			a.Inspect(res)
		}
		if a.Timeline != nil {
			a.Timeline.Observe(res)
		}
		m.Add(res)
		live.requests.Add(1)
		switch {
		case res.Code == 0:
			errs[Classify(res.Error)]++
			live.errors.Add(1)
		case res.Code >= 400:
			live.httpErrors.Add(1)
		}
	}
	close(progressDone)
	wg.Wait()
	m.Close()
	rep := NewReport(a.Name, &m, errs)
	rep.Timeline = a.Timeline
	return rep, ctx.Err()
}

// liveCounts are the running totals the progress line reads while the
// attack fills them.
type liveCounts struct {
	requests, errors, httpErrors atomic.Uint64
}

// Progress prints a line per second about the attack in flight. On a
// terminal the line is rewritten in place; elsewhere each line stands alone.
type Progress struct {
	w       io.Writer
	inPlace bool
	tick    time.Duration
}

// NewProgress returns a Progress writing to w, rewriting its line in place
// when inPlace is set (w is a terminal).
func NewProgress(w io.Writer, inPlace bool) *Progress {
	return &Progress{w: w, inPlace: inPlace, tick: time.Second}
}

func (p *Progress) follow(name string, live *liveCounts, done <-chan struct{}) {
	p.every(done, live.requests.Load, func(elapsed time.Duration, n, rate uint64) string {
		return fmt.Sprintf("%s: %4.0fs  requests %d  rate %d/s  errors %d  http>=400 %d",
			name, elapsed.Seconds(), n, rate, live.errors.Load(), live.httpErrors.Load())
	})
}

// every prints line once per tick until done, given the elapsed time, the
// request count and the requests since the last tick.
func (p *Progress) every(done <-chan struct{}, count func() uint64, line func(elapsed time.Duration, n, rate uint64) string) {
	began := time.Now()
	t := time.NewTicker(p.tick)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-done:
			if p.inPlace {
				fmt.Fprint(p.w, "\r\033[K")
			}
			return
		case now := <-t.C:
			n := count()
			text := line(now.Sub(began), n, n-last)
			last = n
			if p.inPlace {
				fmt.Fprint(p.w, "\r\033[K"+text)
			} else {
				fmt.Fprintln(p.w, text)
			}
		}
	}
}
