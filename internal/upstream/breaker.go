package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	circuitbreaker "github.com/mercari/go-circuitbreaker"
)

// Breaker states as Status reports them and ForceState accepts them.
const (
	StateClosed   = "closed"
	StateOpen     = "open"
	StateHalfOpen = "half-open"
)

// maxHalfOpenRetryAfter caps the RetryAfter given to calls turned away in
// half-open because every probe slot is taken: a probe usually settles within
// one upstream timeout, so telling callers to wait a whole open period would
// keep them away long after the breaker has closed.
const maxHalfOpenRetryAfter = time.Second

// minRetryAfter keeps RetryAfter positive while the open timer is due but has
// not fired yet, so callers never read "open, retry in 0s".
const minRetryAfter = time.Millisecond

// ErrBreakerOpen is matched (errors.Is) by every error returned because a
// breaker refused a call, whether open or half-open with no probe slot free.
var ErrBreakerOpen = errors.New("circuit breaker open")

// OpenError is returned by Breaker.Allow when the breaker refuses a call.
type OpenError struct {
	Name       string        // the breaker's name
	State      string        // StateOpen, or StateHalfOpen when every probe slot is taken
	RetryAfter time.Duration // how long until a call may be admitted; always > 0
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("circuit breaker %s %s, retry after %s", e.Name, e.State, e.RetryAfter)
}

// Unwrap returns ErrBreakerOpen.
func (e *OpenError) Unwrap() error { return ErrBreakerOpen }

// BreakerConfig configures every upstream breaker. It sits under the
// top-level `breaker:` key of the configuration file.
type BreakerConfig struct {
	// Failures within Window that trip the breaker (sliding window).
	Failures int `yaml:"failures"`
	// Window is the sliding window failures are counted over.
	Window time.Duration `yaml:"window"`
	// OpenTimeout is the first open period before a probe is let through.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// MaxOpenTimeout caps the open period, which doubles each time the
	// breaker re-opens without having closed in between.
	MaxOpenTimeout time.Duration `yaml:"max_open_timeout"`
	// HalfOpenProbes is how many calls half-open admits at once.
	HalfOpenProbes int `yaml:"half_open_probes"`
	// HalfOpenSuccesses is how many probe successes close the breaker.
	HalfOpenSuccesses int `yaml:"half_open_successes"`
	// FailureRatio, when above 0, is the share of the calls within Window
	// that must have failed, besides Failures of them, for the breaker to
	// trip: an upstream that drops one call in twenty (as the Event API's
	// list calls do) is flaky, not down, and retries get past it.
	FailureRatio float64 `yaml:"failure_ratio"`
	// Propagate asks the cluster to spread this worker's trips to the
	// others. The breaker itself ignores it.
	Propagate bool `yaml:"propagate"`
}

// DefaultBreakerConfig returns the defaults: 3 failures in 30s trip it if
// they are at least half of the calls in that window, open for 5s doubling
// up to 60s, one probe at a time, one success closes it.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{
		Failures:          3,
		Window:            30 * time.Second,
		OpenTimeout:       5 * time.Second,
		MaxOpenTimeout:    60 * time.Second,
		HalfOpenProbes:    1,
		HalfOpenSuccesses: 1,
		FailureRatio:      0.5,
		Propagate:         true,
	}
}

// Validate reports every invalid field, naming it with its full key.
func (c BreakerConfig) Validate() error {
	var errs []error
	if c.Failures < 1 {
		errs = append(errs, fmt.Errorf("breaker.failures: %d must be at least 1", c.Failures))
	}
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("breaker.window: %s must be positive", c.Window))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("breaker.open_timeout: %s must be positive", c.OpenTimeout))
	}
	if c.MaxOpenTimeout < c.OpenTimeout {
		errs = append(errs, fmt.Errorf("breaker.max_open_timeout: %s must be at least open_timeout (%s)", c.MaxOpenTimeout, c.OpenTimeout))
	}
	if c.HalfOpenProbes < 1 {
		errs = append(errs, fmt.Errorf("breaker.half_open_probes: %d must be at least 1", c.HalfOpenProbes))
	}
	if c.HalfOpenSuccesses < 1 {
		errs = append(errs, fmt.Errorf("breaker.half_open_successes: %d must be at least 1", c.HalfOpenSuccesses))
	}
	if math.IsNaN(c.FailureRatio) || c.FailureRatio < 0 || c.FailureRatio > 1 {
		errs = append(errs, fmt.Errorf("breaker.failure_ratio: %v is not in [0,1]", c.FailureRatio))
	}
	return errors.Join(errs...)
}

// BreakerStatus is a snapshot of one breaker.
type BreakerStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// FailuresInWindow counts the recorded failures younger than the window
	// (at most BreakerConfig.Failures, which is all the breaker keeps).
	FailuresInWindow int `json:"failures_in_window"`
	// Opens counts the breaker's own trips (closed or half-open to open);
	// opens forced through ForceState are not counted.
	Opens int64 `json:"opens"`
	// RetryAfter is the time left in the current open period; 0 unless open.
	RetryAfter time.Duration `json:"retry_after"`
	// OpenedAt is when the breaker last entered open; zero if never.
	OpenedAt time.Time `json:"opened_at"`
	// LastChange is when the state last changed; the creation time if never.
	LastChange time.Time `json:"last_change"`
}

// StateChangeFunc is told of every state change. forced is true when the
// change came from ForceState, so cluster propagation can avoid echoing a
// change it applied itself.
type StateChangeFunc func(name, from, to string, forced bool)

// Breaker is a circuit breaker for one upstream operation. It wraps a
// mercari CircuitBreaker (state machine and open timer) and adds a sliding
// failure window, an exponential open period, a cap on concurrent half-open
// probes, status, forced states and logging. It is safe for concurrent use.
//
// Outcomes are only counted against the state period they were admitted in:
// a call that started before the breaker tripped cannot close it, re-open it
// or count towards the next trip.
type Breaker struct {
	name string
	cfg  BreakerConfig
	opts options
	cb   *circuitbreaker.CircuitBreaker
	// open is only touched by mercari under its own lock.
	open *openBackOff

	// opMu serialises calls into cb that must see a stable generation.
	// Lock order: opMu, then cb's lock, then mu; the open timer takes
	// cb's lock and then mu, so nothing may call into cb while holding mu.
	opMu sync.Mutex

	mu          sync.Mutex
	state       string
	gen         uint64 // incremented on every (re)entry into a state
	probes      int    // half-open calls in flight in the current generation
	ring        failureRing
	calls       callTally // closed-state outcomes, for FailureRatio
	opens       int64
	openedAt    time.Time
	openUntil   time.Time
	lastChange  time.Time
	forcing     bool
	forceTarget string
}

// NewBreaker returns a closed breaker named name (the upstream operation).
// WithLogger, WithClock, WithObserver and WithOnStateChange apply.
func NewBreaker(name string, cfg BreakerConfig, opts ...Option) (*Breaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new breaker %s: %w", name, err)
	}
	o := newOptions(opts)
	b := &Breaker{
		name:       name,
		cfg:        cfg,
		opts:       o,
		open:       &openBackOff{initial: cfg.OpenTimeout, max: cfg.MaxOpenTimeout},
		state:      StateClosed,
		ring:       newFailureRing(cfg.Failures),
		calls:      callTally{width: cfg.Window / tallyBuckets},
		lastChange: o.clock.Now(),
	}
	b.cb = circuitbreaker.New(
		circuitbreaker.WithClock(o.clock),
		circuitbreaker.WithTripFunc(b.shouldTrip),
		circuitbreaker.WithOpenTimeoutBackOff(b.open),
		circuitbreaker.WithHalfOpenMaxSuccesses(int64(cfg.HalfOpenSuccesses)),
		// A negative interval stops mercari's periodic counter reset,
		// which would forget failures the sliding window still counts.
		circuitbreaker.WithCounterResetInterval(-1),
		circuitbreaker.WithOnStateChangeHookFn(b.onMercariChange),
	)
	return b, nil
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// Allow asks to make one call. When refused it returns an *OpenError
// (errors.Is ErrBreakerOpen) and a nil done. Otherwise the caller must call
// done exactly once with the call's outcome (later calls are ignored):
//   - nil: a success; give nil too for answers that are the caller's
//     problem, such as a 404 or a validation refusal;
//   - an error while ctx is done: not counted, the caller gave up;
//   - any other error: a failure. Per-attempt timeouts must therefore use a
//     context derived from ctx, not ctx itself.
//
// In half-open at most HalfOpenProbes calls are admitted at once; the rest
// are refused with a RetryAfter of min(open_timeout, 1s).
func (b *Breaker) Allow(ctx context.Context) (done func(err error), err error) {
	b.mu.Lock()
	probe := false
	switch b.state {
	case StateOpen:
		err := b.openErrorLocked()
		b.mu.Unlock()
		return nil, err
	case StateHalfOpen:
		if b.probes >= b.cfg.HalfOpenProbes {
			b.mu.Unlock()
			return nil, &OpenError{Name: b.name, State: StateHalfOpen, RetryAfter: min(b.cfg.OpenTimeout, maxHalfOpenRetryAfter)}
		}
		b.probes++
		probe = true
	}
	gen := b.gen
	b.mu.Unlock()

	var called atomic.Bool
	return func(err error) {
		if called.Swap(true) {
			return
		}
		b.finish(ctx, gen, probe, err)
	}, nil
}

// finish records the outcome of a call admitted in generation gen.
func (b *Breaker) finish(ctx context.Context, gen uint64, probe bool, err error) {
	b.opMu.Lock()
	defer b.opMu.Unlock()

	b.mu.Lock()
	current := b.gen == gen
	if probe && current {
		b.probes--
	}
	if !current || (err != nil && ctx.Err() != nil) {
		b.mu.Unlock()
		return
	}
	if b.state == StateClosed {
		now := b.opts.clock.Now()
		if err != nil {
			b.ring.add(now)
		}
		b.calls.add(now, err != nil)
	}
	b.mu.Unlock()

	// opMu keeps the generation current until mercari has acted: only
	// ForceState and finish change state from closed or half-open, and
	// the open timer cannot fire outside open.
	if err == nil {
		b.cb.Success()
	} else {
		b.cb.Fail()
	}
}

// shouldTrip is mercari's TripFunc; it runs under mercari's lock when a
// failure is recorded in closed state, after finish added it to the ring.
func (b *Breaker) shouldTrip(*circuitbreaker.Counters) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.clock.Now()
	if !b.ring.full(now, b.cfg.Window) {
		return false
	}
	if b.cfg.FailureRatio <= 0 {
		return true
	}
	failed, all := b.calls.sum(now)
	return float64(failed) >= b.cfg.FailureRatio*float64(all)
}

// onMercariChange mirrors mercari's state and reports the change. It runs
// under mercari's lock, synchronously with the change.
func (b *Breaker) onMercariChange(fromState, toState circuitbreaker.State) {
	from, to := string(fromState), string(toState)
	b.mu.Lock()
	now := b.opts.clock.Now()
	forced := b.forcing && to == b.forceTarget
	if forced {
		b.forcing = false
	}
	b.state = to
	b.gen++
	b.probes = 0
	b.openUntil = time.Time{}
	switch to {
	case StateClosed:
		b.ring.reset()
		b.calls.reset()
	case StateOpen:
		b.openUntil = now.Add(b.open.last)
		b.openedAt = now
		if !forced {
			b.opens++
		}
	}
	if from != to {
		b.lastChange = now
	}
	openFor := b.open.last
	b.mu.Unlock()

	// A forced closed-to-closed is a counter reset, not a change.
	if from == to {
		return
	}
	attrs := []any{slog.String("breaker", b.name), slog.String("from", from), slog.String("to", to), slog.Bool("forced", forced)}
	if to == StateOpen {
		b.opts.logger.Warn("circuit breaker opened", append(attrs, slog.Duration("open_for", openFor))...)
	} else {
		b.opts.logger.Info("circuit breaker state changed", attrs...)
	}
	if b.opts.observer != nil {
		b.opts.observer.Transition(b.name, from, to)
	}
	if b.opts.onStateChange != nil {
		b.opts.onStateChange(b.name, from, to, forced)
	}
}

// ForceState moves the breaker to state: "closed" clears the failure window
// and the open backoff (even when already closed); "open" opens it now for
// the current backoff interval; "half-open" admits probes now. Forcing the
// state the breaker is already in is a no-op except for "closed". The hook
// sees forced=true. Unknown states are an error. Hooks run synchronously and
// must not call ForceState on the same breaker.
func (b *Breaker) ForceState(state string) error {
	var st circuitbreaker.State
	switch state {
	case StateClosed:
		st = circuitbreaker.StateClosed
	case StateOpen:
		st = circuitbreaker.StateOpen
	case StateHalfOpen:
		st = circuitbreaker.StateHalfOpen
	default:
		return fmt.Errorf("force breaker %s: unknown state %q", b.name, state)
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()

	b.mu.Lock()
	if b.state == state && state != StateClosed {
		b.mu.Unlock()
		return nil
	}
	b.forcing, b.forceTarget = true, state
	b.mu.Unlock()

	b.cb.SetState(st)

	b.mu.Lock()
	b.forcing = false
	b.mu.Unlock()
	return nil
}

// Status returns a snapshot of the breaker.
func (b *Breaker) Status() BreakerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.clock.Now()
	s := BreakerStatus{
		Name:             b.name,
		State:            b.state,
		FailuresInWindow: b.ring.count(now, b.cfg.Window),
		Opens:            b.opens,
		OpenedAt:         b.openedAt,
		LastChange:       b.lastChange,
	}
	if b.state == StateOpen {
		s.RetryAfter = max(b.openUntil.Sub(now), minRetryAfter)
	}
	return s
}

// openError returns the error Allow would give now if the breaker is open,
// or nil.
func (b *Breaker) openError() *OpenError {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != StateOpen {
		return nil
	}
	return b.openErrorLocked()
}

func (b *Breaker) openErrorLocked() *OpenError {
	ra := max(b.openUntil.Sub(b.opts.clock.Now()), minRetryAfter)
	return &OpenError{Name: b.name, State: StateOpen, RetryAfter: ra}
}

// openBackOff is the open period policy handed to mercari: it starts at
// initial and doubles on each use up to max, and remembers the last period
// it chose so the breaker can tell callers when it ends. mercari calls it
// only under its own lock, and the breaker reads last only from mercari's
// state-change hook, under the same lock.
type openBackOff struct {
	initial, max time.Duration
	next, last   time.Duration
}

// NextBackOff implements backoff.BackOff.
func (o *openBackOff) NextBackOff() time.Duration {
	if o.next == 0 {
		o.next = o.initial
	}
	o.last = o.next
	o.next = min(2*o.next, o.max)
	return o.last
}

// Reset implements backoff.BackOff.
func (o *openBackOff) Reset() { o.next = o.initial }

// failureRing keeps the times of the last n failures.
type failureRing struct {
	times []time.Time
	next  int // slot the next failure overwrites: the oldest once full
	n     int // failures held, at most len(times)
}

func newFailureRing(size int) failureRing {
	return failureRing{times: make([]time.Time, size)}
}

func (r *failureRing) add(t time.Time) {
	r.times[r.next] = t
	r.next = (r.next + 1) % len(r.times)
	r.n = min(r.n+1, len(r.times))
}

func (r *failureRing) reset() { r.next, r.n = 0, 0 }

// full reports whether the ring holds its capacity of failures and the
// oldest of them is younger than window, i.e. that many failures happened
// within the window.
func (r *failureRing) full(now time.Time, window time.Duration) bool {
	return r.n == len(r.times) && now.Sub(r.times[r.next]) < window
}

// count returns how many held failures are younger than window.
func (r *failureRing) count(now time.Time, window time.Duration) int {
	c := 0
	for i := range r.n {
		if now.Sub(r.times[i]) < window {
			c++
		}
	}
	return c
}

// tallyBuckets is how many buckets callTally splits the window into: the
// ratio's window slides in steps of a tenth of it.
const tallyBuckets = 10

// callTally counts calls and failures over the last tallyBuckets buckets of
// width each, a sliding window in coarse steps.
type callTally struct {
	width   time.Duration
	buckets [tallyBuckets]struct {
		start        int64 // bucket number (time / width) it counts for
		calls, fails int
	}
}

func (t *callTally) slot(now time.Time) int64 {
	if t.width <= 0 {
		return 0
	}
	return now.UnixNano() / int64(t.width)
}

func (t *callTally) add(now time.Time, failed bool) {
	n := t.slot(now)
	b := &t.buckets[n%tallyBuckets]
	if b.start != n {
		b.start, b.calls, b.fails = n, 0, 0
	}
	b.calls++
	if failed {
		b.fails++
	}
}

// sum returns the failures and calls of the buckets within the window.
func (t *callTally) sum(now time.Time) (fails, calls int) {
	n := t.slot(now)
	for _, b := range t.buckets {
		if b.start > n-tallyBuckets && b.start <= n {
			fails += b.fails
			calls += b.calls
		}
	}
	return fails, calls
}

func (t *callTally) reset() {
	for i := range t.buckets {
		t.buckets[i].start, t.buckets[i].calls, t.buckets[i].fails = 0, 0, 0
	}
}
