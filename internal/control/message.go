// Package control is the vocabulary the supervisor and its workers share over
// the control socketpair: newline-delimited JSON messages, one per line, the
// statistics a worker reports, the cluster view the supervisor aggregates,
// and the worker's end of the channel.
//
// The supervisor's first message is always TypeConfig. After that either side
// may send at any time; requests that expect an answer carry an ID that the
// answer repeats:
//
//	worker → supervisor          supervisor → worker
//	ready (Stats)                config (first message)
//	heartbeat (Stats)            invalidate (ID, Keys) → applied (ID)
//	breaker (Breaker change)     breaker (forced change)
//	invalidate (ID, Keys) → ack  purge
//	cluster (ID) → cluster       drain
//	stats (ID, answers snapshot) snapshot (ID) → stats
//	share (Shared)               share (Shared)
//	entries (ID, answers export) export (ID, Export) → entries…
//	                             entries (a warm start, relayed)
//
// Warm starts are described in warm.go.
package control

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// Message types. The direction of each is in the package documentation.
const (
	TypeConfig     = "config"
	TypeReady      = "ready"
	TypeHeartbeat  = "heartbeat"
	TypeBreaker    = "breaker"
	TypeInvalidate = "invalidate"
	TypeApplied    = "applied"
	TypeAck        = "ack"
	TypeSnapshot   = "snapshot"
	TypeStats      = "stats"
	TypePurge      = "purge"
	TypeDrain      = "drain"
	TypeCluster    = "cluster"
	TypeShare      = "share"
	TypeProfile    = "profile"
)

// Breaker states as workers report them and the supervisor forces them.
const (
	StateClosed   = "closed"
	StateOpen     = "open"
	StateHalfOpen = "half-open"
)

// Message is one line on the control channel. Type says which of the other
// fields are meaningful; unused ones are omitted from the JSON.
type Message struct {
	Type string `json:"type"`
	// ID pairs a request with its answer (invalidate/applied,
	// invalidate/ack, snapshot/stats, cluster/cluster).
	ID uint64 `json:"id,omitempty"`

	// Slot, Generation and Config make up TypeConfig; Warm is set on it
	// when a warm start's entries follow.
	Slot       int             `json:"slot,omitempty"`
	Generation int             `json:"generation,omitempty"`
	Config     json.RawMessage `json:"config,omitempty"`
	Warm       bool            `json:"warm,omitempty"`

	// Keys are the cache keys of an invalidate.
	Keys []string `json:"keys,omitempty"`
	// Breaker is the change of a breaker message.
	Breaker *BreakerChange `json:"breaker,omitempty"`
	// Stats come with ready, heartbeat and stats.
	Stats *Stats `json:"stats,omitempty"`
	// Metrics is the Prometheus text exposition that comes with stats.
	Metrics string `json:"metrics,omitempty"`
	// Cluster is the supervisor's answer to a cluster request.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// Shared are cache entries of a share: answers that never change (an
	// event), fetched by one worker and offered to the others.
	Shared []SharedEntry `json:"shared,omitempty"`
	// Export bounds an export; Entries, Done and Transfer make up entries.
	Export   *ExportRequest `json:"export,omitempty"`
	Entries  []CacheEntry   `json:"entries,omitempty"`
	Done     bool           `json:"done,omitempty"`
	Transfer *Transfer      `json:"transfer,omitempty"`
	// Profile asks for a pprof profile; Data is the profile in the answer.
	Profile *ProfileRequest `json:"profile,omitempty"`
	Data    []byte          `json:"data,omitempty"`
	// Error, when set on an answer, says why the request failed.
	Error string `json:"error,omitempty"`
}

// ProfileRequest names a runtime/pprof profile ("cpu" for a CPU profile
// of Seconds, or a named one such as "heap" or "goroutine").
type ProfileRequest struct {
	Kind    string `json:"kind"`
	Seconds int    `json:"seconds,omitempty"`
}

// SharedEntry is one cache entry a worker offers its siblings.
type SharedEntry struct {
	Key  string `json:"key"`
	Body []byte `json:"body"`
}

// BreakerChange is a breaker's state change. From the worker it reports a
// local transition; from the supervisor it forces To (From is empty). Forced
// is true for a change the supervisor imposed, which the worker reports with
// Forced set so that it is not propagated again.
type BreakerChange struct {
	Name   string `json:"name"`
	From   string `json:"from,omitempty"`
	To     string `json:"to"`
	Forced bool   `json:"forced,omitempty"`
}

// Stats is what a worker counts, reported in every heartbeat and snapshot.
// Counters are totals since the worker started.
type Stats struct {
	Requests uint64 `json:"requests"`
	// Errors counts the answers with a 5xx status.
	Errors            uint64     `json:"errors"`
	Cache             CacheStats `json:"cache"`
	Breakers          []Breaker  `json:"breakers"`
	LimiterRejections uint64     `json:"limiter_rejections"`
	Inflight          int64      `json:"inflight"`
	Process           Process    `json:"process"`
	// AccessLogDropped counts the access lines failed writes dropped.
	AccessLogDropped uint64 `json:"access_log_dropped,omitempty"`
}

// Process is a worker process's resources and its recent latency.
type Process struct {
	RSSBytes   uint64  `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// MemoryLimit is the Go memory limit (GOMEMLIMIT); 0 when there is none.
	MemoryLimit int64 `json:"memory_limit,omitempty"`
	// Latency is of the requests answered in the last minute.
	Latency Latency `json:"latency"`
}

// Latency sums up the answer times of a window of requests.
type Latency struct {
	Count uint64  `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
}

// CacheStats are a worker's cache counters; Entries is the current size.
type CacheStats struct {
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Stale     uint64 `json:"stale"`
	Evictions uint64 `json:"evictions"`
	Entries   uint64 `json:"entries"`
}

// Breaker is one circuit breaker's state in one worker.
type Breaker struct {
	Name             string `json:"name"`
	State            string `json:"state"`
	FailuresInWindow int    `json:"failures_in_window"`
	Opens            uint64 `json:"opens"`
	// RetryAfterMs is how long until an open breaker half-opens; 0 otherwise.
	RetryAfterMs int64 `json:"retry_after_ms"`
}

// ClusterStatus is every worker's breakers as of its latest heartbeat, and a
// per-breaker summary across workers.
type ClusterStatus struct {
	Workers []WorkerBreakers `json:"workers"`
	Summary []BreakerSummary `json:"summary"`
}

// WorkerBreakers is one worker's entry in a ClusterStatus. State is the
// worker's lifecycle state as the supervisor sees it ("starting", "ready",
// "draining").
type WorkerBreakers struct {
	Slot          int       `json:"slot"`
	PID           int       `json:"pid"`
	State         string    `json:"state"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Breakers      []Breaker `json:"breakers"`
}

// BreakerSummary counts, for one breaker name, the workers having it in
// each state.
type BreakerSummary struct {
	Name     string `json:"name"`
	Open     int    `json:"open"`
	HalfOpen int    `json:"half_open"`
	Closed   int    `json:"closed"`
}

// Summarize counts each breaker's states across workers, sorted by name.
// A state other than open or half-open counts as closed.
func Summarize(workers []WorkerBreakers) []BreakerSummary {
	idx := map[string]int{}
	out := []BreakerSummary{}
	for _, w := range workers {
		for _, b := range w.Breakers {
			i, ok := idx[b.Name]
			if !ok {
				i = len(out)
				idx[b.Name] = i
				out = append(out, BreakerSummary{Name: b.Name})
			}
			switch b.State {
			case StateOpen:
				out[i].Open++
			case StateHalfOpen:
				out[i].HalfOpen++
			default:
				out[i].Closed++
			}
		}
	}
	slices.SortFunc(out, func(a, b BreakerSummary) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// writeTimeout bounds one Send, so a stopped peer with a full socket buffer
// cannot block the sender forever.
const writeTimeout = 5 * time.Second

// Codec reads and writes Messages on a connection. Send is safe for
// concurrent use; Receive must be called from one goroutine at a time.
type Codec struct {
	conn net.Conn
	r    *bufio.Reader
	// partial is the start of a line a Receive was cut short in (by a read
	// deadline); the next Receive continues it.
	partial []byte

	mu sync.Mutex // serialises writes so lines never interleave
}

// NewCodec wraps conn.
func NewCodec(conn net.Conn) *Codec {
	return &Codec{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
}

// ResumeCodec wraps conn, whose reading another Codec left in the middle
// of a line: pending is that Codec's Pending.
func ResumeCodec(conn net.Conn, pending []byte) *Codec {
	c := NewCodec(conn)
	c.partial = pending
	return c
}

// Pending is what was read of a line a Receive was cut short in; it is
// what ResumeCodec continues from.
func (c *Codec) Pending() []byte { return c.partial }

// Send writes m as one line. It fails if the line cannot be written within
// a few seconds.
func (c *Codec) Send(m Message) error {
	line, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("control: encode %s: %w", m.Type, err)
	}
	line = append(line, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(line); err != nil {
		return fmt.Errorf("control: send %s: %w", m.Type, err)
	}
	return nil
}

// Receive reads the next message. At the end of the stream it returns
// io.EOF unwrapped, so callers can compare it directly.
func (c *Codec) Receive() (Message, error) {
	line, err := c.r.ReadBytes('\n')
	if len(c.partial) > 0 {
		line = append(c.partial, line...)
		c.partial = nil
	}
	if err != nil {
		// Kept for the next Receive after a deadline; at the end of the
		// stream, a partial last line means the peer died mid-write.
		c.partial = line
		return Message{}, err
	}
	var m Message
	if err := json.Unmarshal(line, &m); err != nil {
		return Message{}, fmt.Errorf("control: decode %q: %w", truncate(line), err)
	}
	return m, nil
}

// SetReadDeadline sets the deadline of pending and future Receive calls.
func (c *Codec) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// Close closes the connection; a blocked Receive returns an error.
func (c *Codec) Close() error { return c.conn.Close() }

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
