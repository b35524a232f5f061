package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Handler is what a worker does for the supervisor's requests. Serve calls
// Invalidate, ForceBreaker and Purge one at a time, in the order received;
// Stats and Metrics may run concurrently with them.
//
// A Handler may also be an Exporter and an Importer, to take part in warm
// starts, and a Prober, so that its heartbeats prove its request path.
type Handler interface {
	Invalidate(keys []string)
	ForceBreaker(name, state string)
	Purge()
	// Share stores entries a sibling fetched; they never change, so
	// storing them cannot undo an invalidation.
	Share(entries []SharedEntry)
	Stats() Stats
	// Metrics is the Prometheus text exposition of the worker's registry.
	Metrics() []byte
	// Drain stops accepting, finishes in-flight requests, and then the
	// worker exits by itself. Serve calls it in its own goroutine.
	Drain()
}

// Prober is a Handler whose heartbeats wait for a probe: Probe returns once
// the worker answered a request through its HTTP handlers, so a worker
// whose request path is stuck stops beating and is seen as hung.
type Prober interface {
	Probe()
}

// WorkerConfig is the supervisor's first message to a worker. Config is the
// JSON of config.Config, left raw so that this package does not depend on
// the configuration's shape.
type WorkerConfig struct {
	Slot       int
	Generation int
	Config     json.RawMessage
	// Warm is set when the supervisor sends a warm start's entries next.
	Warm bool
}

// ErrClosed is returned by requests made after Serve has stopped.
var ErrClosed = errors.New("control: channel closed")

// Worker is the worker's end of the control channel.
type Worker struct {
	codec *Codec
	log   *slog.Logger
	calls *Requests
}

// NewWorker wraps the worker's end of the control socketpair.
func NewWorker(conn net.Conn, log *slog.Logger) *Worker {
	codec := NewCodec(conn)
	return &Worker{codec: codec, log: log, calls: NewRequests(codec)}
}

// ReadConfig waits for the supervisor's first message, which must be a
// config message.
func (w *Worker) ReadConfig(ctx context.Context) (WorkerConfig, error) {
	stop := context.AfterFunc(ctx, func() { _ = w.codec.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = w.codec.SetReadDeadline(time.Time{})
	}()
	m, err := w.codec.Receive()
	if err != nil {
		if ctx.Err() != nil {
			return WorkerConfig{}, fmt.Errorf("control: read config: %w", ctx.Err())
		}
		return WorkerConfig{}, fmt.Errorf("control: read config: %w", err)
	}
	if m.Type != TypeConfig {
		return WorkerConfig{}, fmt.Errorf("control: first message is %q, want %q", m.Type, TypeConfig)
	}
	return WorkerConfig{Slot: m.Slot, Generation: m.Generation, Config: m.Config, Warm: m.Warm}, nil
}

// Ready tells the supervisor the worker is accepting connections, with its
// figures so far, so that a worker is never listed ready without them while
// its first heartbeat is on the way.
func (w *Worker) Ready(s Stats) error { return w.codec.Send(Message{Type: TypeReady, Stats: &s}) }

// ReportBreaker reports a local breaker transition. forced marks a change
// the supervisor imposed, which the supervisor will not propagate again.
func (w *Worker) ReportBreaker(name, from, to string, forced bool) error {
	return w.codec.Send(Message{Type: TypeBreaker, Breaker: &BreakerChange{Name: name, From: from, To: to, Forced: forced}})
}

// Invalidate asks the supervisor to invalidate keys in every other live
// worker and returns once it acknowledges that they all applied it (the
// supervisor bounds how long it waits for each). The caller invalidates its
// own cache. Serve must be running, because it reads the acknowledgement.
func (w *Worker) Invalidate(ctx context.Context, keys []string) error {
	_, err := w.request(ctx, Message{Type: TypeInvalidate, Keys: keys})
	if err != nil {
		return fmt.Errorf("control: invalidate: %w", err)
	}
	return nil
}

// Cluster asks the supervisor for every worker's breakers. Serve must be
// running, because it reads the answer.
func (w *Worker) Cluster(ctx context.Context) (ClusterStatus, error) {
	m, err := w.request(ctx, Message{Type: TypeCluster})
	if err != nil {
		return ClusterStatus{}, fmt.Errorf("control: cluster status: %w", err)
	}
	if m.Cluster == nil {
		return ClusterStatus{}, errors.New("control: cluster status: empty answer")
	}
	return *m.Cluster, nil
}

func (w *Worker) request(ctx context.Context, m Message) (Message, error) {
	reply, err := w.calls.Do(ctx, m)
	if err != nil {
		return Message{}, err
	}
	if reply.Error != "" {
		return Message{}, errors.New(reply.Error)
	}
	return reply, nil
}

// Serve reads the supervisor's messages and calls h for them, and sends a
// heartbeat with h.Stats every heartbeat interval. It returns nil when ctx
// ends, and an error wrapping io.EOF when the supervisor closed the channel
// (it is gone: the worker should drain). Requests pending when Serve returns
// fail with ErrClosed.
func (w *Worker) Serve(ctx context.Context, h Handler, heartbeat time.Duration) error {
	defer w.calls.Close()
	stop := context.AfterFunc(ctx, func() { _ = w.codec.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	beatCtx, cancelBeats := context.WithCancel(ctx)
	defer cancelBeats()
	wg.Go(func() { w.heartbeats(beatCtx, h, heartbeat) })

	for {
		m, err := w.codec.Receive()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, io.EOF):
				return fmt.Errorf("control: supervisor closed the channel: %w", err)
			default:
				return fmt.Errorf("control: receive: %w", err)
			}
		}
		w.dispatch(h, m, &wg)
	}
}

func (w *Worker) dispatch(h Handler, m Message, wg *sync.WaitGroup) {
	switch m.Type {
	case TypeInvalidate:
		h.Invalidate(m.Keys)
		w.send(Message{Type: TypeApplied, ID: m.ID})
	case TypeBreaker:
		if m.Breaker != nil {
			h.ForceBreaker(m.Breaker.Name, m.Breaker.To)
		}
	case TypePurge:
		h.Purge()
	case TypeShare:
		h.Share(m.Shared)
	case TypeEntries:
		if im, ok := h.(Importer); ok {
			importBatch(im, m)
		}
	case TypeExport:
		ex, ok := h.(Exporter)
		if !ok {
			w.send(Message{Type: TypeEntries, ID: m.ID, Done: true, Error: "this worker cannot export its cache"})
			return
		}
		// An export reads the cache after every invalidation received
		// before it, as the warm start needs; it must not delay later ones.
		wg.Go(func() { w.export(ex, m) })
	case TypeDrain:
		wg.Go(h.Drain)
	case TypeSnapshot:
		// Gathering metrics can take a while; invalidations must not wait.
		wg.Go(func() {
			s := h.Stats()
			w.send(Message{Type: TypeStats, ID: m.ID, Stats: &s, Metrics: string(h.Metrics())})
		})
	case TypeProfile:
		// A CPU profile takes seconds; nothing else waits for it.
		wg.Go(func() { w.profile(h, m) })
	case TypeAck, TypeCluster:
		w.calls.Deliver(m)
	default:
		w.log.Warn("control: ignoring unknown message", "type", m.Type)
	}
}

// Profiler is a Handler that can take pprof profiles of its process.
type Profiler interface {
	Profile(kind string, seconds int) ([]byte, error)
}

func (w *Worker) profile(h Handler, m Message) {
	reply := Message{Type: TypeProfile, ID: m.ID}
	p, ok := h.(Profiler)
	switch {
	case !ok:
		reply.Error = "this worker cannot take profiles"
	case m.Profile == nil:
		reply.Error = "profile: no profile named"
	default:
		data, err := p.Profile(m.Profile.Kind, m.Profile.Seconds)
		if err != nil {
			reply.Error = err.Error()
		}
		reply.Data = data
	}
	w.send(reply)
}

// Share offers immutable cache entries to the sibling workers, without
// waiting: a sibling that misses them fetches them itself.
func (w *Worker) Share(entries []SharedEntry) {
	w.send(Message{Type: TypeShare, Shared: entries})
}

// heartbeats sends one at once, so the supervisor knows the worker's
// breakers from its start, then one every interval, each after a probe of
// the request path.
func (w *Worker) heartbeats(ctx context.Context, h Handler, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	probe := func() {}
	if p, ok := h.(Prober); ok {
		probe = p.Probe
	}
	for {
		probe()
		s := h.Stats()
		w.send(Message{Type: TypeHeartbeat, Stats: &s})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) send(m Message) {
	if err := w.codec.Send(m); err != nil {
		w.log.Warn("control: send failed", "type", m.Type, "err", err)
	}
}
