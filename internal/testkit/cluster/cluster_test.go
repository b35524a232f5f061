package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
)

// binary is the amexd built once for the run. It is built without the race
// detector: nine processes of it share CI's two cores, and the daemon's
// races are the business of the packages' own tests.
var binary string

func TestMain(m *testing.M) {
	if Check() != nil {
		// Nothing to build for tests that will skip (or fail in CI).
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "amexd-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "amexd")
	build := exec.Command("go", "build", "-o", binary, "../../../cmd/amexd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build amexd:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// simConfig is the simulator of these tests: no random list failures (they
// would make counts of answers depend on luck), addEvent always succeeding,
// getEventById slow enough that concurrent misses overlap.
func simConfig() simulator.Config {
	cfg := simulator.DefaultConfig()
	cfg.ListErrorRate = 0
	cfg.AddFail = 0
	cfg.EventDelay = 200 * time.Millisecond
	return cfg
}

// baseArgs are every host's flags in these tests: two workers, and Redis
// timeouts that CI's busy cores cannot hit (a Redis call that times out
// falls back by design, which would change the counts the tests assert).
var baseArgs = []string{"-workers", "2", "-ratelimit.redis_timeout", "2s", "-cache.redis_timeout", "2s"}

// start builds a cluster of n hosts on one Redis node, each with args,
// and tears it down when the test ends, showing the hosts' logs if it
// failed. Where the machine cannot run one the test skips, except in CI
// (CI=true), where it fails.
func start(t *testing.T, n int, sim simulator.Config, args ...string) *Cluster {
	t.Helper()
	return startOn(t, RedisNode, n, sim, args...)
}

// startOn is start with the Redis setup r.
func startOn(t *testing.T, r RedisSetup, n int, sim simulator.Config, args ...string) *Cluster {
	t.Helper()
	if err := errors.Join(Check(), CheckRedis(r)); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI runs as root with .ci/packages installed", err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{
		Binary:    binary,
		Hosts:     n,
		Dir:       t.TempDir(),
		Args:      append(baseArgs[:len(baseArgs):len(baseArgs)], args...),
		Redis:     r,
		Simulator: sim,
		Log:       slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("host %d log (end):\n%s", h.Index, h.Log())
			}
		}
		c.Close()
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// client opens a connection per request, so HAProxy's round robin and the
// hosts' reuseport groups spread them.
func client() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

func get(t *testing.T, c *http.Client, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestRateLimitThroughHAProxy: one client's budget is exact across three
// hosts behind HAProxy (the hosts trust HAProxy's X-Forwarded-For), and a
// client reaching a host directly cannot pick its address with the header.
func TestRateLimitThroughHAProxy(t *testing.T) {
	c := start(t, 3, simConfig(), limit30...)
	limitExactThroughHAProxy(t, c)
	hc := client()
	// Directly, from the gateway address (not HAProxy's): a forged header
	// does not make a new client; the gateway's own budget applies.
	counts := map[int]int{}
	for i := range 40 {
		status, _ := get(t, hc, c.Hosts[i%3].URL+"/events/circuit-status", "X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		counts[status]++
	}
	if counts[http.StatusOK] != 30 || counts[http.StatusTooManyRequests] != 10 {
		t.Errorf("40 direct requests with forged X-Forwarded-For: %v, want 30×200 and 10×429 (one client)", counts)
	}
}

// limit30 is the budget limitExactThroughHAProxy checks.
var limit30 = []string{"-ratelimit.rate", "30-M"}

// limitExactThroughHAProxy: one client's 45 requests through HAProxy to
// hosts started with limit30 get exactly 30 answers and 15 refusals.
func limitExactThroughHAProxy(t *testing.T, c *Cluster) {
	t.Helper()
	hc := client()
	counts := map[int]int{}
	for range 45 {
		status, _ := get(t, hc, c.LB+"/events/circuit-status")
		counts[status]++
	}
	if counts[http.StatusOK] != 30 || counts[http.StatusTooManyRequests] != 15 {
		t.Errorf("45 requests of one client through HAProxy to %d hosts: %v, want exactly 30×200 and 15×429", len(c.Hosts), counts)
	}
}

// noLimit raises the rate limit out of the way of tests about other things.
var noLimit = []string{"-ratelimit.rate", "10000000-M"}

// TestWriteReadBackOnEveryHost: an event created on one host is in the
// answers of every other host, directly and through HAProxy, right after
// the 201, although their caches (and the shared tier) held the older
// answers.
func TestWriteReadBackOnEveryHost(t *testing.T) {
	for _, shared := range []string{"none", "redis"} {
		t.Run("shared="+shared, func(t *testing.T) {
			c := start(t, 3, simConfig(), append([]string{"-cache.shared", shared}, noLimit...)...)
			writeReadBack(t, c)
		})
	}
}

func writeReadBack(t *testing.T, c *Cluster) {
	hc := client()
	paths := []string{"/events/user/2", "/events", "/users/2", "/users"}
	for i := range 3 {
		writer := c.Hosts[i%3]
		for _, h := range c.Hosts {
			for _, p := range paths {
				for range 2 { // both workers of the host
					if status, body := get(t, hc, h.URL+p); status != http.StatusOK {
						t.Fatalf("warm host %d %s: %d %s", h.Index, p, status, body)
					}
				}
			}
		}
		res, err := hc.Post(writer.URL+"/events", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"written on host %d","userId":2}`, writer.Index)))
		if err != nil {
			t.Fatal(err)
		}
		var ev eventapi.Event
		err = json.NewDecoder(res.Body).Decode(&ev)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated || err != nil {
			t.Fatalf("POST on host %d: %d (%v)", writer.Index, res.StatusCode, err)
		}
		for _, base := range append(hostURLs(c), c.LB) {
			for _, p := range paths {
				for range 2 {
					if status, got := get(t, hc, base+p); status != http.StatusOK || !strings.Contains(got, string(ev.ID)) {
						t.Errorf("write %d on host %d: GET %s%s right after the 201: %d, lacks %s", i, writer.Index, base, p, status, ev.ID)
					}
				}
			}
		}
	}
}

func hostURLs(c *Cluster) []string {
	var out []string
	for _, h := range c.Hosts {
		out = append(out, h.URL)
	}
	return out
}

// simStats reads the simulator's counters over HTTP, as an operator would.
func simStats(t *testing.T, c *Cluster) simulator.Stats {
	t.Helper()
	_, body := get(t, client(), c.UpstreamURL+simulator.PathStats)
	var st simulator.Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("simulator stats %q: %v", body, err)
	}
	return st
}

// TestSharedTierColdHosts: three cold hosts asked for one user's events at
// once through HAProxy, then each directly: with the shared tier the
// upstream sees one getEventById per event and one getUserById; without
// it, each host fetches on its own.
func TestSharedTierColdHosts(t *testing.T) {
	for _, tc := range []struct {
		shared string
		exact  bool
	}{{"redis", true}, {"none", false}} {
		t.Run(tc.shared, func(t *testing.T) {
			c := start(t, 3, coldSim(), append([]string{"-cache.shared", tc.shared}, noLimit...)...)
			coldHosts(t, c, tc.exact)
		})
	}
}

// coldSim is the simulator of coldHosts: user 1 with 20 events.
func coldSim() simulator.Config {
	sim := simConfig()
	sim.PreloadUser, sim.PreloadEvents = 1, 20
	return sim
}

// coldHosts asks the cold hosts of c (started with coldSim) for user 1's
// events, at once through HAProxy, then each directly, and checks the
// upstream calls: one getEventById per event and one getUserById when
// exact (a shared tier), more when not.
func coldHosts(t *testing.T, c *Cluster, exact bool) {
	t.Helper()
	hc := client()
	bodies := make([]string, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			res, err := hc.Get(c.LB + "/events/user/1")
			if err != nil {
				t.Errorf("GET through HAProxy: %v", err)
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Errorf("GET through HAProxy: %d %s", res.StatusCode, b)
			}
			bodies[i] = string(b)
		})
	}
	wg.Wait()
	for _, h := range c.Hosts {
		if status, body := get(t, hc, h.URL+"/events/user/1"); status != http.StatusOK || body != bodies[0] {
			t.Errorf("host %d directly: %d, same answer as through HAProxy: %v", h.Index, status, body == bodies[0])
		}
	}
	var events []eventapi.Event
	if err := json.Unmarshal([]byte(bodies[0]), &events); err != nil || len(events) < 20 {
		t.Fatalf("user 1's events: %d decoded (%v), want at least 20", len(events), err)
	}
	st := simStats(t, c)
	t.Logf("shared tier %v (redis %s): %d events, upstream getEventById %d, getUserById %d", exact, c.opts.Redis, len(events), st.Calls.GetEventByID, st.Calls.GetUserByID)
	if exact && (st.Calls.GetEventByID != int64(len(events)) || st.Calls.GetUserByID != 1) {
		t.Errorf("with the shared tier: %d getEventById and %d getUserById calls for %d events, want one per event and one user",
			st.Calls.GetEventByID, st.Calls.GetUserByID, len(events))
	}
	if !exact && st.Calls.GetEventByID <= int64(len(events)) {
		t.Errorf("without the shared tier: %d getEventById calls for %d events, want more (each host fills on its own)", st.Calls.GetEventByID, len(events))
	}
}

// load sends requests for paths (GETs, or POSTs of a new event for paths
// written "POST /path") from conns goroutines until stop is closed, and
// counts the answers by status (0 for a transport error).
type load struct {
	mu     sync.Mutex
	counts map[int]int
	total  int
	// errs are the first failures, for the test's log.
	errs []string
	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(url string, paths []string, conns int) *load {
	l := &load{counts: map[int]int{}, stop: make(chan struct{})}
	hc := &http.Client{Timeout: 15 * time.Second}
	for g := range conns {
		l.wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				status := 0
				var res *http.Response
				var err error
				if p, ok := strings.CutPrefix(paths[i%len(paths)], "POST "); ok {
					res, err = hc.Post(url+p, "application/json", strings.NewReader(`{"name":"under load","userId":3}`))
				} else {
					res, err = hc.Get(url + paths[i%len(paths)])
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					status = res.StatusCode
				}
				l.mu.Lock()
				if status == 0 && len(l.errs) < 5 {
					l.errs = append(l.errs, fmt.Sprintf("%s: %v", paths[i%len(paths)], err))
				}
				if status >= 500 && len(l.errs) < 5 {
					l.errs = append(l.errs, fmt.Sprintf("%s: %d", paths[i%len(paths)], status))
				}
				l.counts[status]++
				l.total++
				l.mu.Unlock()
			}
		})
	}
	return l
}

// done returns the number of answers so far.
func (l *load) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// waitDone waits until n more answers than now arrived.
func (l *load) waitMore(t *testing.T, n int) {
	t.Helper()
	target := l.done() + n
	waitFor(t, fmt.Sprintf("%d more answers under load", n), func() bool { return l.done() >= target })
}

// finish stops the load and returns its counts.
func (l *load) finish() map[int]int {
	close(l.stop)
	l.wg.Wait()
	return l.counts
}

// waitFor polls cond until it holds or a minute passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

var readPaths = []string{"/events/user/1", "/users/1", "/events", "/users", "/events/1", "/users/2"}

// TestHostKilled: kill -9 of one host's supervisor under load through
// HAProxy costs at most the requests in flight at that moment; HAProxy
// takes the host out, and the others serve everything after.
func TestHostKilled(t *testing.T) {
	c := start(t, 3, simConfig(), noLimit...)
	const conns = 8
	l := startLoad(c.LB, readPaths, conns)
	l.waitMore(t, 200)
	victim := c.Hosts[1]
	victim.Kill()
	waitFor(t, "HAProxy to mark the killed host DOWN", func() bool {
		st, err := c.ServerStates()
		return err == nil && strings.HasPrefix(st[victim.Index], "DOWN")
	})
	before := l.finish()
	after := startLoad(c.LB, readPaths, conns)
	after.waitMore(t, 300)
	counts := after.finish()
	failed := 0
	for status, n := range before {
		if status != http.StatusOK {
			failed += n
		}
	}
	t.Logf("kill -9 of host %d's supervisor: before it was taken out %v, after %v", victim.Index, before, counts)
	if failed > conns {
		t.Errorf("%d requests failed around the kill, more than the %d that can be in flight: %v", failed, conns, before)
	}
	if len(counts) != 1 || counts[http.StatusOK] == 0 {
		t.Errorf("after HAProxy took the host out: %v, want only 200s", counts)
	}
	hc := client()
	for _, h := range []*Host{c.Hosts[0], c.Hosts[2]} {
		if status, _ := get(t, hc, h.URL+"/events/user/1"); status != http.StatusOK {
			t.Errorf("surviving host %d: %d", h.Index, status)
		}
	}
}

// TestRedisKilledUnderLoad: with Redis holding the rate limits, the
// cluster channel and the shared cache tier, Redis killed under a read
// load through HAProxy costs no read: no 5xx, no failed request.
func TestRedisKilledUnderLoad(t *testing.T) {
	c := start(t, 3, simConfig(), append([]string{"-cache.shared", "redis"}, noLimit...)...)
	const conns = 8
	l := startLoad(c.LB, readPaths, conns)
	l.waitMore(t, 200)
	c.KillRedis()
	l.waitMore(t, 600)
	counts := l.finish()
	t.Logf("reads through HAProxy, Redis killed midway: %v", counts)
	for status, n := range counts {
		if status != http.StatusOK {
			t.Errorf("%d reads answered %d (0: no answer), want only 200s", n, status)
		}
	}
}

// TestLeftoversRemoved: what a run killed before its teardown left (its
// lock file, no longer locked, a namespace and a bridge named after its
// ID) is removed by the next run.
func TestLeftoversRemoved(t *testing.T) {
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	const id = "dead00"
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(lockDir, "test-"+id+".lock")
	if err := os.WriteFile(lock, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeByID(id); _ = os.Remove(lock) })
	for _, args := range [][]string{{"netns", "add", "amx" + id + "h0"}, {"link", "add", "amxb" + id, "type", "bridge"}} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	reapLeftovers(slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "amx"+id) {
		t.Errorf("the dead run's namespace is still there: %s", out)
	}
	if exec.Command("ip", "link", "show", "amxb"+id).Run() == nil {
		t.Error("the dead run's bridge is still there")
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Errorf("the dead run's lock file: %v, want it removed", err)
	}
}
