package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/simulator"
)

// fleetWorker is the part of a /workers entry these tests read.
type fleetWorker struct {
	Slot       int     `json:"slot"`
	PID        int     `json:"pid"`
	State      string  `json:"state"`
	RSSBytes   uint64  `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Cache      struct {
		Entries int `json:"entries"`
	} `json:"cache"`
	LastReplacement *struct {
		Reason string `json:"reason"`
		PID    int    `json:"pid"`
	} `json:"last_replacement"`
}

// workers returns the daemon's /workers entries.
func (d *daemon) workers(t *testing.T) []fleetWorker {
	t.Helper()
	a, err := d.op.Do(t.Context(), http.MethodGet, "/workers", nil)
	if err != nil || a.Code != http.StatusOK {
		t.Fatalf("GET /workers: %v %s", err, a.Body)
	}
	var out struct {
		Workers []fleetWorker `json:"workers"`
	}
	if err := json.Unmarshal(a.Body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Workers
}

// waitWorkers polls /workers until cond holds, for at most a minute.
func (d *daemon) waitWorkers(t *testing.T, what string, cond func([]fleetWorker) bool) []fleetWorker {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ws := d.workers(t)
		if cond(ws) {
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; workers: %+v", what, ws)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// allReady reports n workers, every one ready.
func allReady(n int) func([]fleetWorker) bool {
	return func(ws []fleetWorker) bool {
		if len(ws) != n {
			return false
		}
		for _, w := range ws {
			if w.State != "ready" {
				return false
			}
		}
		return true
	}
}

// upstreamWith starts an Event API simulator that never drops list calls,
// edited by edit, and returns it with its URL.
func upstreamWith(t *testing.T, edit func(*simulator.Config)) (*simulator.Simulator, string) {
	t.Helper()
	cfg := simulator.DefaultConfig()
	cfg.ListErrorRate = 0
	edit(&cfg)
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// preloadedSimulator starts an Event API simulator with a user 2 who has
// 50 events.
func preloadedSimulator(t *testing.T) (*simulator.Simulator, string) {
	return upstreamWith(t, func(c *simulator.Config) {
		c.PreloadUser, c.PreloadEvents = 2, 49 // and the 1 the seed gives user 2
	})
}

// eventCalls reads the simulator's getEventById count from its GET /stats.
func eventCalls(t *testing.T, up string) int64 {
	t.Helper()
	res, err := http.Get(up + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st simulator.Stats
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Calls.GetEventByID
}

// allHits sends n GETs of path on new connections and fails unless every
// one is a 200 HIT.
func allHits(t *testing.T, d *daemon, path string, n int) {
	t.Helper()
	c := fresh()
	for i := range n {
		res, err := c.Get(d.url(path))
		if err != nil {
			t.Fatalf("GET %s #%d: %v", path, i, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("X-Cache") != "HIT" {
			t.Fatalf("GET %s #%d: %d X-Cache %q, want 200 HIT", path, i, res.StatusCode, res.Header.Get("X-Cache"))
		}
	}
}

// TestWarmStart: with 2 workers that both hold user 2's 50 events, a worker
// killed with SIGKILL and then every worker of a reload start with their
// predecessor's or a sibling's entries: 200 reads on new connections are
// all HITs and the upstream sees no getEventById call.
func TestWarmStart(t *testing.T) {
	_, up := preloadedSimulator(t)
	d := start(t, "-workers", "2", "-upstream.url", up, "-supervisor.heartbeat_interval", "100ms",
		"-cache.user_events.fresh", "10m", "-cache.user.fresh", "10m")
	c := fresh()
	// Read until both workers answered it themselves: each then holds the
	// user, the list and the 50 events.
	d.waitWorkers(t, "both workers to cache user 2's events", func(ws []fleetWorker) bool {
		if status, body := get(t, c, d.url("/events/user/2")); status != 200 || strings.Count(body, `"id"`) != 50 {
			t.Fatalf("GET /events/user/2: %d, %d events", status, strings.Count(body, `"id"`))
		}
		return len(ws) == 2 && ws[0].Cache.Entries >= 52 && ws[1].Cache.Entries >= 52
	})

	victim := d.workers(t)[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.waitWorkers(t, "slot 0 to serve again", func(ws []fleetWorker) bool {
		return allReady(2)(ws) && ws[0].PID != victim.PID
	})
	before := eventCalls(t, up)
	allHits(t, d, "/events/user/2", 200)
	if extra := eventCalls(t, up) - before; extra != 0 {
		t.Errorf("after kill -9: %d extra getEventById calls, want 0", extra)
	}

	old := d.workers(t)
	if a, err := d.op.Do(t.Context(), http.MethodPost, "/reload", nil); err != nil || a.Code != 200 {
		t.Fatalf("reload: %v %s", err, a.Body)
	}
	d.waitWorkers(t, "every slot replaced by the reload", func(ws []fleetWorker) bool {
		return allReady(2)(ws) && ws[0].PID != old[0].PID && ws[1].PID != old[1].PID
	})
	before = eventCalls(t, up)
	allHits(t, d, "/events/user/2", 200)
	if extra := eventCalls(t, up) - before; extra != 0 {
		t.Errorf("after a reload: %d extra getEventById calls, want 0", extra)
	}
	if !strings.Contains(readLog(t, d), `"msg":"warm start"`) {
		t.Error("no warm start in the log")
	}
}

// readLog returns amexd's whole log so far.
func readLog(t *testing.T, d *daemon) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(d.Socket), "amexd-*.log"))
	var b strings.Builder
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// load sends GET /users on new connections from a few clients until stop
// is called, which returns how many requests were answered and which failed.
func load(t *testing.T, d *daemon) (stop func() (ok int64, failures []string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg     sync.WaitGroup
		ok     atomic.Int64
		mu     sync.Mutex
		failed []string
	)
	for range 4 {
		wg.Go(func() {
			c := fresh()
			for ctx.Err() == nil {
				res, err := c.Get(d.url("/users"))
				if err != nil {
					mu.Lock()
					failed = append(failed, err.Error())
					mu.Unlock()
					continue
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("status %d", res.StatusCode))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	return func() (int64, []string) {
		cancel()
		wg.Wait()
		return ok.Load(), failed
	}
}

// scale asks the daemon for n workers.
func (d *daemon) scale(t *testing.T, n int) {
	t.Helper()
	a, err := d.op.Do(t.Context(), http.MethodPost, "/scale", map[string]int{"workers": n})
	if err != nil || a.Code != http.StatusOK {
		t.Fatalf("scale %d: %v %s", n, err, a.Body)
	}
}

// statusWorkers is the number of workers GET /status lists.
func (d *daemon) statusWorkers(t *testing.T) int {
	t.Helper()
	st, err := operator.Call(t.Context(), d.op, operator.GetStatus, operator.None{})
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Workers)
}

// TestScaleUnderLoad: 2 workers scaled to 4 and then to 1 while clients keep
// opening new connections: no request fails, and the status shows 4, then 1.
func TestScaleUnderLoad(t *testing.T) {
	d := start(t, "-workers", "2", "-supervisor.heartbeat_interval", "100ms")
	stop := load(t, d)
	d.scale(t, 4)
	d.waitWorkers(t, "4 ready workers", allReady(4))
	if n := d.statusWorkers(t); n != 4 {
		t.Errorf("status shows %d workers after scale 4", n)
	}
	d.scale(t, 1)
	d.waitWorkers(t, "1 ready worker", allReady(1))
	if n := d.statusWorkers(t); n != 1 {
		t.Errorf("status shows %d workers after scale 1", n)
	}
	body, err := d.op.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.Contains(line, `slot="`) && !strings.Contains(line, `slot="0"`) {
			t.Errorf("a removed slot's series is still on /metrics after scale 1: %s", line)
			break
		}
	}
	ok, failed := stop()
	t.Logf("%d requests answered during scale 2 → 4 → 1", ok)
	if len(failed) > 0 || ok == 0 {
		t.Errorf("%d requests failed (of %d): %v", len(failed), ok+int64(len(failed)), failed[:min(len(failed), 5)])
	}
}

// recycled waits until some slot's last replacement has the given reason,
// under load, and checks that no request failed.
func recycled(t *testing.T, d *daemon, reason string) {
	t.Helper()
	stop := load(t, d)
	d.waitWorkers(t, "a worker replaced for "+reason, func(ws []fleetWorker) bool {
		for _, w := range ws {
			if w.LastReplacement != nil && w.LastReplacement.Reason == reason && w.State == "ready" {
				return true
			}
		}
		return false
	})
	ok, failed := stop()
	t.Logf("%d requests answered while recycling for %s", ok, reason)
	if len(failed) > 0 {
		t.Errorf("%d requests failed: %v", len(failed), failed[:min(len(failed), 5)])
	}
}

// TestRecycleAfterMaxRequests: a worker past max_requests (and its jitter)
// is replaced ready-before-drain, and no request fails.
func TestRecycleAfterMaxRequests(t *testing.T) {
	d := start(t, "-workers", "2", "-supervisor.heartbeat_interval", "100ms", "-supervisor.healthy_after", "1s",
		"-supervisor.max_requests", "200", "-supervisor.max_requests_jitter", "50")
	recycled(t, d, "requests")
}

// TestRecycleAboveMaxMemory: a worker whose RSS is above max_memory is
// replaced, and no request fails. A race-built worker's RSS (about 45 MB)
// is above 20MiB from its start, so every worker qualifies; healthy_after
// spaces the recycling of a slot.
func TestRecycleAboveMaxMemory(t *testing.T) {
	d := start(t, "-workers", "2", "-supervisor.heartbeat_interval", "100ms", "-supervisor.healthy_after", "1s",
		"-cache.size_mb", "1", "-supervisor.max_memory", "20MiB")
	// CPU time counts in clock ticks: a worker that has just started may
	// not have used one yet, so the figures are awaited, not read once.
	d.waitWorkers(t, "every worker's RSS and CPU time", func(ws []fleetWorker) bool {
		for _, w := range ws {
			if w.RSSBytes == 0 || w.CPUSeconds <= 0 {
				return false
			}
		}
		return len(ws) == 2
	})
	recycled(t, d, "memory")
}

// TestHungWorkerExplainsItself: a worker stopped with SIGSTOP stops
// beating; it is replaced, its goroutine stacks or a line saying it could
// not give them are in the log, and /workers says it hung.
func TestHungWorkerExplainsItself(t *testing.T) {
	d := start(t, "-workers", "2", "-supervisor.heartbeat_interval", "100ms", "-supervisor.heartbeat_timeout", "2s")
	victim := d.workers(t)[1]
	if err := syscall.Kill(victim.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ws := d.waitWorkers(t, "the stopped worker replaced", func(ws []fleetWorker) bool {
		return allReady(2)(ws) && ws[1].PID != victim.PID
	})
	if r := ws[1].LastReplacement; r == nil || r.Reason != "hang" || r.PID != victim.PID {
		t.Errorf("slot 1's last replacement is %+v, want a hang of %d", r, victim.PID)
	}
	log := readLog(t, d)
	stacks := strings.Contains(log, "SIGQUIT: quit") && strings.Contains(log, "goroutine ")
	if !stacks && !strings.Contains(log, "did not answer SIGQUIT") {
		t.Errorf("the log has neither the hung worker's stacks nor a line saying it could not give them")
	}
}

// TestCanaryRollsBackABadReload: a reload to an upstream that refuses
// connections replaces one slot, sees its 5xx answers (and its breaker
// opening) against the old workers' none, and puts the old configuration
// back.
func TestCanaryRollsBackABadReload(t *testing.T) {
	sim, up := preloadedSimulator(t)
	if err := sim.Update(func(c *simulator.Config) { c.AddFail = 0 }); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "amexd.yaml")
	write := func(url string) {
		if err := os.WriteFile(cfgFile, []byte("upstream:\n  url: "+url+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(up)
	d := start(t, "-config", cfgFile, "-workers", "2", "-supervisor.heartbeat_interval", "100ms",
		"-supervisor.canary", "3s", "-upstream.retries", "1")
	old := d.workers(t)

	// Writes on new connections: no cache answers them, so every worker
	// needs its upstream, and only one that cannot reach it fails them.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		c := fresh()
		for i := 0; ctx.Err() == nil; i++ {
			body := strings.NewReader(fmt.Sprintf(`{"name":"canary %d","userId":1}`, i))
			if res, err := c.Post(d.url("/events"), "application/json", body); err == nil {
				res.Body.Close()
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()

	write("http://127.0.0.1:1") // nothing listens there
	a, err := d.op.Do(t.Context(), http.MethodPost, "/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Code == http.StatusOK || !strings.Contains(a.Message(), "rolled back") {
		for _, l := range strings.Split(readLog(t, d), "\n") {
			if strings.Contains(l, "canary") {
				t.Log(l)
			}
		}
		t.Fatalf("reload to a wrong upstream answered %d %s, want a rollback", a.Code, a.Body)
	}
	t.Logf("reload answered %d: %s", a.Code, a.Message())
	ws := d.waitWorkers(t, "two ready workers after the rollback", allReady(2))
	if ws[1].PID != old[1].PID {
		t.Errorf("slot 1 was replaced (%d → %d) although the canary failed", old[1].PID, ws[1].PID)
	}
	st, err := operator.Call(t.Context(), d.op, operator.GetStatus, operator.None{})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Config["upstream"]; got != up {
		t.Errorf("after the rollback the upstream is %v, want %s", got, up)
	}
}
