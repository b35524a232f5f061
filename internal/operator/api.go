package operator

import (
	"net/http"
	"time"

	"github.com/amexd/amexd/internal/control"
)

// The operator requests. Each answers with its Out type as JSON.
var (
	GetStatus         = Endpoint[None, Status]{Method: http.MethodGet, Path: "/status"}
	GetWorkers        = Endpoint[None, Workers]{Method: http.MethodGet, Path: "/workers"}
	GetBreakers       = Endpoint[None, control.ClusterStatus]{Method: http.MethodGet, Path: "/breakers"}
	GetHealth         = Endpoint[None, Health]{Method: http.MethodGet, Path: "/health", Answers: []int{http.StatusOK, http.StatusServiceUnavailable}}
	PostReload        = Endpoint[None, Reloaded]{Method: http.MethodPost, Path: "/reload"}
	PostUpgrade       = Endpoint[None, Upgraded]{Method: http.MethodPost, Path: "/upgrade"}
	PostBreakersReset = Endpoint[BreakerReset, BreakersReset]{Method: http.MethodPost, Path: "/breakers/reset"}
	PostCachePurge    = Endpoint[None, Purged]{Method: http.MethodPost, Path: "/cache/purge"}
	PostScale         = Endpoint[Scale, Scaled]{Method: http.MethodPost, Path: "/scale"}
)

// PathMetrics answers GET with the Prometheus text format, not JSON.
const PathMetrics = "/metrics"

// PathProfile answers GET ?slot=N&kind=K&seconds=S with one worker's pprof
// profile (gzipped protobuf, as `go tool pprof` reads), not JSON; errors
// are JSON as everywhere.
const PathProfile = "/pprof"

// None is the body of a request that has none.
type None struct{}

// WorkerInfo is one slot's entry in /status and /workers.
type WorkerInfo struct {
	Slot int `json:"slot"`
	PID  int `json:"pid"`
	// State is starting, ready, draining, exited, or down for a slot
	// without a worker.
	State             string             `json:"state"`
	Generation        int                `json:"generation"`
	UptimeSeconds     float64            `json:"uptime_seconds"`
	Restarts          int                `json:"restarts"`
	Degraded          bool               `json:"degraded"`
	LastHeartbeat     time.Time          `json:"last_heartbeat"`
	Requests          uint64             `json:"requests"`
	Inflight          int64              `json:"inflight"`
	Cache             control.CacheStats `json:"cache"`
	LimiterRejections uint64             `json:"limiter_rejections"`
	// QueueDepth and QueueBacklog are the slot socket's accept queue length
	// and limit; -1 when unknown.
	QueueDepth   int64 `json:"queue_depth"`
	QueueBacklog int64 `json:"queue_backlog"`
	// The worker process's figures from its ready message or latest
	// heartbeat: resident
	// memory, CPU time, and the latency of the last minute's requests.
	RSSBytes   uint64  `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	// Errors counts the worker's 5xx answers.
	Errors uint64 `json:"errors"`
	// AccessLogDropped counts the access lines the worker could not write
	// (a full disk).
	AccessLogDropped uint64 `json:"access_log_dropped"`
	// LastReplacement is the slot's latest replacement; nil before one.
	LastReplacement *Replacement `json:"last_replacement,omitempty"`
}

// Replacement is why a slot's worker was replaced: crash, hang, reload,
// requests (max_requests), memory (max_memory) or rollback (a canary).
type Replacement struct {
	Reason string    `json:"reason"`
	PID    int       `json:"pid"`
	At     time.Time `json:"at"`
}

// Scale is the body of POST /scale: the number of workers wanted.
type Scale struct {
	Workers int `json:"workers"`
}

// Scaled is the answer of POST /scale.
type Scaled struct {
	Workers    int   `json:"workers"`
	DurationMs int64 `json:"duration_ms"`
}

// Workers is the answer of GET /workers.
type Workers struct {
	Workers []WorkerInfo `json:"workers"`
}

// Status is the answer of GET /status.
type Status struct {
	PID           int       `json:"pid"`
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Generation    int       `json:"generation"`
	// Execs counts the re-executions of this supervisor process (each
	// upgrade's last step); ExecError is why the last one failed, if it did.
	Execs     int    `json:"execs"`
	ExecError string `json:"exec_error,omitempty"`
	// Listen is the address the slots' sockets are bound to (with the real
	// port when the configuration asked for port 0).
	Listen  string `json:"listen"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
	// Config is the configuration's summary: listen, workers, upstream,
	// ratelimit, ratelimit_store, log.
	Config  map[string]any `json:"config"`
	Workers []WorkerInfo   `json:"workers"`
	// RateLimit describes the shared rate-limit table, when there is one.
	RateLimit *RateLimitStatus `json:"ratelimit,omitempty"`
	// Idempotency describes the Idempotency-Key table, when keys are kept
	// on this machine (every store but redis).
	Idempotency *IdempotencyStatus `json:"idempotency,omitempty"`
}

// IdempotencyStatus is the Idempotency-Key table's part of /status.
type IdempotencyStatus struct {
	MaxKeys int `json:"max_keys"`
	Keys    int `json:"keys"`
	// Evicted counts keys dropped before their TTL ended; more than zero
	// means idempotency.max_keys is too small for the writes seen.
	Evicted uint64 `json:"evicted"`
}

// RateLimitStatus is the shared rate-limit table's part of /status.
type RateLimitStatus struct {
	TableSlots int `json:"table_slots"`
	TableUsed  int `json:"table_used"`
	// TableOverflow counts requests whose client found no slot; more than
	// zero means ratelimit.table_slots is too small for the clients seen.
	TableOverflow uint64 `json:"table_overflow"`
}

// Health is the answer of GET /health.
type Health struct {
	Healthy bool   `json:"healthy"`
	Slots   int    `json:"slots"`
	Serving int    `json:"serving"`
	Reason  string `json:"reason,omitempty"`
}

// StatusCode is 200 when healthy, else 503, so that a probe needs only the
// status line.
func (h Health) StatusCode() int {
	if h.Healthy {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

// Reloaded is the answer of POST /reload.
type Reloaded struct {
	Generation int   `json:"generation"`
	DurationMs int64 `json:"duration_ms"`
}

// Upgraded is the answer of POST /upgrade: every worker runs the new binary
// (Binary, its version Version) and the supervisor, process PID, is about
// to re-execute itself with it; GET /status reports Execs and Version once
// the new image has taken over, or ExecError if the re-execution failed.
type Upgraded struct {
	PID         int    `json:"pid"`
	Binary      string `json:"binary"`
	FromVersion string `json:"from_version"`
	Version     string `json:"version"`
	Generation  int    `json:"generation"`
	Execs       int    `json:"execs"`
	DurationMs  int64  `json:"duration_ms"`
}

// BreakerReset is the body of POST /breakers/reset; an empty Name resets
// every known breaker.
type BreakerReset struct {
	Name string `json:"name,omitempty"`
}

// BreakersReset is the answer of POST /breakers/reset: the breakers reset
// and how many workers were told.
type BreakersReset struct {
	Reset   []string `json:"reset"`
	Workers int      `json:"workers"`
}

// Purged is the answer of POST /cache/purge: how many workers were told,
// and whether the shared tier in Redis (cache.shared: redis) was purged
// first. When it could not be, the answer is an error that says so.
type Purged struct {
	Workers int  `json:"workers"`
	Shared  bool `json:"shared"`
}
