package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns two connected ends of a unix socketpair, like the one the
// supervisor hands a worker.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "control")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

func TestCodecRoundTrip(t *testing.T) {
	cases := []Message{
		{Type: TypeConfig, Slot: 3, Generation: 2, Config: []byte(`{"Listen":":3000"}`)},
		{Type: TypeReady},
		{Type: TypeHeartbeat, Stats: &Stats{Requests: 7, Cache: CacheStats{Hits: 1, Entries: 4}, Breakers: []Breaker{{Name: "addEvent", State: StateOpen, Opens: 2, RetryAfterMs: 900}}, Inflight: -1}},
		{Type: TypeBreaker, Breaker: &BreakerChange{Name: "getUsers", From: StateClosed, To: StateOpen, Forced: true}},
		{Type: TypeInvalidate, ID: 9, Keys: []string{"events:all", "user:1"}},
		{Type: TypeStats, ID: 4, Stats: &Stats{}, Metrics: "# TYPE x counter\nx 1\n"},
		{Type: TypeCluster, ID: 5, Cluster: &ClusterStatus{Workers: []WorkerBreakers{{Slot: 1, PID: 42, State: "ready", Breakers: []Breaker{}}}, Summary: []BreakerSummary{{Name: "a", Open: 1}}}},
		{Type: TypeAck, ID: 6, Error: "boom"},
		{Type: TypeConfig, Slot: 1, Config: []byte(`{}`), Warm: true},
		{Type: TypeExport, ID: 7, Export: &ExportRequest{MaxEntries: 10, MaxBytes: 1 << 20}},
		{Type: TypeEntries, ID: 7, Entries: []CacheEntry{{Key: "user:1", Body: []byte(`{"id":1}`), Fresh: time.Second, Stale: time.Minute, Age: time.Millisecond}}},
		{Type: TypeEntries, ID: 7, Done: true, Transfer: &Transfer{Entries: 1, Bytes: 8, From: "slot 0 pid 9"}},
		{Type: TypeHeartbeat, Stats: &Stats{Errors: 2, Process: Process{RSSBytes: 1 << 20, CPUSeconds: 1.5, MemoryLimit: 1 << 30, Latency: Latency{Count: 3, P50Ms: 0.2, P99Ms: 9}}}},
	}
	a, b := pair(t)
	ca, cb := NewCodec(a), NewCodec(b)
	go func() {
		for _, m := range cases {
			if err := ca.Send(m); err != nil {
				t.Error(err)
				return
			}
		}
		ca.Close()
	}()
	for _, want := range cases {
		got, err := cb.Receive()
		if err != nil {
			t.Fatalf("receive %s: %v", want.Type, err)
		}
		if want.Cluster != nil {
			want.Cluster.Workers[0].LastHeartbeat = got.Cluster.Workers[0].LastHeartbeat
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", want.Type, got, want)
		}
	}
	if _, err := cb.Receive(); !errors.Is(err, io.EOF) {
		t.Errorf("after close: err = %v, want io.EOF", err)
	}
}

func TestSummarize(t *testing.T) {
	workers := []WorkerBreakers{
		{Slot: 0, Breakers: []Breaker{{Name: "b", State: StateOpen}, {Name: "a", State: StateClosed}}},
		{Slot: 1, Breakers: []Breaker{{Name: "b", State: StateHalfOpen}, {Name: "a", State: StateOpen}}},
		{Slot: 2, Breakers: []Breaker{{Name: "b", State: StateOpen}}},
	}
	want := []BreakerSummary{{Name: "a", Open: 1, Closed: 1}, {Name: "b", Open: 2, HalfOpen: 1}}
	if got := Summarize(workers); !reflect.DeepEqual(got, want) {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
}

// recorder is a Handler that records what the supervisor asked for.
type recorder struct {
	mu       sync.Mutex
	keys     [][]string
	forced   []string
	purges   int
	shared   []SharedEntry
	drained  chan struct{}
	requests uint64
	imported []CacheEntry
	warmed   []Transfer
	failures []string
	// probe, when set, is called by Probe.
	probe func()
}

func (r *recorder) Export(req, batch ExportRequest, send func([]CacheEntry) error) (int, int64, error) {
	var entries []CacheEntry
	for i := range req.MaxEntries {
		entries = append(entries, CacheEntry{Key: "user:" + string(rune('0'+i)), Body: []byte("b"), Fresh: time.Second})
	}
	n := 0
	for len(entries) > 0 {
		k := min(2, len(entries))
		if err := send(entries[:k]); err != nil {
			return n, int64(n), err
		}
		n, entries = n+k, entries[k:]
	}
	return n, int64(n), nil
}

func (r *recorder) Import(entries []CacheEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.imported = append(r.imported, entries...)
}

func (r *recorder) Warmed(t Transfer, failure string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warmed = append(r.warmed, t)
	r.failures = append(r.failures, failure)
}

func (r *recorder) Probe() {
	if r.probe != nil {
		r.probe()
	}
}

func (r *recorder) Invalidate(keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, keys)
}

func (r *recorder) ForceBreaker(name, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forced = append(r.forced, name+"="+state)
}

func (r *recorder) Share(entries []SharedEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shared = append(r.shared, entries...)
}

func (r *recorder) Purge() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.purges++
}

func (r *recorder) Stats() Stats    { return Stats{Requests: r.requests} }
func (r *recorder) Metrics() []byte { return []byte("requests_total 3\n") }
func (r *recorder) Drain()          { close(r.drained) }

// fakeSupervisor reads a worker's messages and answers like the supervisor.
type fakeSupervisor struct {
	codec *Codec
	msgs  chan Message
}

func newFakeSupervisor(t *testing.T, conn net.Conn) *fakeSupervisor {
	s := &fakeSupervisor{codec: NewCodec(conn), msgs: make(chan Message, 64)}
	go func() {
		defer close(s.msgs)
		for {
			m, err := s.codec.Receive()
			if err != nil {
				return
			}
			switch m.Type {
			case TypeInvalidate:
				_ = s.codec.Send(Message{Type: TypeAck, ID: m.ID})
			case TypeCluster:
				_ = s.codec.Send(Message{Type: TypeCluster, ID: m.ID, Cluster: &ClusterStatus{Workers: []WorkerBreakers{{Slot: 0, PID: 1, State: "ready"}}}})
			}
			s.msgs <- m
		}
	}()
	return s
}

// next returns the next message of type typ, skipping others.
func (s *fakeSupervisor) next(t *testing.T, typ string) Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatalf("channel closed waiting for %s", typ)
			}
			if m.Type == typ {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s message within 5s", typ)
		}
	}
}

func TestWorkerConversation(t *testing.T) {
	supEnd, workerEnd := pair(t)
	sup := newFakeSupervisor(t, supEnd)
	w := NewWorker(workerEnd, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := sup.codec.Send(Message{Type: TypeConfig, Slot: 2, Generation: 5, Config: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	wc, err := w.ReadConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wc.Slot != 2 || wc.Generation != 5 || string(wc.Config) != `{"a":1}` {
		t.Fatalf("ReadConfig = %+v", wc)
	}

	h := &recorder{drained: make(chan struct{}), requests: 11}
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx, h, 10*time.Millisecond) }()

	if err := w.Ready(h.Stats()); err != nil {
		t.Fatal(err)
	}
	if r := sup.next(t, TypeReady); r.Stats == nil || r.Stats.Requests != 11 {
		t.Errorf("ready stats = %+v, want requests 11", r.Stats)
	}
	if hb := sup.next(t, TypeHeartbeat); hb.Stats == nil || hb.Stats.Requests != 11 {
		t.Errorf("heartbeat stats = %+v, want requests 11", hb.Stats)
	}

	if err := w.Invalidate(ctx, []string{"events:all"}); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if m := sup.next(t, TypeInvalidate); !reflect.DeepEqual(m.Keys, []string{"events:all"}) {
		t.Errorf("invalidate keys = %v", m.Keys)
	}

	cs, err := w.Cluster(ctx)
	if err != nil || len(cs.Workers) != 1 || cs.Workers[0].PID != 1 {
		t.Errorf("Cluster = %+v, %v", cs, err)
	}

	if err := w.ReportBreaker("addEvent", StateClosed, StateOpen, false); err != nil {
		t.Fatal(err)
	}
	if m := sup.next(t, TypeBreaker); *m.Breaker != (BreakerChange{Name: "addEvent", From: StateClosed, To: StateOpen}) {
		t.Errorf("breaker report = %+v", *m.Breaker)
	}

	send := func(m Message) {
		if err := sup.codec.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	send(Message{Type: TypeInvalidate, ID: 77, Keys: []string{"user:1"}})
	if m := sup.next(t, TypeApplied); m.ID != 77 {
		t.Errorf("applied id = %d, want 77", m.ID)
	}
	send(Message{Type: TypeBreaker, Breaker: &BreakerChange{Name: "getUsers", To: StateOpen}})
	send(Message{Type: TypePurge})
	send(Message{Type: TypeShare, Shared: []SharedEntry{{Key: "event:event-3", Body: []byte(`{"id":"event-3"}`)}}})
	send(Message{Type: TypeSnapshot, ID: 78})
	st := sup.next(t, TypeStats)
	if st.ID != 78 || st.Stats.Requests != 11 || st.Metrics != "requests_total 3\n" {
		t.Errorf("stats answer = %+v", st)
	}
	h.mu.Lock()
	if !reflect.DeepEqual(h.keys, [][]string{{"user:1"}}) || !reflect.DeepEqual(h.forced, []string{"getUsers=open"}) || h.purges != 1 {
		t.Errorf("handler saw keys %v, forced %v, purges %d", h.keys, h.forced, h.purges)
	}
	if len(h.shared) != 1 || h.shared[0].Key != "event:event-3" || string(h.shared[0].Body) != `{"id":"event-3"}` {
		t.Errorf("handler saw shared %+v", h.shared)
	}
	h.mu.Unlock()

	send(Message{Type: TypeDrain})
	select {
	case <-h.drained:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain not called")
	}

	sup.codec.Close()
	select {
	case err := <-served:
		if !errors.Is(err, io.EOF) {
			t.Errorf("Serve after supervisor close = %v, want io.EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return on EOF")
	}
	if err := w.Invalidate(ctx, []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Invalidate after Serve = %v, want ErrClosed", err)
	}
}

func TestWarmStartMessages(t *testing.T) {
	supEnd, workerEnd := pair(t)
	sup := newFakeSupervisor(t, supEnd)
	w := NewWorker(workerEnd, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	h := &recorder{drained: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx, h, time.Hour) }()
	defer func() {
		cancel()
		<-served
	}()
	send := func(m Message) {
		if err := sup.codec.Send(m); err != nil {
			t.Fatal(err)
		}
	}

	send(Message{Type: TypeExport, ID: 3, Export: &ExportRequest{MaxEntries: 5, MaxBytes: 100}})
	var got []CacheEntry
	for {
		m := sup.next(t, TypeEntries)
		if m.ID != 3 {
			t.Fatalf("entries answer under ID %d, want 3", m.ID)
		}
		got = append(got, m.Entries...)
		if m.Done {
			if m.Transfer == nil || m.Transfer.Entries != 5 || m.Error != "" {
				t.Errorf("last entries message %+v, want a transfer of 5 entries", m)
			}
			break
		}
		if len(m.Entries) == 0 {
			t.Error("an entries message before the last one is empty")
		}
	}
	if len(got) != 5 {
		t.Errorf("export sent %d entries, want 5", len(got))
	}
	send(Message{Type: TypeExport, ID: 4})
	if m := sup.next(t, TypeEntries); !m.Done || m.Error == "" {
		t.Errorf("export without limits answered %+v, want a failed last message", m)
	}

	send(Message{Type: TypeEntries, Entries: got[:2]})
	send(Message{Type: TypeEntries, Entries: got[2:]})
	send(Message{Type: TypeEntries, Done: true, Transfer: &Transfer{Entries: 5, From: "slot 1 pid 2"}})
	send(Message{Type: TypeEntries, Done: true, Error: "source gone"})
	send(Message{Type: TypeSnapshot, ID: 5}) // answered after the entries were handled
	sup.next(t, TypeStats)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !reflect.DeepEqual(h.imported, got) {
		t.Errorf("imported %+v, want %+v", h.imported, got)
	}
	if len(h.warmed) != 2 || h.warmed[0].From != "slot 1 pid 2" || h.failures[0] != "" || h.failures[1] != "source gone" {
		t.Errorf("Warmed calls %+v with failures %q", h.warmed, h.failures)
	}
}

// A heartbeat is sent only after a probe of the request path returned: a
// worker whose probe is stuck answers other requests but does not beat.
func TestHeartbeatWaitsForTheProbe(t *testing.T) {
	supEnd, workerEnd := pair(t)
	sup := newFakeSupervisor(t, supEnd)
	w := NewWorker(workerEnd, slog.New(slog.DiscardHandler))
	probing, release := make(chan struct{}), make(chan struct{})
	var probes sync.WaitGroup
	calls := 0
	h := &recorder{drained: make(chan struct{}), probe: func() {
		calls++ // only the heartbeat goroutine probes
		if calls == 2 {
			probes.Add(1)
			defer probes.Done()
			close(probing)
			<-release
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx, h, time.Millisecond) }()
	defer func() {
		cancel()
		<-served
	}()

	sup.next(t, TypeHeartbeat)
	<-probing
	if err := sup.codec.Send(Message{Type: TypeSnapshot, ID: 1}); err != nil {
		t.Fatal(err)
	}
	// Every message but a heartbeat may come; the first after the
	// snapshot request must be its answer, as the probe still hangs.
	for answered := false; !answered; {
		select {
		case m := <-sup.msgs:
			if m.Type == TypeHeartbeat {
				t.Fatal("a heartbeat was sent while the probe hung")
			}
			answered = m.Type == TypeStats
		case <-time.After(5 * time.Second):
			t.Fatal("no answer to the snapshot within 5s")
		}
	}
	close(release)
	probes.Wait()
	sup.next(t, TypeHeartbeat)
}

func TestServeStopsWithContext(t *testing.T) {
	_, workerEnd := pair(t)
	w := NewWorker(workerEnd, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx, &recorder{drained: make(chan struct{})}, time.Hour) }()
	// An invalidate that is never acknowledged must end with Serve.
	pending := make(chan error, 1)
	go func() { pending <- w.Invalidate(context.Background(), []string{"k"}) }()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil on cancel", err)
	}
	select {
	case err := <-pending:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pending Invalidate = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending Invalidate not released")
	}
}

func TestReadConfigRejectsOtherFirstMessage(t *testing.T) {
	supEnd, workerEnd := pair(t)
	go func() { _ = NewCodec(supEnd).Send(Message{Type: TypeDrain}) }()
	_, err := NewWorker(workerEnd, slog.New(slog.DiscardHandler)).ReadConfig(context.Background())
	if err == nil {
		t.Fatal("ReadConfig accepted a drain as first message")
	}
}

// TestReceiveResumesAfterDeadline: a line cut by a read deadline is not
// lost, neither by the same Codec nor by one resumed from its Pending.
func TestReceiveResumesAfterDeadline(t *testing.T) {
	for _, resume := range []bool{false, true} {
		a, b := net.Pipe()
		c := NewCodec(b)
		line, _ := json.Marshal(Message{Type: TypeHeartbeat, ID: 7})
		go func() { _, _ = a.Write(line[:5]) }()
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Receive(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Receive with half a line = %v, want a deadline error", err)
		}
		if string(c.Pending()) != string(line[:5]) {
			t.Fatalf("Pending = %q, want %q", c.Pending(), line[:5])
		}
		_ = c.SetReadDeadline(time.Time{})
		if resume {
			c = ResumeCodec(b, c.Pending())
		}
		go func() { _, _ = a.Write(append(line[5:], '\n')) }()
		m, err := c.Receive()
		if err != nil || m.Type != TypeHeartbeat || m.ID != 7 {
			t.Errorf("resume %v: %+v, %v; want the heartbeat whole", resume, m, err)
		}
		a.Close()
		b.Close()
	}
}
