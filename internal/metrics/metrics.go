// Package metrics defines the Prometheus series a worker exports: requests,
// cache, breakers, the rate limiter and upstream calls. The supervisor
// collects each worker's exposition and relabels it with the worker's slot.
package metrics

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// CacheStats is what the cache reports for its series.
type CacheStats struct {
	Hits, Misses, Stale, Evictions, Entries uint64
}

// Worker holds one worker process's series in their own registry.
type Worker struct {
	registry          *prometheus.Registry
	requests          *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	limiterRejections *prometheus.CounterVec
	upstreamCalls     *prometheus.CounterVec
	upstreamLatency   *prometheus.HistogramVec
	breakerState      *prometheus.GaugeVec
	breakerChanges    *prometheus.CounterVec
	warmEntries       *prometheus.CounterVec
}

// NewWorker registers a worker's series; cache is read at every scrape.
func NewWorker(cache func() CacheStats) *Worker {
	w := &Worker{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_http_requests_total", Help: "HTTP requests answered, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amexd_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		limiterRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_ratelimit_rejections_total", Help: "Requests answered 429 by the rate limiter, by limit.",
		}, []string{"limit"}),
		upstreamCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_upstream_calls_total", Help: "Calls to the upstream Event API, by operation and outcome.",
		}, []string{"op", "outcome"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amexd_upstream_call_duration_seconds",
			Help:    "Duration of upstream calls, by operation and outcome.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, .75, 1, 2, 5},
		}, []string{"op", "outcome"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "amexd_breaker_state", Help: "Circuit breaker state per upstream operation: 0 closed, 1 half-open, 2 open.",
		}, []string{"breaker"}),
		breakerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_breaker_transitions_total", Help: "Circuit breaker state changes, by breaker and new state.",
		}, []string{"breaker", "from", "to"}),
		warmEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amexd_warm_start_entries_total",
			Help: "Cache entries a new worker received from a running one, by outcome: stored, superseded (invalidated meanwhile), refused.",
		}, []string{"outcome"}),
	}
	cacheCounter := func(name, help string, pick func(CacheStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(pick(cache())) })
	}
	w.registry.MustRegister(
		w.requests, w.duration, w.limiterRejections, w.upstreamCalls, w.upstreamLatency,
		w.breakerState, w.breakerChanges, w.warmEntries,
		cacheCounter("amexd_cache_hits_total", "Cache lookups answered fresh.", func(s CacheStats) uint64 { return s.Hits }),
		cacheCounter("amexd_cache_misses_total", "Cache lookups that called the upstream.", func(s CacheStats) uint64 { return s.Misses }),
		cacheCounter("amexd_cache_stale_total", "Stale entries served because the upstream failed.", func(s CacheStats) uint64 { return s.Stale }),
		cacheCounter("amexd_cache_evictions_total", "Entries evicted for space or age.", func(s CacheStats) uint64 { return s.Evictions }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "amexd_cache_entries", Help: "Entries in the cache."},
			func() float64 { return float64(cache().Entries) }),
	)
	return w
}

// Request records one answered request.
func (w *Worker) Request(route, method string, code int, d time.Duration) {
	w.requests.WithLabelValues(route, method, codeLabel(code)).Inc()
	w.duration.WithLabelValues(route, method).Observe(d.Seconds())
}

// Route is one route and method's request series, resolved once, so that
// an answer does not hash its labels to find them. Each series is resolved
// at its first answer, so a route nobody asked for exports none, as with
// Request.
type Route struct {
	requests      *prometheus.CounterVec
	durations     *prometheus.HistogramVec
	route, method string
	duration      atomic.Pointer[prometheus.Observer]
	codes         [len(codeLabels)]atomic.Pointer[prometheus.Counter]
}

// Route returns the series of route and method, for a caller that keeps
// them; Route.Request records into the same series as Request.
func (w *Worker) Route(route, method string) *Route {
	return &Route{requests: w.requests, durations: w.duration, route: route, method: method}
}

// Request records one answered request.
func (r *Route) Request(code int, d time.Duration) {
	r.counter(code).Inc()
	r.observer().Observe(d.Seconds())
}

func (r *Route) observer() prometheus.Observer {
	if o := r.duration.Load(); o != nil {
		return *o
	}
	// Two first answers may both resolve it: the vector gives both the
	// same series.
	o := r.durations.WithLabelValues(r.route, r.method)
	r.duration.Store(&o)
	return o
}

func (r *Route) counter(code int) prometheus.Counter {
	if code < 0 || code >= len(r.codes) {
		return r.requests.WithLabelValues(r.route, r.method, codeLabel(code))
	}
	if c := r.codes[code].Load(); c != nil {
		return *c
	}
	c := r.requests.WithLabelValues(r.route, r.method, codeLabels[code])
	r.codes[code].Store(&c)
	return c
}

// codeLabels are the status codes' label values, formatted once: a request
// would otherwise format its status (an allocation) to find its counter.
var codeLabels = func() (l [600]string) {
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

func codeLabel(code int) string {
	if code >= 0 && code < len(codeLabels) {
		return codeLabels[code]
	}
	return strconv.Itoa(code)
}

// WarmStart records a batch of a warm start's entries by outcome.
func (w *Worker) WarmStart(stored, superseded, refused int) {
	w.warmEntries.WithLabelValues("stored").Add(float64(stored))
	w.warmEntries.WithLabelValues("superseded").Add(float64(superseded))
	w.warmEntries.WithLabelValues("refused").Add(float64(refused))
}

// Rejected records a request refused by the named limit.
func (w *Worker) Rejected(limit string) { w.limiterRejections.WithLabelValues(limit).Inc() }

// Call records one upstream call.
func (w *Worker) Call(op, outcome string, d time.Duration) {
	w.upstreamCalls.WithLabelValues(op, outcome).Inc()
	w.upstreamLatency.WithLabelValues(op, outcome).Observe(d.Seconds())
}

// Transition records a breaker state change.
func (w *Worker) Transition(op, from, to string) {
	w.breakerChanges.WithLabelValues(op, from, to).Inc()
	w.breakerState.WithLabelValues(op).Set(stateValue(to))
}

// BreakerState sets a breaker's state gauge without counting a change, so
// that every breaker has a series from the worker's first moment.
func (w *Worker) BreakerState(op, state string) {
	w.breakerState.WithLabelValues(op).Set(stateValue(state))
}

func stateValue(state string) float64 {
	switch state {
	case "open":
		return 2
	case "half-open":
		return 1
	}
	return 0
}

// ObserveRedisStore adds the Redis rate-limit store's series, read at every
// scrape: the calls answered by on_redis_error, and whether it applies now.
func (w *Worker) ObserveRedisStore(fallbacks func() uint64, degraded func() bool) {
	w.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "amexd_ratelimit_redis_fallbacks_total",
			Help: "Rate-limit calls answered by ratelimit.on_redis_error because Redis failed or was slower than ratelimit.redis_timeout.",
		}, func() float64 { return float64(fallbacks()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "amexd_ratelimit_redis_degraded",
			Help: "1 while the rate limiter answers by ratelimit.on_redis_error, since its last Redis call failed.",
		}, func() float64 {
			if degraded() {
				return 1
			}
			return 0
		}),
	)
}

// ObserveAccessLog adds the count of access lines dropped by failed
// writes (a full disk), read at every scrape.
func (w *Worker) ObserveAccessLog(dropped func() uint64) {
	w.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "amexd_access_log_dropped_lines_total",
		Help: "Access log lines dropped because writing them failed (a full disk, an unwritable file).",
	}, func() float64 { return float64(dropped()) }))
}

// Registry is the worker's registry, for collectors registered elsewhere.
func (w *Worker) Registry() *prometheus.Registry { return w.registry }

// Exposition renders every series in the Prometheus text format.
func (w *Worker) Exposition() ([]byte, error) {
	families, err := w.registry.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
