package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sync/errgroup"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/simulator"
)

// Fault names one fault the chaos runner injects under load.
type Fault string

// The faults RunFault knows.
const (
	// FaultKill sends SIGKILL to a random ready worker every ChaosConfig.Every.
	FaultKill Fault = "kill"
	// FaultReload asks the supervisor for a rolling reload every
	// ChaosConfig.Every, the next one starting when the last is done.
	FaultReload Fault = "reload"
	// FaultUpstreamDown stops the upstream's server for ChaosConfig.Duration
	// and starts it again on the same port.
	FaultUpstreamDown Fault = "upstream-down"
	// FaultUpstreamSlow makes getEventById take ChaosConfig.SlowDelay, longer
	// than the upstream timeout of ChaosDaemonArgs, for ChaosConfig.Duration,
	// and purges amexd's caches as it starts: events never change, so with
	// them cached the slowness would never reach amexd.
	FaultUpstreamSlow Fault = "upstream-slow"
	// FaultAddEventCycle runs the original mock's addEvent cycle (5 successes,
	// then 10 failures) for ChaosConfig.Duration, with writes at
	// ChaosConfig.CycleWriteRate.
	FaultAddEventCycle Fault = "addevent-cycle"
)

// AllFaults lists every fault in the order a full chaos run applies them.
func AllFaults() []Fault {
	return []Fault{FaultKill, FaultReload, FaultUpstreamDown, FaultUpstreamSlow, FaultAddEventCycle}
}

// Request kinds: the five kinds of request the load sends, which the
// report counts and times recovery for separately.
const (
	KindEvents     = "GET /events"
	KindUser       = "GET /users/:id"
	KindUserEvents = "GET /events/user/:id"
	KindEvent      = "GET /events/:id"
	KindCreate     = "POST /events"
)

// ChaosSimConfig returns the simulator knobs a chaos run starts from:
// getEventById answers after 20 ms, addEvent never fails and no list call
// is dropped, so that the injected fault is the only one in play.
func ChaosSimConfig() simulator.SimConfig {
	cfg := simulator.DefaultSimConfig()
	cfg.EventDelay = 20 * time.Millisecond
	cfg.AddFail = 0
	cfg.ListErrorRate = 0
	return cfg
}

// ChaosDaemonArgs returns the amexd flags RunFault's faults assume, for an
// amexd whose upstream is at upstreamURL:
//   - an upstream timeout (300 ms) below the default SlowDelay, so that the
//     slow upstream is a timeout and not just latency;
//   - breakers that try the upstream again after 500 ms (at most 2 s), so
//     that recovery after the upstream returns is measured in seconds and
//     not in the production open timeouts;
//   - supervisor.healthy_after 1s, so that a slot killed again after its
//     worker served for a second restarts at once instead of with the
//     crash-loop backoff (a property of its own, not the one measured);
//   - the rate limit out of the way of a single client.
func ChaosDaemonArgs(upstreamURL string) []string {
	return []string{
		"-upstream.url", upstreamURL,
		"-upstream.timeout", "300ms",
		"-breaker.open_timeout", "500ms",
		"-breaker.max_open_timeout", "2s",
		"-supervisor.healthy_after", "1s",
		"-ratelimit.rate", "16000000-M",
	}
}

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

// KindCounts are the outcomes of one kind of request.
type KindCounts struct {
	Requests uint64               `json:"requests"`
	Status   map[int]uint64       `json:"status"`
	Errors   map[ErrorKind]uint64 `json:"errors"`
	// NoRetryAfter counts 503 answers without a Retry-After header.
	NoRetryAfter uint64 `json:"no_retry_after"`
}

// DataCheck is what the check after a fault found: every event answered
// 201 read back on new connections, as itself and in its user's list, and
// looked up in the simulator.
type DataCheck struct {
	// Created counts the events answered 201.
	Created int `json:"created"`
	// Reads counts the check's GETs; Retried those repeated after a 503 or
	// 504, which the check tolerates until RecoveryTimeout.
	Reads   int `json:"reads"`
	Retried int `json:"retried"`
	// Unreadable describes every read that did not show an event.
	Unreadable []string `json:"unreadable,omitempty"`
	// MissingUpstream lists event IDs answered 201 that the simulator lacks.
	MissingUpstream []string `json:"missing_upstream,omitempty"`
}

// OK reports whether every event was readable and none missing upstream.
func (d DataCheck) OK() bool { return len(d.Unreadable) == 0 && len(d.MissingUpstream) == 0 }

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

// inject applies fault and returns when it ended.
func inject(ctx context.Context, fault Fault, cfg ChaosConfig, op *operator.Client, up *Upstream,
	rep *FaultReport, injections *atomic.Int64) (time.Time, error) {
	switch fault {
	case FaultKill:
		return repeat(ctx, cfg, injections, func() error { return killOne(ctx, cfg, op, rep) })
	case FaultReload:
		return repeat(ctx, cfg, injections, func() error {
			rep.Timeline.Mark("reload")
			if _, err := operator.Call(ctx, op, operator.PostReload, operator.None{}); err != nil {
				rep.Problems = append(rep.Problems, err.Error())
				rep.Timeline.Mark("reload failed")
				return nil
			}
			rep.Timeline.Mark("reload done")
			return nil
		})
	case FaultUpstreamDown:
		rep.Timeline.Mark("upstream down")
		if err := up.Stop(); err != nil {
			return time.Time{}, err
		}
		injections.Add(1) // counted once it holds, not when attempted
		held := sleepCtx(ctx, cfg.Duration)
		if err := up.Start(); err != nil {
			return time.Time{}, errors.Join(held, err)
		}
		rep.Timeline.Mark("upstream up")
		return time.Now(), held
	case FaultUpstreamSlow:
		purge := func() error {
			if _, err := operator.Call(ctx, op, operator.PostCachePurge, operator.None{}); err != nil {
				return fmt.Errorf("purge the cache: %w", err)
			}
			rep.Timeline.Mark("cache purged")
			return nil
		}
		return hold(ctx, cfg, up.Sim, rep.Timeline, "upstream slow", injections, func(c *simulator.SimConfig) { c.EventDelay = cfg.SlowDelay }, purge)
	default: // FaultAddEventCycle, the list being checked by RunFault
		return hold(ctx, cfg, up.Sim, rep.Timeline, "addEvent failure cycle", injections, func(c *simulator.SimConfig) {
			orig := simulator.DefaultSimConfig()
			c.AddOK, c.AddFail = orig.AddOK, orig.AddFail
		}, nil)
	}
}

// repeat runs one injection at once and then every cfg.Every while the
// fault lasts, and returns the time the last one ended.
func repeat(ctx context.Context, cfg ChaosConfig, injections *atomic.Int64, once func() error) (time.Time, error) {
	began := time.Now()
	var end time.Time
	for next := began; next.Sub(began) < cfg.Duration; next = next.Add(cfg.Every) {
		if err := sleepCtx(ctx, time.Until(next)); err != nil {
			return end, err
		}
		injections.Add(1)
		if err := once(); err != nil {
			return end, err
		}
		end = time.Now()
	}
	return end, nil
}

// hold changes the simulator's knobs with edit for cfg.Duration, then puts
// them back as they were, marking both moments on tl as what and its end.
// then, when set, runs once the knobs are changed.
func hold(ctx context.Context, cfg ChaosConfig, sim *simulator.Simulator, tl *Timeline, what string,
	injections *atomic.Int64, edit func(*simulator.SimConfig), then func() error) (time.Time, error) {
	saved := sim.Config()
	tl.Mark(what)
	if err := sim.Update(edit); err != nil {
		return time.Time{}, fmt.Errorf("inject: %w", err)
	}
	if then != nil {
		if err := then(); err != nil {
			return time.Time{}, errors.Join(fmt.Errorf("inject: %w", err), sim.Update(func(c *simulator.SimConfig) { *c = saved }))
		}
	}
	injections.Add(1)
	held := sleepCtx(ctx, cfg.Duration)
	if err := sim.Update(func(c *simulator.SimConfig) { *c = saved }); err != nil {
		return time.Time{}, errors.Join(held, fmt.Errorf("restore: %w", err))
	}
	tl.Mark(what + " over")
	return time.Now(), held
}

// killOne sends SIGKILL to a random ready worker and waits for its slot to
// have a ready successor, recording how long that took.
func killOne(ctx context.Context, cfg ChaosConfig, op *operator.Client, rep *FaultReport) error {
	ws, err := workers(ctx, op)
	if err != nil {
		return err
	}
	ready := slices.DeleteFunc(ws, func(w operator.WorkerInfo) bool { return w.State != "ready" || w.PID <= 0 })
	if len(ready) == 0 {
		rep.Problems = append(rep.Problems, "kill: no ready worker to kill")
		return nil
	}
	victim := ready[rand.IntN(len(ready))]
	rep.Timeline.Mark(fmt.Sprintf("kill -9 slot %d", victim.Slot))
	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill worker %d of slot %d: %w", victim.PID, victim.Slot, err)
	}
	back := waitFor(ctx, cfg.RecoveryTimeout, func() bool {
		ws, err := workers(ctx, op)
		if err != nil {
			return false
		}
		return slices.ContainsFunc(ws, func(w operator.WorkerInfo) bool {
			return w.Slot == victim.Slot && w.PID != victim.PID && w.PID > 0 && w.State == "ready"
		})
	})
	if !back {
		rep.SlotRecovery = append(rep.SlotRecovery, -1)
		rep.Problems = append(rep.Problems, fmt.Sprintf("kill: slot %d had no ready worker %s after pid %d was killed",
			victim.Slot, cfg.RecoveryTimeout, victim.PID))
		return ctx.Err()
	}
	rep.SlotRecovery = append(rep.SlotRecovery, time.Since(killed))
	rep.Timeline.Mark(fmt.Sprintf("slot %d ready", victim.Slot))
	return nil
}

// load is the three attacks a fault run keeps going.
type load struct {
	attacks []Attack
}

func newLoad(base string, fault Fault, cfg ChaosConfig, tr *tracker, tl *Timeline) *load {
	// The attacks run until the run stops them; their duration is only a
	// backstop in case it does not.
	span := cfg.Lead + cfg.Duration + 3*cfg.RecoveryTimeout + cfg.Tail
	writeRate := cfg.WriteRate
	if fault == FaultAddEventCycle {
		writeRate = cfg.CycleWriteRate
	}
	reads := readTargeter(base)
	l := &load{attacks: []Attack{
		{Name: "GET keep-alive", Targeter: reads, Rate: cfg.Rate / 2, Connections: cfg.Connections, KeepAlive: true},
		{Name: "GET new conn", Targeter: reads, Rate: cfg.Rate - cfg.Rate/2, Connections: cfg.Connections},
		{Name: "POST /events", Targeter: createTargeter(base, fault), Rate: writeRate, Connections: writeConnections, KeepAlive: true},
	}}
	for i := range l.attacks {
		l.attacks[i].Duration = span
		l.attacks[i].Inspect = tr.inspect
		l.attacks[i].Timeline = tl
	}
	return l
}

type loadResult struct {
	reports []Report
	errs    []error
}

func (l *load) start(ctx context.Context) <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		res := loadResult{reports: make([]Report, len(l.attacks)), errs: make([]error, len(l.attacks))}
		var wg sync.WaitGroup
		for i, a := range l.attacks {
			wg.Go(func() { res.reports[i], res.errs[i] = a.Run(ctx) })
		}
		wg.Wait()
		done <- res
	}()
	return done
}

// wait collects the attacks' reports. Their context having been cancelled
// is how a run stops them, not an error.
func (l *load) wait(done <-chan loadResult) ([]Report, error) {
	res := <-done
	var errs []error
	for _, err := range res.errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return res.reports, errors.Join(errs...)
}

// seedEventCount is how many events every simulator starts with
// (event-1 … event-4, the original mock's).
const seedEventCount = 4

// readTargeter cycles through every read path: the lists, each seed user,
// each seed user's events and each seed event.
func readTargeter(base string) vegeta.Targeter {
	paths := []string{"/events"}
	for u := 1; u <= 3; u++ {
		paths = append(paths, fmt.Sprintf("/users/%d", u), fmt.Sprintf("/events/user/%d", u))
	}
	for e := 1; e <= seedEventCount; e++ {
		paths = append(paths, fmt.Sprintf("/events/event-%d", e))
	}
	var n atomic.Uint64
	return func(t *vegeta.Target) error {
		t.Method = http.MethodGet
		t.URL = base + paths[(n.Add(1)-1)%uint64(len(paths))]
		return nil
	}
}

// createTargeter POSTs events with names unique to this run, spread over
// the seed users.
func createTargeter(base string, fault Fault) vegeta.Targeter {
	var n atomic.Uint64
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	hdr := http.Header{"Content-Type": {"application/json"}}
	return func(t *vegeta.Target) error {
		i := n.Add(1)
		t.Method = http.MethodPost
		t.URL = base + "/events"
		t.Header = hdr
		t.Body = fmt.Appendf(nil, `{"name":"chaos %s %s %d","userId":%d}`, fault, run, i, 1+i%3)
		return nil
	}
}

// kindOf names the kind of a request the load sent.
func kindOf(method, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return method + " ?"
	}
	p := u.Path
	switch {
	case method == http.MethodPost:
		return KindCreate
	case p == "/events":
		return KindEvents
	case strings.HasPrefix(p, "/events/user/"):
		return KindUserEvents
	case strings.HasPrefix(p, "/events/"):
		return KindEvent
	case strings.HasPrefix(p, "/users/"):
		return KindUser
	default:
		return method + " " + p
	}
}

// tracker sees every result of the load, from the attacks' goroutines.
type tracker struct {
	mu       sync.Mutex
	kinds    map[string]*KindCounts
	okStarts map[string][]time.Time // per kind, starts of successful requests
	okEnds   map[string][]time.Time // their answers, index for index
	lastOK   map[string]time.Time   // per kind, the latest start among them
	created  []string
	sent     atomic.Uint64
	failed   atomic.Uint64 // no answer
	httpErrs atomic.Uint64 // answered >= 400
}

func newTracker() *tracker {
	return &tracker{
		kinds:    make(map[string]*KindCounts),
		okStarts: make(map[string][]time.Time),
		okEnds:   make(map[string][]time.Time),
		lastOK:   make(map[string]time.Time),
	}
}

func (t *tracker) inspect(res *vegeta.Result) {
	t.sent.Add(1)
	switch {
	case res.Code == 0:
		t.failed.Add(1)
	case res.Code >= 400:
		t.httpErrs.Add(1)
	}
	kind := kindOf(res.Method, res.URL)
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[kind]
	if k == nil {
		k = &KindCounts{Status: make(map[int]uint64), Errors: make(map[ErrorKind]uint64)}
		t.kinds[kind] = k
	}
	k.Requests++
	if res.Code == 0 {
		k.Errors[Classify(res.Error)]++
		return
	}
	k.Status[int(res.Code)]++
	if res.Code == http.StatusServiceUnavailable && res.Headers.Get("Retry-After") == "" {
		k.NoRetryAfter++
	}
	if res.Code < 200 || res.Code >= 300 {
		return
	}
	t.okStarts[kind] = append(t.okStarts[kind], res.Timestamp)
	t.okEnds[kind] = append(t.okEnds[kind], res.End())
	if res.Timestamp.After(t.lastOK[kind]) {
		t.lastOK[kind] = res.Timestamp
	}
	if kind == KindCreate && res.Code == http.StatusCreated {
		if loc := res.Headers.Get("Location"); loc != "" {
			t.created = append(t.created, path.Base(loc))
		}
	}
}

// allRecovered reports whether every kind sent so far has had a success
// sent at or after end.
func (t *tracker) allRecovered(end time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for kind := range t.kinds {
		if t.lastOK[kind].Before(end) {
			return false
		}
	}
	return true
}

// recovery returns, per kind, the time from end to the answer of the
// first success sent at or after end, or -1.
func (t *tracker) recovery(end time.Time) map[string]time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]time.Duration, len(t.kinds))
	for kind := range t.kinds {
		out[kind] = -1
		for i, s := range t.okStarts[kind] {
			if d := t.okEnds[kind][i].Sub(end); !s.Before(end) && (out[kind] < 0 || d < out[kind]) {
				out[kind] = d
			}
		}
	}
	return out
}

func (t *tracker) counts() map[string]*KindCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.kinds)
}

func (t *tracker) createdIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.created)
}

// checkData reads every event of ids back reps times on new connections,
// as itself and in its user's list, and looks it up in sim. A read
// answered 503 or 504 is repeated until timeout: the check is about data,
// and a breaker still half-open after the fault is not a data loss.
func checkData(ctx context.Context, base string, sim *simulator.Simulator, ids []string, reps int, timeout time.Duration) DataCheck {
	dc := DataCheck{Created: len(ids)}
	byUser := make(map[int][]string)
	for _, id := range ids {
		ev, ok := upstreamEvent(sim, id)
		user, err := strconv.Atoi(string(ev.UserID))
		if !ok || err != nil {
			dc.MissingUpstream = append(dc.MissingUpstream, id)
			continue
		}
		byUser[user] = append(byUser[user], id)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var mu sync.Mutex
	note := func(reads, retried int, problem string) {
		mu.Lock()
		defer mu.Unlock()
		dc.Reads += reads
		dc.Retried += retried
		if problem != "" {
			dc.Unreadable = append(dc.Unreadable, problem)
		}
	}
	var g errgroup.Group
	g.SetLimit(8)
	read := func(p string, want []string) {
		g.Go(func() error {
			note(readBack(ctx, client, base+p, want, timeout))
			return nil
		})
	}
	for range reps {
		for _, id := range ids {
			if !slices.Contains(dc.MissingUpstream, id) {
				read("/events/"+id, []string{id})
			}
		}
		for _, u := range slices.Sorted(maps.Keys(byUser)) {
			read(fmt.Sprintf("/events/user/%d", u), byUser[u])
		}
	}
	_ = g.Wait() // the reads report through note, never as an error
	slices.Sort(dc.Unreadable)
	return dc
}

// readBack GETs url until it answers something other than 503/504 or
// timeout passes, and describes what is wrong if the answer is not a 200
// naming every ID of want.
func readBack(ctx context.Context, client *http.Client, url string, want []string, timeout time.Duration) (reads, retried int, problem string) {
	deadline := time.Now().Add(timeout)
	for {
		reads++
		code, body, err := fetchAny(ctx, client, url)
		switch {
		case err != nil:
			return reads, retried, fmt.Sprintf("GET %s: %v", url, err)
		case (code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout) && time.Now().Before(deadline):
			retried++
			if sleepCtx(ctx, 50*time.Millisecond) != nil {
				return reads, retried, fmt.Sprintf("GET %s: %v", url, ctx.Err())
			}
			continue
		case code != http.StatusOK:
			return reads, retried, fmt.Sprintf("GET %s: %d", url, code)
		}
		var missing []string
		for _, id := range want {
			if !strings.Contains(body, `"id":`+idJSON(id)) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return reads, retried, fmt.Sprintf("GET %s: 200 without %s", url, strings.Join(missing, ", "))
		}
		return reads, retried, ""
	}
}

func fetchAny(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// upstreamEvent looks id up in the simulator through its handler, so the
// check does not depend on the upstream's listener.
func upstreamEvent(sim *simulator.Simulator, id string) (eventapi.Event, bool) {
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, eventapi.PathEventByID+url.PathEscape(id), nil))
	var ev eventapi.Event
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &ev) != nil {
		return ev, false
	}
	key, ok := eventapi.KeyOf(ev.ID)
	return ev, ok && key == id
}

// idJSON is how an event record holds the id of key id: a number for
// decimal digits (amexd's ids), else a string.
func idJSON(id string) string {
	if id != "" && strings.TrimLeft(id, "0123456789") == "" {
		return id
	}
	return strconv.Quote(id)
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
