package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/redistest"
)

// sharedUpstream is one simulator both instances call, as two machines
// would call the one Event API.
func sharedUpstream(t *testing.T) string {
	t.Helper()
	cfg := simulator.DefaultConfig()
	cfg.ListErrorRate = 0
	cfg.EventDelay = 10 * time.Millisecond
	cfg.AddFail = 0
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTwoInstancesShareRedis: two daemons (two "machines") on one Redis
// share one budget exactly, and a write on one is visible on the other at
// once.
//
// The test has a Redis of its own, so no other test's keys, load or
// FLUSHALL reach it, and a Redis timeout far above any call's latency under
// load: the budget is exact only while every call reaches Redis.
func TestTwoInstancesShareRedis(t *testing.T) {
	rds := redistest.Start(t)
	up := sharedUpstream(t)
	args := []string{"-workers", "2", "-ratelimit.rate", "30-M", "-ratelimit.store", "redis",
		"-redis.url", rds.URL, "-ratelimit.redis_timeout", "5s", "-upstream.url", up}
	a, b := start(t, args...), start(t, args...)
	c := fresh()
	counts := map[int]int{}
	for i := range 60 {
		d := a
		if i%2 == 1 {
			d = b
		}
		status, _ := get(t, c, d.url("/events/circuit-status"))
		counts[status]++
	}
	if counts[http.StatusOK] != 30 || counts[http.StatusTooManyRequests] != 30 {
		t.Errorf("60 requests over two instances: %v, want exactly 30×200 and 30×429", counts)
	}

	rds.Flush()
	// Warm b's caches, then write on a and read on b at once.
	for _, path := range []string{"/events/user/1", "/events", "/users/1"} {
		for range 4 {
			if status, _ := get(t, c, b.url(path)); status != 200 {
				t.Fatalf("warm %s: %d", path, status)
			}
		}
	}
	for i := range 5 {
		rds.Flush() // a fresh budget: this part is about visibility
		status, body := post(t, c, a.url("/events"), `{"name":"cross-machine","userId":1}`)
		if status != http.StatusCreated {
			t.Fatalf("POST on a: %d %s", status, body)
		}
		var ev eventapi.Event
		if err := json.Unmarshal([]byte(body), &ev); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/events/user/1", "/events", "/users/1"} {
			if status, got := get(t, c, b.url(path)); status != http.StatusOK || !strings.Contains(got, string(ev.ID)) {
				t.Errorf("write %d: GET %s on b right after the 201 on a lacks %s", i, path, ev.ID)
			}
		}
	}
}

// TestRedisOutage: while Redis is down the service keeps answering by the
// allow policy (no 500, no 429), and limits again once Redis is back.
func TestRedisOutage(t *testing.T) {
	rds := redistest.Start(t)
	d := start(t, "-workers", "2", "-ratelimit.rate", "5-M", "-ratelimit.store", "redis",
		"-redis.url", rds.URL, "-ratelimit.on_redis_error", "allow", "-ratelimit.redis_timeout", "5s")
	c := fresh()
	limited := func(n int) map[int]int {
		counts := map[int]int{}
		for range n {
			status, _ := get(t, c, d.url("/events/circuit-status"))
			counts[status]++
		}
		return counts
	}
	if got := limited(8); got[200] != 5 || got[429] != 3 {
		t.Fatalf("with Redis up: %v, want 5×200 and 3×429", got)
	}
	rds.Stop()
	if got := limited(20); got[200] != 20 {
		t.Errorf("with Redis down and the allow policy: %v, want 20×200", got)
	}
	rds.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := limited(6)
		if got[http.StatusInternalServerError] > 0 {
			t.Fatalf("a 500 while Redis came back: %v", got)
		}
		if got[429] > 0 {
			break // limiting again
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not limiting 15s after Redis returned: %v", got)
		}
	}
}

// TestRedisPausedLimitsLocally: with Redis paused (SIGSTOP) while other
// clients keep the daemon busy, a client is still limited, to this
// machine's share of the budget (20 a minute over 2 instances: 10), counted
// in the machine's shared table across both workers. Once Redis continues
// and every worker is back on it, limiting is exact again.
func TestRedisPausedLimitsLocally(t *testing.T) {
	rds := redistest.Start(t)
	d := start(t, "-workers", "2", "-ratelimit.rate", "20-M", "-ratelimit.store", "redis",
		"-redis.url", rds.URL, "-ratelimit.redis_timeout", "2s", "-ratelimit.instances", "2")
	// burst sends n requests from the loopback address src and counts the
	// answers by status and by the limit they announced.
	burst := func(src string, n int) (statuses, limits map[string]int) {
		statuses, limits = map[string]int{}, map[string]int{}
		c := from(src)
		for range n {
			res, err := c.Get(d.url("/events/circuit-status"))
			if err != nil {
				t.Fatalf("GET from %s: %v", src, err)
			}
			res.Body.Close()
			statuses[strconv.Itoa(res.StatusCode)]++
			limits[res.Header.Get("X-RateLimit-Limit")]++
		}
		return statuses, limits
	}
	exact := func(what string, statuses, limits map[string]int, allowed, refused int, limit string) {
		t.Helper()
		if statuses["200"] != allowed || statuses["429"] != refused || len(statuses) != 2 || limits[limit] != allowed+refused {
			t.Errorf("%s: statuses %v, announced limits %v; want exactly %d×200 and %d×429, every answer with limit %s",
				what, statuses, limits, allowed, refused, limit)
		}
	}
	statuses, limits := burst("127.0.4.1", 25)
	exact("with Redis up", statuses, limits, 20, 5, "20")

	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer func() {
		stopLoad()
		load.Wait()
	}()
	for g := range 4 {
		load.Go(func() {
			c := from(fmt.Sprintf("127.0.3.%d", g+1))
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/events/circuit-status"), nil)
				if res, err := c.Do(req); err == nil {
					res.Body.Close()
				}
			}
		})
	}

	rds.Pause()
	statuses, limits = burst("127.0.4.2", 25)
	exact("with Redis paused", statuses, limits, 10, 15, "10")

	rds.Resume()
	deadline := time.Now().Add(60 * time.Second)
	for d.metric(t, `amexd_ratelimit_redis_degraded{slot="0"}`)+d.metric(t, `amexd_ratelimit_redis_degraded{slot="1"}`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("workers still limit locally 60s after Redis continued")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if n := d.metric(t, `amexd_ratelimit_redis_fallbacks_total{slot="0"}`) + d.metric(t, `amexd_ratelimit_redis_fallbacks_total{slot="1"}`); n < 25 {
		t.Errorf("amexd_ratelimit_redis_fallbacks_total = %v over both slots, want at least the 25 paused requests", n)
	}
	statuses, limits = burst("127.0.4.3", 25)
	exact("after Redis continued", statuses, limits, 20, 5, "20")
}

// TestCachePurgeReachesTheSharedTier: with cache.shared redis, `amexctl
// cache purge` purges the tier in Redis before the workers' caches, so
// that the next read asks the upstream instead of refilling from Redis;
// with Redis stopped it says the tier was not purged and fails.
func TestCachePurgeReachesTheSharedTier(t *testing.T) {
	rds := redistest.Start(t)
	_, up := upstreamWith(t, func(c *simulator.Config) { c.EventDelay = 10 * time.Millisecond })
	d := start(t, "-workers", "2", "-upstream.url", up, "-cache.shared", "redis",
		"-cache.redis_url", rds.URL, "-cache.redis_timeout", "2s")
	c := fresh()
	read := func() {
		t.Helper()
		// By its key: a bare number would also look the number itself up.
		if status, body := get(t, c, d.url("/events/event-1")); status != http.StatusOK {
			t.Fatalf("GET /events/event-1: %d %s", status, body)
		}
	}
	for range 4 {
		read()
	}
	if n := eventCalls(t, up); n != 1 {
		t.Fatalf("%d getEventById calls for 4 reads, want 1", n)
	}

	if out := d.amexctl(t, "cache", "purge"); !strings.Contains(out, "purged the shared tier in Redis and the cache of 2 workers") {
		t.Errorf("amexctl cache purge said %q", out)
	}
	// The workers apply the purge as their control messages arrive.
	deadline := time.Now().Add(10 * time.Second)
	for eventCalls(t, up) == 1 {
		if time.Now().After(deadline) {
			t.Fatal("no read asked the upstream again within 10s of the purge")
		}
		read()
	}
	for range 4 {
		read()
	}
	if n := eventCalls(t, up); n != 2 {
		t.Errorf("%d getEventById calls, want 2: one after the purge, and the other worker reads its answer from Redis", n)
	}

	rds.Stop()
	out, err := exec.Command(amexctl, "--socket", d.Socket, "cache", "purge").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "but not the shared tier in Redis") {
		t.Errorf("amexctl cache purge with Redis stopped: %v %q, want a failure naming the shared tier", err, out)
	}
}
