package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amexd/amexd/internal/operator"
)

// ChaosConfig tunes a fault run. Zero fields take the defaults in
// parentheses.
type ChaosConfig struct {
	// Duration is how long the fault lasts (5s); kills and reloads repeat
	// within it.
	Duration time.Duration
	// Every is the cadence of kills and reloads (1.5s).
	Every time.Duration
	// Rate is GET requests per second (200), half on keep-alive
	// connections and half on a new connection each.
	Rate int
	// WriteRate is POST /events per second (5); CycleWriteRate replaces it
	// during FaultAddEventCycle (30).
	WriteRate      int
	CycleWriteRate int
	// Connections caps each GET stream's concurrent requests (8); writes
	// have 4.
	Connections int
	// SlowDelay is getEventById's delay during FaultUpstreamSlow (1s).
	SlowDelay time.Duration
	// Lead is the steady load before the fault (500ms), Tail the load kept
	// after every request kind has recovered (500ms).
	Lead, Tail time.Duration
	// RecoveryTimeout bounds each wait for recovery: a killed slot, health,
	// every request kind, the data check's retries (10s).
	RecoveryTimeout time.Duration
	// Progress, when set, receives a line per second about the run.
	Progress *Progress
}

// writeConnections caps the writes stream's concurrent requests.
const writeConnections = 4

func (c ChaosConfig) withDefaults() ChaosConfig {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Duration, 5*time.Second)
	def(&c.Every, 1500*time.Millisecond)
	def(&c.SlowDelay, time.Second)
	def(&c.Lead, 500*time.Millisecond)
	def(&c.Tail, 500*time.Millisecond)
	def(&c.RecoveryTimeout, 10*time.Second)
	defInt(&c.Rate, 200)
	defInt(&c.WriteRate, 5)
	defInt(&c.CycleWriteRate, 30)
	defInt(&c.Connections, 8)
	return c
}

// MaxInFlight is the most requests the load can have in flight at once:
// the sum of its streams' connection caps. A kill -9 can only fail requests
// the killed worker holds, so it bounds the failures one kill may cause.
func (c ChaosConfig) MaxInFlight() int {
	c = c.withDefaults()
	return 2*c.Connections + writeConnections
}

// ChaosTarget is the amexd a fault run loads and injects faults into. It
// should run with ChaosDaemonArgs.
type ChaosTarget struct {
	// URL is the base URL of its public listener.
	URL string
	// Socket is the path of its operator socket.
	Socket string
}

// FaultReport is the outcome of one fault run. Durations encode to JSON as
// nanoseconds; a recovery that did not happen within RecoveryTimeout is -1.
type FaultReport struct {
	Fault Fault `json:"fault"`
	// Streams has one report per load stream: GETs on keep-alive
	// connections, GETs on new connections, writes.
	Streams []Report `json:"streams"`
	// Kinds counts outcomes per request kind (the Kind constants).
	Kinds map[string]*KindCounts `json:"kinds"`
	// Injections counts kills or reloads; 1 for the other faults.
	Injections int `json:"injections"`
	// FaultDuration is from the first injection to the fault's end: the
	// last kill, the last reload's answer, the upstream restored.
	FaultDuration time.Duration `json:"fault_duration_ns"`
	// Recovery is, per request kind, the time from the fault's end to the
	// answer of the first successful request of that kind sent after it.
	Recovery map[string]time.Duration `json:"recovery_ns"`
	// HealthRecovery is from the fault's end to GET /health answering 200.
	HealthRecovery time.Duration `json:"health_recovery_ns"`
	// SlotRecovery is, per kill, the time until the slot had a new worker
	// in state ready.
	SlotRecovery []time.Duration `json:"slot_recovery_ns,omitempty"`
	// PidsBefore and PidsAfter are the worker pids before the fault and
	// after recovery.
	PidsBefore []int     `json:"pids_before"`
	PidsAfter  []int     `json:"pids_after"`
	Data       DataCheck `json:"data"`
	// Problems lists what went wrong beyond the counts: a refused reload, a
	// slot that did not come back, a kind that did not recover.
	Problems []string `json:"problems,omitempty"`
	// Timeline is the load's answers over time, with a mark for each
	// injection and for the fault's end.
	Timeline *Timeline `json:"-"`
}

// Requests is the number of requests the load sent.
func (r FaultReport) Requests() uint64 {
	var n uint64
	for _, s := range r.Streams {
		n += s.Requests
	}
	return n
}

// Status sums the answers by status over the streams.
func (r FaultReport) Status() map[int]uint64 {
	out := make(map[int]uint64)
	for _, s := range r.Streams {
		for code, n := range s.Status {
			out[code] += n
		}
	}
	return out
}

// Errors sums the transport failures by kind over the streams.
func (r FaultReport) Errors() map[ErrorKind]uint64 {
	out := make(map[ErrorKind]uint64, 4)
	for _, s := range r.Streams {
		for k, n := range s.Errors {
			out[k] += n
		}
	}
	return out
}

// Replaced counts the pids of PidsBefore absent from PidsAfter.
func (r FaultReport) Replaced() int {
	n := 0
	for _, p := range r.PidsBefore {
		if !slices.Contains(r.PidsAfter, p) {
			n++
		}
	}
	return n
}

// RunFault keeps a steady mixed load on target (GETs of /events, /users/N,
// /events/user/N and /events/event-N on keep-alive and on new connections,
// POST /events with unique names), applies fault after ChaosConfig.Lead,
// waits for every request kind and GET /health to recover, stops the load
// and checks the data. up must be target's upstream. The error says why the
// run could not be carried out (operator socket unreachable, upstream not
// restartable, ctx ended); what the fault did to amexd is in the report,
// which is filled as far as the run got.
func RunFault(ctx context.Context, target ChaosTarget, up *Upstream, fault Fault, cfg ChaosConfig) (FaultReport, error) {
	cfg = cfg.withDefaults()
	rep := FaultReport{Fault: fault, Recovery: make(map[string]time.Duration),
		Timeline: NewTimeline(StepFor(cfg.Lead + cfg.Duration + cfg.Tail))}
	if !slices.Contains(AllFaults(), fault) {
		return rep, fmt.Errorf("chaos: unknown fault %q", fault)
	}
	op := operator.NewClient(target.Socket)
	if _, err := op.WaitHealthy(ctx, cfg.RecoveryTimeout); err != nil {
		return rep, fmt.Errorf("chaos %s: before the fault: %w", fault, err)
	}
	before, err := workers(ctx, op)
	if err != nil {
		return rep, fmt.Errorf("chaos %s: %w", fault, err)
	}
	rep.PidsBefore = pids(before)

	tr := newTracker()
	load := newLoad(target.URL, fault, cfg, tr, rep.Timeline)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := load.start(loadCtx)
	var injections atomic.Int64
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress != nil {
		progressWG.Go(func() { cfg.Progress.followChaos(fault, tr, &injections, progressDone) })
	}
	defer func() {
		close(progressDone)
		progressWG.Wait()
	}()

	runErr := func() error {
		if err := sleepCtx(ctx, cfg.Lead); err != nil {
			return err
		}
		began := time.Now()
		end, err := inject(ctx, fault, cfg, op, up, &rep, &injections)
		rep.Injections = int(injections.Load())
		if err != nil {
			return err
		}
		rep.FaultDuration = end.Sub(began)
		rep.HealthRecovery, err = op.WaitHealthy(ctx, cfg.RecoveryTimeout)
		if err != nil {
			rep.HealthRecovery = -1
			rep.Problems = append(rep.Problems, fmt.Sprintf("GET /health not 200 within %s of the fault's end: %v", cfg.RecoveryTimeout, err))
		}
		if waitFor(ctx, cfg.RecoveryTimeout-time.Since(end), func() bool { return tr.allRecovered(end) }) {
			rep.Timeline.Mark("every request kind succeeds again")
		} else {
			rep.Problems = append(rep.Problems, fmt.Sprintf("not every request kind succeeded within %s of the fault's end", cfg.RecoveryTimeout))
		}
		rep.Recovery = tr.recovery(end)
		return sleepCtx(ctx, cfg.Tail)
	}()
	stopLoad()
	streams, loadErr := load.wait(loadDone)
	rep.Streams = streams
	rep.Kinds = tr.counts()
	if err := errors.Join(runErr, loadErr); err != nil {
		return rep, fmt.Errorf("chaos %s: %w", fault, err)
	}
	after, err := workers(ctx, op)
	if err != nil {
		return rep, fmt.Errorf("chaos %s: %w", fault, err)
	}
	rep.PidsAfter = pids(after)
	rep.Data = checkData(ctx, target.URL, up.Sim, tr.createdIDs(), max(4, 2*len(after)), cfg.RecoveryTimeout)
	return rep, ctx.Err()
}

func workers(ctx context.Context, op *operator.Client) ([]operator.WorkerInfo, error) {
	ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
	return ws.Workers, err
}

func pids(ws []operator.WorkerInfo) []int {
	out := make([]int, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.PID)
	}
	slices.Sort(out)
	return out
}

// sleepCtx waits d, or less if ctx ends first, which it reports.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
