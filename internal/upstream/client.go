// Package upstream is the HTTP client amexd workers use to call the upstream
// Event API. Every upstream operation has its own circuit breaker; reads are
// retried with exponential backoff and full jitter, writes (addEvent) only
// when the upstream said it stored nothing, because it is not idempotent.
// Records come back as the upstream's JSON, compacted, never re-encoded.
// Faults come back as typed errors the worker maps to HTTP answers:
// ErrNotFound (a 404, or the empty 200 the Event API sends for an unknown
// key), *RejectedError and *UnavailableError.
package upstream

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/benbjohnson/clock"
)

// Upstream operations; each names its breaker and its metrics.
const (
	OpGetUsers     = "getUsers"
	OpGetUserByID  = "getUserById"
	OpGetEvents    = "getEvents"
	OpGetEventByID = "getEventById"
	OpAddEvent     = "addEvent"
)

// allOps lists the operations in the order Breakers reports them.
func allOps() []string {
	return []string{OpGetUsers, OpGetUserByID, OpGetEvents, OpGetEventByID, OpAddEvent}
}

// Outcomes reported to Observer.Call, one per attempt (open: none was made).
const (
	OutcomeOK       = "ok"        // a 2xx with a well-formed body
	OutcomeNotFound = "not_found" // a 404, or an empty 200 to a by-key read
	OutcomeRejected = "rejected"  // any other 4xx but 429
	OutcomeError    = "error"     // transport error, 5xx, 429 or a bad body
	OutcomeTimeout  = "timeout"   // the per-attempt timeout expired
	OutcomeCanceled = "canceled"  // the caller's context ended first
	OutcomeOpen     = "open"      // the breaker refused the attempt
)

// maxBody bounds an upstream response body; a larger one is a fault.
const maxBody = 8 << 20

// defaultRetryAfter is the RetryAfter of an UnavailableError whose breaker
// is not open: long enough for a flaky upstream to recover, short enough
// not to keep clients away.
const defaultRetryAfter = time.Second

// ErrNotFound is returned (wrapped) when the upstream answers 404, or 200
// with an empty body or null to a by-key read.
var ErrNotFound = errors.New("not found upstream")

// UnavailableError means the upstream could not give an answer: the breaker
// is open, or attempts or the retry budget ran out on transport errors,
// timeouts, 5xx, 429 or malformed bodies.
type UnavailableError struct {
	Op string
	// RetryAfter is the breaker's time left when it is open, else 1s.
	RetryAfter time.Duration
	// Err is the cause; errors.Is(err, ErrBreakerOpen) holds when the
	// breaker is open.
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("upstream %s unavailable: %v", e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// RejectedError means the upstream refused the request with a 4xx other than
// 404 and 429, e.g. a validation failure. Retrying will not help.
type RejectedError struct {
	Op      string
	Status  int
	Message string // the upstream's error message, or its body's start
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("upstream %s rejected the request (%d): %s", e.Op, e.Status, e.Message)
}

// Observer receives metrics: one Call per attempt, one Transition per
// breaker state change. It must be safe for concurrent use and fast.
type Observer interface {
	Call(op, outcome string, d time.Duration)
	Transition(op, from, to string)
}

// Option configures a Client or a Breaker.
type Option func(*options)

type options struct {
	logger        *slog.Logger
	clock         clock.Clock
	observer      Observer
	onStateChange StateChangeFunc
}

func newOptions(opts []Option) options {
	o := options{logger: slog.New(slog.DiscardHandler), clock: clock.New()}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLogger logs breaker state changes to l; by default nothing is logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock makes breakers, retry waits and per-attempt timeouts use c, so
// tests can drive time with clock.NewMock().
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }

// WithObserver reports calls and breaker transitions to obs.
func WithObserver(obs Observer) Option { return func(o *options) { o.observer = obs } }

// WithOnStateChange calls fn on every breaker state change, synchronously.
func WithOnStateChange(fn StateChangeFunc) Option { return func(o *options) { o.onStateChange = fn } }

// Config configures the client. It sits under the `upstream:` key.
type Config struct {
	// URL is the Event API's base URL. Empty means the embedded simulator;
	// the caller must then fill in its address before calling New.
	URL string `yaml:"url"`
	// Timeout bounds each attempt, response body included.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is the maximum number of attempts for idempotent GETs.
	Retries int `yaml:"retries"`
	// RetryBase and RetryMax bound the exponential backoff between attempts
	// (full jitter: a wait is uniform in [0, min(RetryMax, RetryBase·2^n))).
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
	// WriteRetries is the maximum number of attempts for addEvent.
	WriteRetries int `yaml:"write_retries"`
	// RetryBudget bounds the time from a call's start within which a retry
	// may start; it does not cut short an attempt in flight.
	RetryBudget time.Duration `yaml:"retry_budget"`
	// MaxConnsPerHost caps connections to the upstream, idle ones included.
	MaxConnsPerHost int `yaml:"max_conns_per_host"`
	// IdleConnTimeout closes keep-alive connections idle this long.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
}

// DefaultConfig returns the defaults (URL empty: the embedded simulator).
func DefaultConfig() Config {
	return Config{
		Timeout:         2 * time.Second,
		Retries:         3,
		RetryBase:       50 * time.Millisecond,
		RetryMax:        time.Second,
		WriteRetries:    3,
		RetryBudget:     1500 * time.Millisecond,
		MaxConnsPerHost: 256,
		IdleConnTimeout: 90 * time.Second,
	}
}

// Validate reports every invalid field, naming it with its full key. An
// empty URL is valid here (the embedded simulator).
func (c Config) Validate() error {
	var errs []error
	if c.URL != "" {
		if err := checkBaseURL(c.URL); err != nil {
			errs = append(errs, fmt.Errorf("upstream.url: %q %w", c.URL, err))
		}
	}
	positive := []struct {
		key string
		d   time.Duration
	}{
		{"timeout", c.Timeout}, {"retry_base", c.RetryBase}, {"idle_conn_timeout", c.IdleConnTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			errs = append(errs, fmt.Errorf("upstream.%s: %s must be positive", p.key, p.d))
		}
	}
	if c.RetryMax < c.RetryBase {
		errs = append(errs, fmt.Errorf("upstream.retry_max: %s must be at least retry_base (%s)", c.RetryMax, c.RetryBase))
	}
	if c.RetryBudget < 0 {
		errs = append(errs, fmt.Errorf("upstream.retry_budget: %s must not be negative", c.RetryBudget))
	}
	atLeastOne := []struct {
		key string
		n   int
	}{
		{"retries", c.Retries}, {"write_retries", c.WriteRetries}, {"max_conns_per_host", c.MaxConnsPerHost},
	}
	for _, p := range atLeastOne {
		if p.n < 1 {
			errs = append(errs, fmt.Errorf("upstream.%s: %d must be at least 1", p.key, p.n))
		}
	}
	return errors.Join(errs...)
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("is not a URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an absolute http or https URL")
	case u.Host == "":
		return errors.New("has no host")
	}
	return nil
}

// Client calls the upstream Event API. It is safe for concurrent use.
type Client struct {
	cfg      Config
	base     string // URL without a trailing slash
	hostport string // for Reachable
	http     *http.Client
	opts     options
	breakers map[string]*Breaker
}

// New returns a client for cfg.URL with one breaker per operation, all
// configured by bcfg. cfg.URL must be set.
func New(cfg Config, bcfg BreakerConfig, opts ...Option) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("new upstream client: upstream.url is empty; set it to the simulator's address")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new upstream client: %w", err)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("new upstream client: %w", err)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	c := &Client{
		cfg:      cfg,
		base:     strings.TrimSuffix(cfg.URL, "/"),
		hostport: hostport,
		opts:     newOptions(opts),
		breakers: make(map[string]*Breaker),
	}
	for _, op := range allOps() {
		b, err := NewBreaker(op, bcfg, opts...)
		if err != nil {
			return nil, fmt.Errorf("new upstream client: %w", err)
		}
		c.breakers[op] = b
	}
	c.http = &http.Client{
		Transport: newTransport(cfg),
		// The Event API never redirects; a 3xx is a fault, not a detour.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// newTransport returns a pooled transport sized so that every worker
// goroutine can hold a keep-alive connection to the one upstream host.
func newTransport(cfg Config) *http.Transport {
	dialer := &net.Dialer{Timeout: min(cfg.Timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	return &http.Transport{
		// The upstream is a neighbour service; a proxy from the
		// environment would only add a hop and a failure mode.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          cfg.MaxConnsPerHost,
		MaxIdleConnsPerHost:   cfg.MaxConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// Close releases idle connections. The client stays usable.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Breaker returns the breaker of op (one of the Op constants), or nil.
func (c *Client) Breaker(op string) *Breaker { return c.breakers[op] }

// Breakers returns the status of every breaker, in a fixed order.
func (c *Client) Breakers() []BreakerStatus {
	var out []BreakerStatus
	for _, op := range allOps() {
		out = append(out, c.breakers[op].Status())
	}
	return out
}

// Reachable dials the upstream host over TCP and hangs up, for readiness.
// It bypasses the breakers.
func (c *Client) Reachable(ctx context.Context) error {
	d := net.Dialer{Timeout: c.cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", c.hostport)
	if err != nil {
		return fmt.Errorf("upstream reachable: %w", err)
	}
	return conn.Close()
}

// Users returns getUsers' answer, a JSON array of user records, compacted
// and otherwise as the upstream sent it.
func (c *Client) Users(ctx context.Context) ([]byte, error) {
	return c.read(ctx, OpGetUsers, eventapi.PathUsers, decodeList)
}

// User returns the record of the user stored under key, as the upstream
// sent it; ErrNotFound if there is none (a 404, or the empty 200 or null
// the Event API answers for an unknown key).
func (c *Client) User(ctx context.Context, key string) ([]byte, error) {
	return c.read(ctx, OpGetUserByID, eventapi.PathUserByID+url.PathEscape(key), decodeRecord)
}

// Events returns getEvents' answer, a JSON array of event records.
func (c *Client) Events(ctx context.Context) ([]byte, error) {
	return c.read(ctx, OpGetEvents, eventapi.PathEvents, decodeList)
}

// Event returns the record of the event stored under key ("event-1", or
// the id its writer chose); ErrNotFound if there is none.
func (c *Client) Event(ctx context.Context, key string) ([]byte, error) {
	return c.read(ctx, OpGetEventByID, eventapi.PathEventByID+url.PathEscape(key), decodeRecord)
}

func (c *Client) read(ctx context.Context, op, path string, decode func([]byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	err := c.call(ctx, request{op: op, method: http.MethodGet, path: path, attempts: c.cfg.Retries},
		func(body []byte) (err error) { out, err = decode(body); return err })
	return out, err
}

// AddEvent sends record, a JSON object holding the event's id, to addEvent,
// which stores it under that id and appends the id to its user's events.
// Success is a 2xx whose body says "success": true; the Event API sends no
// record back. The upstream is not idempotent (a repeated call appends the
// id to the user's events once more), so only answers that say nothing was
// stored are retried: a 503 or 429, or a connection that was never made.
func (c *Client) AddEvent(ctx context.Context, record []byte) error {
	if _, ok := eventapi.KeyOf(idOf(record)); !ok {
		return errors.New("upstream addEvent: the record has no id")
	}
	return c.call(ctx, request{op: OpAddEvent, method: http.MethodPost, path: eventapi.PathAddEvent, body: record, attempts: c.cfg.WriteRetries, created: true, write: true},
		func(body []byte) error {
			var out eventapi.Outcome
			if err := json.Unmarshal(body, &out); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			if !out.Success {
				return errors.New(`the answer does not say "success": true`)
			}
			return nil
		})
}

func idOf(record []byte) json.RawMessage {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(record, &v) != nil {
		return nil
	}
	return v.ID
}

// NewEventID returns a fresh event id: a number uniform in [2^52, 2^53)
// from crypto/rand. It needs no coordination between processes or
// machines, its 52 random bits make a collision negligible, it survives a
// trip through a JavaScript number, and being a number, as the Node
// backend's ids were, its key is the same digits a client types in
// /events/{id}.
func NewEventID() int64 {
	var b [8]byte
	// crypto/rand.Read never fails; it crashes the program instead.
	_, _ = crand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])&(1<<52-1) | 1<<52)
}

// request describes one upstream call.
type request struct {
	op       string
	method   string
	path     string // escaped
	body     []byte
	attempts int
	created  bool // 201 is success too
	write    bool // retried only when nothing was stored
}

// errBadResponse marks answers that are not what the API sends: a bad
// body, an unexpected status. They count as upstream faults.
var errBadResponse = errors.New("bad response")

// statusError is a 5xx or 429 answer.
type statusError struct {
	status  int
	message string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.message) }

// call runs r through the op's breaker, retrying faults while attempts,
// the retry budget and the breaker allow, and decodes a success with decode.
func (c *Client) call(ctx context.Context, r request, decode func([]byte) error) error {
	br := c.breakers[r.op]
	start := c.opts.clock.Now()
	var last error
	for n := 1; ; n++ {
		retry, err := c.attempt(ctx, br, r, decode)
		if err == nil {
			return nil
		}
		var oe *OpenError
		if errors.As(err, &oe) {
			return &UnavailableError{Op: r.op, RetryAfter: oe.RetryAfter, Err: joinLast(err, last)}
		}
		if !retry {
			return err
		}
		if r.write && !notStored(err) {
			return &UnavailableError{Op: r.op, RetryAfter: defaultRetryAfter, Err: fmt.Errorf("not retried, the upstream may have stored it: %w", err)}
		}
		last = err
		// This attempt may have tripped the breaker: stop now rather
		// than sleep only to be refused.
		if oe := br.openError(); oe != nil {
			return &UnavailableError{Op: r.op, RetryAfter: oe.RetryAfter, Err: joinLast(oe, last)}
		}
		if n >= r.attempts {
			return &UnavailableError{Op: r.op, RetryAfter: defaultRetryAfter, Err: fmt.Errorf("%d attempts failed, last: %w", n, last)}
		}
		wait := c.backoff(n)
		if c.opts.clock.Since(start)+wait >= c.cfg.RetryBudget {
			return &UnavailableError{Op: r.op, RetryAfter: defaultRetryAfter, Err: fmt.Errorf("retry budget %s spent after %d attempts, last: %w", c.cfg.RetryBudget, n, last)}
		}
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("upstream %s: waiting to retry: %w", r.op, err)
		}
	}
}

// notStored reports whether a failed write attempt certainly stored
// nothing: the upstream said so (503, 429), or no connection was made.
func notStored(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.status == http.StatusServiceUnavailable || se.status == http.StatusTooManyRequests
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func joinLast(err, last error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("%w; last attempt: %w", err, last)
}

// backoff returns the wait after failed attempt n (1-based): full jitter
// over an exponential ceiling.
func (c *Client) backoff(n int) time.Duration {
	ceiling := c.cfg.RetryMax
	if n < 32 {
		ceiling = min(ceiling, c.cfg.RetryBase<<(n-1))
	}
	return mrand.N(ceiling + 1)
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := c.opts.clock.Timer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// attempt makes one exchange through br. retry reports whether the error is
// an upstream fault another attempt might get past; errors that end the call
// at once come in their final form.
func (c *Client) attempt(ctx context.Context, br *Breaker, r request, decode func([]byte) error) (retry bool, err error) {
	done, err := br.Allow(ctx)
	if err != nil {
		c.observe(r.op, OutcomeOpen, 0)
		return false, err
	}
	start := c.opts.clock.Now()
	status, body, err := c.exchange(ctx, r)
	elapsed := c.opts.clock.Since(start)

	outcome := OutcomeError
	defer func() { c.observe(r.op, outcome, elapsed) }()
	switch {
	case err != nil && ctx.Err() != nil:
		done(err) // not counted: ctx is done
		outcome = OutcomeCanceled
		return false, fmt.Errorf("upstream %s: %w", r.op, err)
	case err != nil:
		if errors.Is(err, context.DeadlineExceeded) {
			outcome = OutcomeTimeout
		}
		done(err)
		return true, err
	case status == http.StatusOK || (r.created && status == http.StatusCreated):
		err := decode(body)
		if errors.Is(err, errAbsent) {
			done(nil) // an answer: the upstream is healthy
			outcome = OutcomeNotFound
			return false, fmt.Errorf("upstream %s: %w", r.op, ErrNotFound)
		}
		if err != nil {
			err = fmt.Errorf("%w: status %d: %w", errBadResponse, status, err)
			done(err)
			return true, err
		}
		done(nil)
		outcome = OutcomeOK
		return false, nil
	case status == http.StatusNotFound:
		done(nil) // an answer: the upstream is healthy
		outcome = OutcomeNotFound
		return false, fmt.Errorf("upstream %s: %w", r.op, ErrNotFound)
	case status >= 500 || status == http.StatusTooManyRequests:
		err := &statusError{status: status, message: errorMessage(body)}
		done(err)
		return true, err
	case status >= 400:
		done(nil) // an answer: the upstream is healthy
		outcome = OutcomeRejected
		return false, &RejectedError{Op: r.op, Status: status, Message: errorMessage(body)}
	default:
		err := fmt.Errorf("%w: unexpected status %d", errBadResponse, status)
		done(err)
		return true, err
	}
}

// exchange sends r and reads the whole (bounded) answer within one
// per-attempt timeout.
func (c *Client) exchange(ctx context.Context, r request) (status int, body []byte, err error) {
	actx, cancel := c.opts.clock.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, c.base+r.path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, timeoutCause(actx, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("read body: %w", timeoutCause(actx, err))
	}
	if len(body) > maxBody {
		return 0, nil, fmt.Errorf("%w: body exceeds %d bytes", errBadResponse, maxBody)
	}
	return resp.StatusCode, body, nil
}

// timeoutCause makes sure an error caused by the attempt's deadline matches
// context.DeadlineExceeded; a body read cut short by it may not say so.
func timeoutCause(actx context.Context, err error) error {
	if actx.Err() == context.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

func (c *Client) observe(op, outcome string, d time.Duration) {
	if c.opts.observer != nil {
		c.opts.observer.Call(op, outcome, d)
	}
}

// errAbsent is what a by-key read decodes from the Event API's answer for
// an unknown key: 200 with an empty body (or null).
var errAbsent = errors.New("no record")

// decodeList checks that body is one JSON array of objects and returns it
// compacted.
func decodeList(body []byte) ([]byte, error) {
	var items []json.RawMessage
	if err := decodeOne(body, &items); err != nil {
		return nil, err
	}
	if items == nil {
		return nil, errors.New("decode: null where a list was expected")
	}
	for i, it := range items {
		if it[0] != '{' {
			return nil, fmt.Errorf("decode: item %d is not an object", i)
		}
	}
	return compact(body)
}

// decodeRecord checks that body is one JSON object and returns it
// compacted; an empty body or null is errAbsent.
func decodeRecord(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, errAbsent
	}
	var rec map[string]json.RawMessage
	if err := decodeOne(trimmed, &rec); err != nil {
		return nil, err
	}
	return compact(trimmed)
}

// decodeOne fills v from exactly one JSON value.
func decodeOne(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode: trailing data after the JSON value")
	}
	return nil
}

func compact(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(body))
	if err := json.Compact(&buf, body); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return buf.Bytes(), nil
}

// errorMessage extracts the message from an upstream error body.
func errorMessage(body []byte) string {
	var e eventapi.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	const maxLen = 200
	s := strings.TrimSpace(string(body))
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
