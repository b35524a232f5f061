package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
)

var errBoom = errors.New("boom")

type transition struct {
	from, to string
	forced   bool
}

// hookRecorder collects OnStateChange calls.
type hookRecorder struct {
	mu  sync.Mutex
	got []transition
}

func (h *hookRecorder) hook(_, from, to string, forced bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, transition{from, to, forced})
}

func (h *hookRecorder) take() []transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := h.got
	h.got = nil
	return got
}

func testBreakerConfig() BreakerConfig {
	cfg := DefaultBreakerConfig()
	cfg.OpenTimeout = 5 * time.Second
	cfg.MaxOpenTimeout = 12 * time.Second
	return cfg
}

func newMockBreaker(t *testing.T, cfg BreakerConfig, opts ...Option) (*Breaker, *clock.Mock) {
	t.Helper()
	mock := clock.NewMock()
	b, err := NewBreaker("getUsers", cfg, append([]Option{WithClock(mock)}, opts...)...)
	if err != nil {
		t.Fatalf("NewBreaker: %v", err)
	}
	return b, mock
}

// record makes one call through b that ends with err.
func record(t *testing.T, b *Breaker, err error) {
	t.Helper()
	done, aerr := b.Allow(context.Background())
	if aerr != nil {
		t.Fatalf("Allow refused in state %s: %v", b.Status().State, aerr)
	}
	done(err)
}

func trip(t *testing.T, b *Breaker) {
	t.Helper()
	for range b.cfg.Failures {
		record(t, b, errBoom)
	}
	if st := b.Status().State; st != StateOpen {
		t.Fatalf("state after %d failures = %s, want open", b.cfg.Failures, st)
	}
}

func wantState(t *testing.T, b *Breaker, want string) {
	t.Helper()
	if got := b.Status().State; got != want {
		t.Fatalf("state = %s, want %s", got, want)
	}
}

func TestBreakerSlidingWindow(t *testing.T) {
	tests := []struct {
		name string
		at   []time.Duration // failure times from start
		want string
	}{
		{"three within 25s across a 30s boundary", []time.Duration{25 * time.Second, 35 * time.Second, 50 * time.Second}, StateOpen},
		{"three spread over 62s", []time.Duration{0, 31 * time.Second, 62 * time.Second}, StateClosed},
		{"oldest exactly window old", []time.Duration{0, 10 * time.Second, 30 * time.Second}, StateClosed},
		{"old ones slide out, new ones trip", []time.Duration{0, 10 * time.Second, 40 * time.Second, 45 * time.Second, 50 * time.Second}, StateOpen},
		{"two only", []time.Duration{0, time.Second}, StateClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, mock := newMockBreaker(t, testBreakerConfig())
			var now time.Duration
			for _, at := range tc.at {
				mock.Add(at - now)
				now = at
				record(t, b, errBoom)
			}
			wantState(t, b, tc.want)
		})
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	tests := []struct {
		name  string
		ratio float64
		want  string
	}{
		{"a failure in twenty is flaky, not down", 0.5, StateClosed},
		{"without a ratio, the count alone trips", 0, StateOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testBreakerConfig()
			cfg.FailureRatio = tc.ratio
			b, mock := newMockBreaker(t, cfg)
			for i := range 60 {
				mock.Add(100 * time.Millisecond)
				if i%20 == 19 {
					record(t, b, errBoom)
				} else {
					record(t, b, nil)
				}
			}
			wantState(t, b, tc.want)
		})
	}
	t.Run("failures that are most calls trip", func(t *testing.T) {
		b, _ := newMockBreaker(t, testBreakerConfig())
		record(t, b, nil)
		record(t, b, nil)
		for range 3 {
			record(t, b, errBoom)
		}
		wantState(t, b, StateOpen)
	})
}

func TestBreakerFailuresInWindow(t *testing.T) {
	b, mock := newMockBreaker(t, testBreakerConfig())
	record(t, b, errBoom)
	mock.Add(20 * time.Second)
	record(t, b, errBoom)
	record(t, b, nil)
	if got := b.Status().FailuresInWindow; got != 2 {
		t.Fatalf("FailuresInWindow = %d, want 2", got)
	}
	mock.Add(15 * time.Second) // the first is now 35s old
	if got := b.Status().FailuresInWindow; got != 1 {
		t.Fatalf("FailuresInWindow after 35s = %d, want 1", got)
	}
}

func TestBreakerCallerCancelNotCounted(t *testing.T) {
	b, _ := newMockBreaker(t, testBreakerConfig())
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller gave up while the call was in flight
	for range 5 {
		done, err := b.Allow(ctx)
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		done(context.Canceled)
	}
	if st := b.Status(); st.State != StateClosed || st.FailuresInWindow != 0 {
		t.Fatalf("status = %+v, want closed with no failures", st)
	}
}

func TestBreakerOpenCountdown(t *testing.T) {
	b, mock := newMockBreaker(t, testBreakerConfig())
	trip(t, b)
	if got := b.Status().RetryAfter; got != 5*time.Second {
		t.Fatalf("RetryAfter right after trip = %s, want 5s", got)
	}
	mock.Add(2 * time.Second)
	_, err := b.Allow(context.Background())
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Allow while open = %v, want *OpenError matching ErrBreakerOpen", err)
	}
	if oe.RetryAfter != 3*time.Second || b.Status().RetryAfter != 3*time.Second {
		t.Fatalf("RetryAfter after 2s = %s (status %s), want 3s", oe.RetryAfter, b.Status().RetryAfter)
	}
	mock.Add(3 * time.Second)
	wantState(t, b, StateHalfOpen)
	if got := b.Status().RetryAfter; got != 0 {
		t.Fatalf("RetryAfter in half-open = %s, want 0", got)
	}
}

func TestBreakerHalfOpenProbeLimit(t *testing.T) {
	for _, probes := range []int{1, 3} {
		t.Run("probes="+strconv.Itoa(probes), func(t *testing.T) {
			cfg := testBreakerConfig()
			cfg.HalfOpenProbes = probes
			b, mock := newMockBreaker(t, cfg)
			trip(t, b)
			mock.Add(cfg.OpenTimeout)
			wantState(t, b, StateHalfOpen)

			const callers = 50
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				admitted []func(error)
				refused  []error
			)
			start := make(chan struct{})
			for range callers {
				wg.Go(func() {
					<-start
					done, err := b.Allow(context.Background())
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						refused = append(refused, err)
						return
					}
					admitted = append(admitted, done)
				})
			}
			close(start)
			wg.Wait()

			if len(admitted) != probes || len(refused) != callers-probes {
				t.Fatalf("admitted %d, refused %d; want %d and %d", len(admitted), len(refused), probes, callers-probes)
			}
			for _, err := range refused {
				var oe *OpenError
				if !errors.As(err, &oe) || oe.State != StateHalfOpen || oe.RetryAfter != time.Second {
					t.Fatalf("refusal = %#v, want half-open OpenError with RetryAfter 1s", err)
				}
			}
			admitted[0](nil)
			wantState(t, b, StateClosed)
			// Probes finishing after the breaker closed change nothing.
			for _, done := range admitted[1:] {
				done(errBoom)
			}
			wantState(t, b, StateClosed)
		})
	}
}

func TestBreakerHalfOpenSuccesses(t *testing.T) {
	cfg := testBreakerConfig()
	cfg.HalfOpenSuccesses = 2
	b, mock := newMockBreaker(t, cfg)
	trip(t, b)
	mock.Add(cfg.OpenTimeout)
	record(t, b, nil)
	wantState(t, b, StateHalfOpen)
	record(t, b, nil)
	wantState(t, b, StateClosed)
}

func TestBreakerReopenBackoff(t *testing.T) {
	b, mock := newMockBreaker(t, testBreakerConfig()) // 5s, capped at 12s
	trip(t, b)
	for _, want := range []time.Duration{10 * time.Second, 12 * time.Second, 12 * time.Second} {
		mock.Add(b.Status().RetryAfter)
		wantState(t, b, StateHalfOpen)
		record(t, b, errBoom)
		if st := b.Status(); st.State != StateOpen || st.RetryAfter != want {
			t.Fatalf("after failed probe: %s for %s, want open for %s", st.State, st.RetryAfter, want)
		}
	}
	mock.Add(12 * time.Second)
	record(t, b, nil)
	wantState(t, b, StateClosed)
	trip(t, b)
	if got := b.Status().RetryAfter; got != 5*time.Second {
		t.Fatalf("open period after closing = %s, want the reset 5s", got)
	}
	if got := b.Status().Opens; got != 5 {
		t.Fatalf("Opens = %d, want 5", got)
	}
}

func TestBreakerStaleOutcomeIgnored(t *testing.T) {
	b, mock := newMockBreaker(t, testBreakerConfig())
	slow, err := b.Allow(context.Background()) // admitted while closed
	if err != nil {
		t.Fatal(err)
	}
	trip(t, b)
	mock.Add(5 * time.Second)
	wantState(t, b, StateHalfOpen)
	slow(nil)
	wantState(t, b, StateHalfOpen) // a pre-trip success must not close it
	record(t, b, nil)              // the probe slot is still free
	wantState(t, b, StateClosed)
}

func TestBreakerForceState(t *testing.T) {
	h := &hookRecorder{}
	b, mock := newMockBreaker(t, testBreakerConfig(), WithOnStateChange(h.hook))

	steps := []struct {
		name   string
		do     func()
		state  string
		events []transition
	}{
		{"force open", func() { mustForce(t, b, StateOpen) }, StateOpen, []transition{{StateClosed, StateOpen, true}}},
		{"force open again is a no-op", func() { mustForce(t, b, StateOpen) }, StateOpen, nil},
		{"timer to half-open is not forced", func() { mock.Add(5 * time.Second) }, StateHalfOpen, []transition{{StateOpen, StateHalfOpen, false}}},
		{"failed probe re-opens", func() { record(t, b, errBoom) }, StateOpen, []transition{{StateHalfOpen, StateOpen, false}}},
		{"force closed", func() { mustForce(t, b, StateClosed) }, StateClosed, []transition{{StateOpen, StateClosed, true}}},
		{"natural trip", func() { trip(t, b) }, StateOpen, []transition{{StateClosed, StateOpen, false}}},
		{"force half-open", func() { mustForce(t, b, StateHalfOpen) }, StateHalfOpen, []transition{{StateOpen, StateHalfOpen, true}}},
	}
	for _, s := range steps {
		s.do()
		wantState(t, b, s.state)
		if got := h.take(); !equalTransitions(got, s.events) {
			t.Fatalf("%s: hook saw %v, want %v", s.name, got, s.events)
		}
	}
	if got := b.Status().Opens; got != 2 {
		t.Fatalf("Opens = %d, want 2 (forced opens not counted)", got)
	}
	if err := b.ForceState("ajar"); err == nil {
		t.Fatal("ForceState(ajar) succeeded")
	}
}

func TestBreakerForceClosedResets(t *testing.T) {
	h := &hookRecorder{}
	b, mock := newMockBreaker(t, testBreakerConfig(), WithOnStateChange(h.hook))
	trip(t, b)
	mock.Add(5 * time.Second)
	record(t, b, errBoom) // re-open: the next period would be 10s
	mustForce(t, b, StateClosed)
	record(t, b, errBoom)
	record(t, b, errBoom)
	h.take()
	mustForce(t, b, StateClosed) // already closed: clears the window silently
	if st := b.Status(); st.FailuresInWindow != 0 {
		t.Fatalf("FailuresInWindow after forced close = %d, want 0", st.FailuresInWindow)
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("closed-to-closed reset reported %v", got)
	}
	record(t, b, errBoom)
	wantState(t, b, StateClosed) // the two earlier failures were forgotten
	mustForce(t, b, StateOpen)
	if got := b.Status().RetryAfter; got != 5*time.Second {
		t.Fatalf("forced open after reset lasts %s, want 5s", got)
	}
}

func mustForce(t *testing.T, b *Breaker, state string) {
	t.Helper()
	if err := b.ForceState(state); err != nil {
		t.Fatal(err)
	}
}

func equalTransitions(a, b []transition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// syncBuffer is a bytes.Buffer safe for a logger used from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.buf.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestBreakerLogsTransitions(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	obs := &recorder{}
	b, mock := newMockBreaker(t, testBreakerConfig(), WithLogger(logger), WithObserver(obs))
	trip(t, b)
	mock.Add(5 * time.Second)
	record(t, b, nil)
	mustForce(t, b, StateOpen)

	want := []struct {
		level, from, to string
		forced          bool
	}{
		{"WARN", StateClosed, StateOpen, false},
		{"INFO", StateOpen, StateHalfOpen, false},
		{"INFO", StateHalfOpen, StateClosed, false},
		{"WARN", StateClosed, StateOpen, true},
	}
	lines := buf.lines(t)
	if len(lines) != len(want) {
		t.Fatalf("got %d log lines, want %d: %v", len(lines), len(want), lines)
	}
	for i, w := range want {
		l := lines[i]
		if l["level"] != w.level || l["breaker"] != "getUsers" || l["from"] != w.from || l["to"] != w.to || l["forced"] != w.forced {
			t.Errorf("line %d = %v, want %+v", i, l, w)
		}
	}
	if got := obs.transitions(); len(got) != len(want) || got[0] != "getUsers:closed>open" {
		t.Fatalf("observer transitions = %v", got)
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*BreakerConfig)
		want string
	}{
		{"defaults", func(*BreakerConfig) {}, ""},
		{"failures", func(c *BreakerConfig) { c.Failures = 0 }, "breaker.failures: 0 must be at least 1"},
		{"window", func(c *BreakerConfig) { c.Window = 0 }, "breaker.window: 0s must be positive"},
		{"open_timeout", func(c *BreakerConfig) { c.OpenTimeout = -time.Second }, "breaker.open_timeout: -1s must be positive"},
		{"max_open_timeout", func(c *BreakerConfig) { c.MaxOpenTimeout = time.Second }, "breaker.max_open_timeout: 1s must be at least open_timeout (5s)"},
		{"half_open_probes", func(c *BreakerConfig) { c.HalfOpenProbes = 0 }, "breaker.half_open_probes: 0 must be at least 1"},
		{"half_open_successes", func(c *BreakerConfig) { c.HalfOpenSuccesses = -2 }, "breaker.half_open_successes: -2 must be at least 1"},
		{"failure_ratio", func(c *BreakerConfig) { c.FailureRatio = 1.5 }, "breaker.failure_ratio: 1.5 is not in [0,1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultBreakerConfig()
			tc.mut(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
