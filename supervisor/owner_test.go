package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// fakeProcess is a worker that lives in the test process: it speaks the
// control protocol on a real socketpair, or (crash) exits at once.
type fakeProcess struct {
	pid  int
	once sync.Once
	done chan struct{}
	err  error
	conn net.Conn
}

func (f *fakeProcess) Pid() int { return f.pid }

func (f *fakeProcess) Signal(os.Signal) error { return nil }

func (f *fakeProcess) Kill() error {
	f.exit(errors.New("signal: killed"))
	return nil
}

func (f *fakeProcess) Wait() error {
	<-f.done
	return f.err
}

func (f *fakeProcess) exit(err error) {
	f.once.Do(func() {
		f.err = err
		if f.conn != nil {
			f.conn.Close()
		}
		close(f.done)
	})
}

// fakeStarts starts in-process workers; crash says which slots' workers
// exit as soon as they start. It counts the starts per slot. Its workers
// report ready with the figures in ready; when beats is set, their
// heartbeats wait until it is closed. When script is set, it runs the
// worker it is given (by slot and start count, from 1) itself when it
// returns true.
type fakeStarts struct {
	ready  control.Stats
	beats  chan struct{}
	script func(slot, start int, f *fakeProcess, conn net.Conn) bool

	crash  func(slot int) bool
	nextID atomic.Int64
	mu     sync.Mutex
	starts map[int]int
}

func (fs *fakeStarts) start(spec workerSpec) (process, net.Conn, error) {
	parent, child, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	fs.mu.Lock()
	fs.starts[spec.slot]++
	nth := fs.starts[spec.slot]
	fs.mu.Unlock()
	conn, err := net.FileConn(child)
	child.Close()
	if err != nil {
		parent.Close()
		return nil, nil, err
	}
	f := &fakeProcess{pid: 1_000_000 + int(fs.nextID.Add(1)), done: make(chan struct{}), conn: conn}
	if fs.crash(spec.slot) {
		f.exit(errors.New("exit status 1"))
		return f, parent, nil
	}
	if fs.script != nil && fs.script(spec.slot, nth, f, conn) {
		return f, parent, nil
	}
	go func() {
		w := control.NewWorker(conn, slog.New(slog.DiscardHandler))
		if _, err := w.ReadConfig(context.Background()); err != nil || w.Ready(fs.ready) != nil {
			f.exit(errors.New("exit status 1"))
			return
		}
		_ = w.Serve(context.Background(), quietHandler{f, fs.beats}, 20*time.Millisecond)
		f.exit(nil)
	}()
	return f, parent, nil
}

func (fs *fakeStarts) count(slot int) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.starts[slot]
}

// quietHandler answers the supervisor with nothing to report, once beats
// (when set) is closed, and exits on drain.
type quietHandler struct {
	f     *fakeProcess
	beats chan struct{}
}

func (quietHandler) Invalidate([]string)         {}
func (quietHandler) ForceBreaker(string, string) {}
func (quietHandler) Purge()                      {}
func (quietHandler) Share([]control.SharedEntry) {}
func (h quietHandler) Stats() control.Stats {
	if h.beats != nil {
		<-h.beats
	}
	return control.Stats{}
}
func (quietHandler) Metrics() []byte { return nil }
func (h quietHandler) Drain()        { h.f.exit(nil) }

// runInProcess runs the supervisor with fake workers; it returns the
// operator client and the channel run's result arrives on.
func runInProcess(t *testing.T, ctx context.Context, workers int, fs *fakeStarts, tune func(*config.Supervisor)) (*operator.Client, <-chan error) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return runLogged(t, ctx, workers, fs, tune, log)
}

// runLogged is runInProcess with the supervisor's logger.
func runLogged(t *testing.T, ctx context.Context, workers int, fs *fakeStarts, tune func(*config.Supervisor), log *slog.Logger) (*operator.Client, <-chan error) {
	t.Helper()
	fs.starts = map[int]int{}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Workers = workers
	cfg.Control.Socket = filepath.Join(t.TempDir(), "amexd.sock")
	cfg.RateLimit.Store = "memory"
	cfg.Upstream.URL = "http://127.0.0.1:1"
	cfg.Supervisor.HeartbeatInterval = 20 * time.Millisecond
	cfg.Supervisor.RestartMin = time.Millisecond
	cfg.Supervisor.RestartMax = 5 * time.Millisecond
	tune(&cfg.Supervisor)
	// A reload reads the same settings again from the flags, the canary's
	// watch as tuned.
	src := config.Source{Args: []string{"-listen", cfg.Listen, "-workers", strconv.Itoa(workers), "-control.socket", cfg.Control.Socket,
		"-ratelimit.store", cfg.RateLimit.Store, "-upstream.url", cfg.Upstream.URL, "-supervisor.canary", cfg.Supervisor.Canary.String()}}
	result := make(chan error, 1)
	go func() { result <- run(ctx, src, cfg, log, fs.start) }()
	return operator.NewClient(cfg.Control.Socket), result
}

// stopRun ends a supervisor started by runInProcess and checks that it
// returns nil.
func stopRun(t *testing.T, cancel context.CancelFunc, result <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

func TestCrashingSlotIsDegradedOthersServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	fs := &fakeStarts{crash: func(slot int) bool { return slot == 1 }}
	op, result := runInProcess(t, ctx, 2, fs, func(sc *config.Supervisor) {
		sc.DegradedAfter = 3
		sc.HealthyAfter = time.Hour
		sc.OutageLimit = time.Hour
	})
	deadline := time.Now().Add(20 * time.Second)
	var h operator.Health
	for !strings.Contains(h.Reason, "slot 1: degraded") {
		if time.Now().After(deadline) {
			t.Fatalf("slot 1 not degraded; last health %+v", h)
		}
		h, _ = operator.Call(ctx, op, operator.GetHealth, operator.None{})
		time.Sleep(10 * time.Millisecond) // polling the operator socket for a condition
	}
	if h.Healthy || h.Serving != 1 {
		t.Errorf("health = %+v, want unhealthy with slot 0 serving", h)
	}
	ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
	if err != nil || len(ws.Workers) != 2 {
		t.Fatalf("workers: %+v, %v", ws, err)
	}
	if w := ws.Workers[0]; w.State != stateReady.String() || w.Restarts != 0 || fs.count(0) != 1 {
		t.Errorf("slot 0 = %+v after %d starts, want its one worker ready", w, fs.count(0))
	}
	if w := ws.Workers[1]; !w.Degraded || w.Restarts < 3 {
		t.Errorf("slot 1 = %+v, want degraded after at least 3 restarts", w)
	}
	stopRun(t, cancel, result)
}

// TestReadyCarriesTheFirstFigures: a worker is listed with the figures
// of its ready message while its first heartbeat is still on the way.
func TestReadyCarriesTheFirstFigures(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	beats := make(chan struct{})
	fs := &fakeStarts{
		crash: func(int) bool { return false },
		ready: control.Stats{Requests: 7, Process: control.Process{RSSBytes: 1 << 20, CPUSeconds: 0.25}},
		beats: beats,
	}
	op, result := runInProcess(t, ctx, 1, fs, func(sc *config.Supervisor) {})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
		if err == nil && len(ws.Workers) == 1 && ws.Workers[0].State == stateReady.String() {
			if w := ws.Workers[0]; w.Requests != 7 || w.RSSBytes != 1<<20 || w.CPUSeconds != 0.25 {
				t.Errorf("ready worker = %+v, want the ready message's figures (7 requests, 1 MiB, 0.25 s)", w)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready worker; last answer %+v, %v", ws, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the operator socket for a condition
	}
	close(beats)
	stopRun(t, cancel, result)
}

func TestOutageLimitEndsSupervisor(t *testing.T) {
	fs := &fakeStarts{crash: func(int) bool { return true }}
	_, result := runInProcess(t, context.Background(), 2, fs, func(sc *config.Supervisor) {
		sc.OutageLimit = 200 * time.Millisecond
	})
	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), "no worker could serve for") {
			t.Errorf("run = %v, want the outage reported", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run still going long after the outage limit")
	}
	if fs.count(0) < 2 || fs.count(1) < 2 {
		t.Errorf("starts per slot %d, %d: want crashed workers restarted before giving up", fs.count(0), fs.count(1))
	}
}

// TestReplacedWorkerReadyDuringReplace: when a reload reaches slot 0, the
// slot's worker is a restarted one still starting, and it gets ready while
// the reload collects its last counts: the owner loop changes the state of
// the worker the reload is replacing. A worker's state is the loop's
// alone; the reload learns it through the loop.
func TestReplacedWorkerReadyDuringReplace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var first *fakeProcess
	restarted := make(chan struct{})
	quiet := slog.New(slog.DiscardHandler)
	serve := func(f *fakeProcess, w *control.Worker) {
		if w.Ready(control.Stats{}) != nil {
			f.exit(errors.New("exit status 1"))
			return
		}
		_ = w.Serve(ctx, quietHandler{f, nil}, 20*time.Millisecond)
		f.exit(nil)
	}
	fs := &fakeStarts{crash: func(int) bool { return false }}
	fs.script = func(slot, start int, f *fakeProcess, conn net.Conn) bool {
		switch {
		case slot != 0:
			return false
		case start == 1:
			first = f
			return false
		case start == 2: // the reload's worker: slot 0's first one crashes meanwhile
			_ = first.Kill()
			go func() {
				w := control.NewWorker(conn, quiet)
				if _, err := w.ReadConfig(ctx); err != nil {
					f.exit(err)
					return
				}
				<-restarted // ready once the slot has restarted its crashed worker
				serve(f, w)
			}()
			return true
		case start == 3: // the restart: ready only once the reload asks for its counts
			close(restarted)
			go func() {
				w := control.NewWorker(conn, quiet)
				if _, err := w.ReadConfig(ctx); err != nil {
					f.exit(err)
					return
				}
				peek := control.NewCodec(conn)
				for {
					m, err := peek.Receive()
					if err != nil {
						f.exit(err)
						return
					}
					if m.Type == control.TypeSnapshot {
						break
					}
				}
				serve(f, w)
			}()
			return true
		}
		return false
	}
	op, result := runInProcess(t, ctx, 1, fs, func(sc *config.Supervisor) { sc.Canary = 0 })
	deadline := time.Now().Add(20 * time.Second)
	for {
		ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
		if err == nil && len(ws.Workers) == 1 && ws.Workers[0].State == stateReady.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready worker; last answer %+v, %v", ws, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the operator socket for a condition
	}
	if _, err := operator.Call(ctx, op, operator.PostReload, operator.None{}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if n := fs.count(0); n != 3 {
		t.Errorf("slot 0 started %d workers, want 3 (first, reload's, restart)", n)
	}
	ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
	if err != nil || len(ws.Workers) != 1 || ws.Workers[0].Generation != 2 {
		t.Errorf("after the reload: %+v, %v; want slot 0 on generation 2", ws, err)
	}
	stopRun(t, cancel, result)
}

// TestOldWorkerExitsDuringReplace: a reload replaces every slot, and each
// slot's worker exits just as its replacement gets ready, when the reload
// goes on to ask about the worker it replaces and to collect its last
// counts. The loop records that exit, a change of state of the worker the
// reload is replacing, while the reload runs: the reload must learn of it
// from the loop alone, and every slot ends with its new worker. (Under
// -race, a job that reads the worker's state itself, as replaceSlot once
// did, fails this test.)
func TestOldWorkerExitsDuringReplace(t *testing.T) {
	const workers = 16
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	procs := map[int]*fakeProcess{} // every worker, by pid
	serving := map[int]int{}        // the pid of each slot's worker of generation 1, by slot
	fresh := map[int]int{}          // the slot of each worker of generation 2, by pid
	fs := &fakeStarts{crash: func(int) bool { return false }}
	fs.script = func(_, _ int, f *fakeProcess, _ net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		procs[f.pid] = f
		return false
	}
	// The loop logs a worker's ready message once it has woken the job
	// waiting for it; the worker it replaces exits right then, while the
	// loop is still logging.
	log := slog.New(recordHook(func(r slog.Record) {
		mu.Lock()
		defer mu.Unlock()
		pid, slot := recordInt(r, "pid"), recordInt(r, "slot")
		switch r.Message {
		case "supervisor: worker started":
			if recordInt(r, "generation") == 1 {
				serving[slot] = pid
			} else {
				fresh[pid] = slot
			}
		case "supervisor: worker ready":
			if _, ok := fresh[pid]; ok {
				procs[serving[slot]].exit(nil)
			}
		}
	}))
	op, result := runLogged(t, ctx, workers, fs, func(sc *config.Supervisor) { sc.Canary = 0 }, log)
	deadline := time.Now().Add(20 * time.Second)
	for {
		h, err := operator.Call(ctx, op, operator.GetHealth, operator.None{})
		if err == nil && h.Healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every worker ready; last health %+v, %v", h, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the operator socket for a condition
	}
	r, err := operator.Call(ctx, op, operator.PostReload, operator.None{})
	if err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v, %v; want generation 2", r, err)
	}
	ws, err := operator.Call(ctx, op, operator.GetWorkers, operator.None{})
	if err != nil || len(ws.Workers) != workers {
		t.Fatalf("workers after the reload: %+v, %v", ws, err)
	}
	mu.Lock()
	for _, w := range ws.Workers {
		if slot, ok := fresh[w.PID]; !ok || slot != w.Slot || w.State != stateReady.String() || w.Generation != 2 {
			t.Errorf("slot %d: worker %d %s on generation %d; want one of the reload's, ready", w.Slot, w.PID, w.State, w.Generation)
		}
	}
	mu.Unlock()
	stopRun(t, cancel, result)
}

// recordHook is a log handler that hands every record to itself, on the
// goroutine that logs it.
type recordHook func(slog.Record)

func (h recordHook) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHook) Handle(_ context.Context, r slog.Record) error {
	h(r)
	return nil
}
func (h recordHook) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHook) WithGroup(string) slog.Handler      { return h }

// recordInt is r's integer attribute key, or -1.
func recordInt(r slog.Record, key string) int {
	v := -1
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key && a.Value.Kind() == slog.KindInt64 {
			v = int(a.Value.Int64())
			return false
		}
		return true
	})
	return v
}
