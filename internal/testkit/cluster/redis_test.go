package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
)

// TestSharedTiersOnRedisCluster: the shared-tier assertions the other
// tests make on one Redis node hold on a Redis Cluster of three masters:
// the limit exact across hosts, read-your-writes across hosts, one
// upstream call per key across hosts, with the keys spread over the
// masters.
func TestSharedTiersOnRedisCluster(t *testing.T) {
	t.Run("limit exact", func(t *testing.T) {
		c := startOn(t, RedisCluster, 3, simConfig(), limit30...)
		limitExactThroughHAProxy(t, c)
	})
	t.Run("read-your-writes", func(t *testing.T) {
		c := startOn(t, RedisCluster, 3, simConfig(), append([]string{"-cache.shared", "redis"}, noLimit...)...)
		writeReadBack(t, c)
	})
	t.Run("one upstream call per key", func(t *testing.T) {
		c := startOn(t, RedisCluster, 3, coldSim(), append([]string{"-cache.shared", "redis"}, noLimit...)...)
		coldHosts(t, c, true)
		keys, err := c.RedisNodes.Keys()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("keys per master of the Redis Cluster: %v", keys)
		for i, n := range keys {
			if n == 0 {
				t.Errorf("master %d holds no key: %v, want the keys spread over the slots", i, keys)
			}
		}
	})
}

// The Sentinel failover test's limits: the over-limit client's budget
// (per hour, so that no window ends during the test), and how long the
// phases may take on a busy machine.
const (
	failoverBudget   = 30
	failoverDeadline = 90 * time.Second
	writeDeadline    = 60 * time.Second
)

// TestSentinelFailoverUnderLoad: three hosts on a Sentinel setup (master,
// replica, three sentinels) behind HAProxy under mixed load — reads, writes
// with an Idempotency-Key retried by their client until a final answer, one
// client over its limit, and writes on one host read back on the others —
// then kill -9 of the master, which is brought back once the replica took
// over. No read fails, every Idempotency-Key creates exactly one event, the
// limit admits at most one budget more meanwhile, and the limit and the
// invalidations across hosts are exact again afterwards; the figures are
// printed.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	c := startOn(t, RedisSentinel, 3, simConfig(),
		// The cache tier's own timeout, not baseArgs': a read skips a
		// Redis that does not answer (no count here depends on the tier).
		"-cache.shared", "redis", "-cache.redis_timeout", "100ms",
		"-ratelimit.rate", strconv.Itoa(failoverBudget)+"-H",
		"-ratelimit.instances", "3",
		// Every client of the test names itself in X-Forwarded-For, from
		// loopback through HAProxy or from the bridge directly.
		"-ratelimit.trusted_proxies", "10.0.0.0/8,127.0.0.1/32",
		"-redis.wait_replicas", "1",
		"-idempotency.lease", "10s")
	r := newFailoverRun(c)
	r.start()
	stopped := false
	defer func() {
		if !stopped {
			r.stop()
		}
	}()

	waitFor(t, "the over-limit client to be refused, a write to complete and a write to be read back on the other hosts", func() bool {
		return r.limited.countSince(time.Time{}, refused) >= 5 && r.writes.completed.Load() >= 3 && r.probes.countSince(time.Time{}, passed) >= 1
	})
	killed := c.Sentinel.KillMaster()
	promoted, err := c.Sentinel.AwaitFailover()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sentinel.Rejoin(); err != nil {
		t.Fatal(err)
	}
	rejoined := time.Now()
	completedAtRejoin := r.writes.completed.Load()
	// Recovered: the limit answers from Redis again, several writes read
	// back on the other hosts in a row, keyed writes complete again.
	deadline := killed.Add(failoverDeadline)
	for {
		exactFor := r.limited.streakSince(killed, limitAnswer.exact)
		passes := r.probes.streakSince(killed, passed)
		if exactFor >= 20 && passes >= 3 && r.writes.completed.Load() >= completedAtRejoin+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the kill: %d exact limit answers in a row, %d read-backs in a row, %d writes completed since the rejoin; want 20, 3, 3",
				failoverDeadline, exactFor, passes, r.writes.completed.Load()-completedAtRejoin)
		}
		time.Sleep(50 * time.Millisecond) // polling the load's counts, bounded by the deadline
	}
	r.stop()
	stopped = true

	perKey := eventsPerKey(t, c)
	r.report(t, killed, promoted, rejoined, perKey)
}

// failoverRun is the mixed load of TestSentinelFailoverUnderLoad.
type failoverRun struct {
	c       *Cluster
	hc      *http.Client
	stopC   chan struct{}
	wg      sync.WaitGroup
	clients atomic.Uint64 // numbers the X-Forwarded-For address of each request

	reads   statusCounts
	writes  writeCounts
	limited timeline[limitAnswer]
	probes  timeline[probe]
}

// statusCounts counts answers by status, 0 for no answer.
type statusCounts struct {
	mu     sync.Mutex
	counts map[int]int
}

func (s *statusCounts) add(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[int]int{}
	}
	s.counts[status]++
}

func (s *statusCounts) snapshot() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// writeCounts counts the keyed writes: every attempt by status, and each
// key's final answer.
type writeCounts struct {
	attempts  statusCounts
	mu        sync.Mutex
	final     map[string]int
	completed atomic.Int64
}

// limitAnswer is one answer to the over-limit client.
type limitAnswer struct {
	at     time.Time
	status int
	// limit is X-RateLimit-Limit: the budget when counted on Redis, this
	// machine's share when counted locally.
	limit int
}

// exact reports whether a is the answer of an exhausted budget counted on
// Redis.
func (a limitAnswer) exact() bool {
	return a.status == http.StatusTooManyRequests && a.limit == failoverBudget
}

// probe is one write on a host read back on the two others, done at at.
type probe struct {
	at     time.Time
	passed bool
}

func (p probe) when() time.Time       { return p.at }
func (a limitAnswer) when() time.Time { return a.at }

// timeline is what the run's goroutines record, in the order they do.
type timeline[T interface{ when() time.Time }] struct {
	mu    sync.Mutex
	items []T
}

func (l *timeline[T]) add(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, v)
}

func (l *timeline[T]) all() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

// countSince counts the items after t for which ok holds.
func (l *timeline[T]) countSince(t time.Time, ok func(T) bool) int {
	n := 0
	for _, v := range l.all() {
		if v.when().After(t) && ok(v) {
			n++
		}
	}
	return n
}

// streakSince counts the items in a row at the end for which ok holds,
// among those after t.
func (l *timeline[T]) streakSince(t time.Time, ok func(T) bool) int {
	items := l.all()
	n := 0
	for i := len(items) - 1; i >= 0 && items[i].when().After(t) && ok(items[i]); i-- {
		n++
	}
	return n
}

func refused(a limitAnswer) bool { return a.status == http.StatusTooManyRequests }
func passed(p probe) bool        { return p.passed }

func newFailoverRun(c *Cluster) *failoverRun {
	return &failoverRun{
		c:      c,
		hc:     &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		stopC:  make(chan struct{}),
		writes: writeCounts{final: map[string]int{}},
	}
}

const (
	failoverReaders = 4
	failoverWriters = 3
	// limitedClient is the over-limit client's address; every other
	// request comes from an address of its own in 100.64.0.0/10.
	limitedClient = "203.0.113.7"
)

func (r *failoverRun) start() {
	for g := range failoverReaders {
		r.wg.Go(func() { r.read(g) })
	}
	for g := range failoverWriters {
		r.wg.Go(func() { r.write(g) })
	}
	r.wg.Go(r.overLimit)
	r.wg.Go(r.probe)
}

// stop ends the load; a writer first gets its key's final answer.
func (r *failoverRun) stop() {
	close(r.stopC)
	r.wg.Wait()
}

func (r *failoverRun) stopping() bool {
	select {
	case <-r.stopC:
		return true
	default:
		return false
	}
}

// newClient returns an address no request used before.
func (r *failoverRun) newClient() string {
	n := r.clients.Add(1)
	return fmt.Sprintf("100.%d.%d.%d", 64+n>>16&63, n>>8&255, n&255)
}

// do sends one request from client and returns its status (0 for no
// answer), headers and body.
func (r *failoverRun) do(method, url, client string, body []byte, header ...string) (int, http.Header, []byte) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("X-Forwarded-For", client)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := r.hc.Do(req)
	if err != nil {
		return 0, nil, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

func (r *failoverRun) read(g int) {
	for i := g; !r.stopping(); i++ {
		status, _, _ := r.do(http.MethodGet, r.c.LB+readPaths[i%len(readPaths)], r.newClient(), nil)
		r.reads.add(status)
	}
}

// write creates events, each under an Idempotency-Key of its own, and
// retries each (after a no-answer, 503 or 409) until its final answer.
func (r *failoverRun) write(g int) {
	for n := 0; !r.stopping(); n++ {
		key := fmt.Sprintf("failover-%d-%d", g, n)
		body := fmt.Appendf(nil, `{"name":%q,"userId":3}`, key)
		final := 0
		for give := time.Now().Add(writeDeadline); time.Now().Before(give); {
			status, _, _ := r.do(http.MethodPost, r.c.LB+"/events", r.newClient(), body, "Idempotency-Key", key)
			r.writes.attempts.add(status)
			if status != 0 && status != http.StatusServiceUnavailable && status != http.StatusConflict {
				final = status
				break
			}
			time.Sleep(100 * time.Millisecond) // the client's retry pace
		}
		r.writes.mu.Lock()
		r.writes.final[key] = final
		r.writes.mu.Unlock()
		if final == http.StatusCreated {
			r.writes.completed.Add(1)
		}
	}
}

// overLimit is the client over its limit: one request every 25 ms.
func (r *failoverRun) overLimit() {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !r.stopping() {
		status, h, _ := r.do(http.MethodGet, r.c.LB+"/users/1", limitedClient, nil)
		limit, _ := strconv.Atoi(h.Get("X-RateLimit-Limit"))
		r.limited.add(limitAnswer{at: time.Now(), status: status, limit: limit})
		select {
		case <-tick.C:
		case <-r.stopC:
		}
	}
}

// probe reads /events on two hosts until both workers of each have it
// cached (a connection reaches either), writes an event on the third, and
// reads /events on the two again: read-your-writes across hosts holds
// only when the write's invalidation reached them.
func (r *failoverRun) probe() {
	const warm, check = 6, 4
	hosts := r.c.Hosts
	for i := 0; !r.stopping(); i++ {
		writer := hosts[i%len(hosts)]
		var others []*Host
		for _, h := range hosts {
			if h != writer {
				others = append(others, h)
			}
		}
		for _, h := range others {
			for range warm {
				r.do(http.MethodGet, h.URL+"/events", r.newClient(), nil)
			}
		}
		status, _, body := r.do(http.MethodPost, writer.URL+"/events", r.newClient(), fmt.Appendf(nil, `{"name":"probe %d","userId":2}`, i))
		var ev eventapi.Event
		if status != http.StatusCreated || json.Unmarshal(body, &ev) != nil {
			r.probes.add(probe{at: time.Now()})
			continue
		}
		passed := true
		for _, h := range others {
			for range check {
				status, _, got := r.do(http.MethodGet, h.URL+"/events", r.newClient(), nil)
				passed = passed && status == http.StatusOK && bytes.Contains(got, ev.ID)
			}
		}
		r.probes.add(probe{at: time.Now(), passed: passed})
	}
}

// eventsPerKey counts the simulator's events by name, which each keyed
// write sets to its Idempotency-Key.
func eventsPerKey(t *testing.T, c *Cluster) map[string]int {
	t.Helper()
	status, body := get(t, client(), c.UpstreamURL+eventapi.PathEvents)
	var events []eventapi.Event
	if err := json.Unmarshal([]byte(body), &events); status != http.StatusOK || err != nil {
		t.Fatalf("simulator's events: %d %v", status, err)
	}
	out := map[string]int{}
	for _, ev := range events {
		if strings.HasPrefix(ev.Name, "failover-") {
			out[ev.Name]++
		}
	}
	return out
}

// report prints the run's figures and asserts on its counts.
func (r *failoverRun) report(t *testing.T, killed, promoted, rejoined time.Time, perKey map[string]int) {
	t.Helper()
	reads := r.reads.snapshot()
	attempts := r.writes.attempts.snapshot()
	r.writes.mu.Lock()
	final := r.writes.final
	r.writes.mu.Unlock()

	readsFailed, readsTotal := 0, 0
	for status, n := range reads {
		readsTotal += n
		if status != http.StatusOK {
			readsFailed += n
		}
	}
	keysByEvents := map[int]int{}
	finalFailed := 0
	for key, status := range final {
		keysByEvents[perKey[key]]++
		if status != http.StatusCreated {
			finalFailed++
			t.Errorf("key %s: final answer %d (0: none within %v), want 201", key, status, writeDeadline)
		}
		if perKey[key] != 1 {
			t.Errorf("key %s: %d events created, want exactly 1", key, perKey[key])
		}
	}
	for key, n := range perKey {
		if _, ok := final[key]; !ok {
			t.Errorf("key %s: %d events, but no write of the test has it", key, n)
		}
	}

	budgetBefore, overBudget, shareAnswers, limitOther := 0, 0, 0, 0
	lastInexact := time.Time{}
	answers := r.limited.all()
	for _, a := range answers {
		switch {
		case !a.at.After(killed) && a.status == http.StatusOK:
			budgetBefore++
		case a.at.After(killed) && a.status == http.StatusOK:
			overBudget++
		}
		if a.status != http.StatusOK && a.status != http.StatusTooManyRequests {
			limitOther++
		}
		if a.at.After(killed) && a.limit != failoverBudget {
			shareAnswers++
		}
		if a.at.After(killed) && !a.exact() {
			lastInexact = a.at
		}
	}
	exactAgain := 0.0
	for _, a := range answers {
		if a.at.After(killed) && a.at.After(lastInexact) {
			exactAgain = a.at.Sub(killed).Seconds()
			break
		}
	}
	flowAgain, lastFailed := 0.0, time.Time{}
	probes := r.probes.all()
	for _, p := range probes {
		if !p.passed {
			lastFailed = p.at
		}
	}
	probesFailed := 0
	for _, p := range probes {
		if p.at.After(killed) && !p.passed {
			probesFailed++
		}
	}
	for _, p := range probes {
		if p.at.After(killed) && p.at.After(lastFailed) {
			flowAgain = p.at.Sub(killed).Seconds()
			break
		}
	}

	t.Logf("sentinel failover under load: kill -9 of the master; sentinels promoted the replica %.1f s after, the old master rejoined as a replica %.1f s after",
		promoted.Sub(killed).Seconds(), rejoined.Sub(killed).Seconds())
	t.Logf("  reads through HAProxy:        %d, failed %d %v", readsTotal, readsFailed, reads)
	t.Logf("  keyed writes:                 %d keys, %d attempts %v, final answer not 201: %d", len(final), total(attempts), attempts, finalFailed)
	t.Logf("  events created per key:       %v (events: keys)", keysByEvents)
	t.Logf("  over-limit client (budget %d/h over 3 hosts): %d admitted before the kill, %d admitted above its budget during the failover, %d answers counted on a machine's share, %d neither 200 nor 429",
		failoverBudget, budgetBefore, overBudget, shareAnswers, limitOther)
	t.Logf("  limit exact again:            %.1f s after the kill", exactAgain)
	t.Logf("  read-back on the other hosts: %d probes, %d failed after the kill; invalidations flow again %.1f s after the kill", len(probes), probesFailed, flowAgain)

	if readsFailed != 0 {
		t.Errorf("%d of %d reads failed: %v, want none", readsFailed, readsTotal, reads)
	}
	if budgetBefore != failoverBudget {
		t.Errorf("over-limit client: %d admitted before the kill, want exactly the budget %d", budgetBefore, failoverBudget)
	}
	if overBudget > failoverBudget {
		t.Errorf("over-limit client: %d admitted above its budget during the failover, want at most one budget (%d: each machine's share)", overBudget, failoverBudget)
	}
	if limitOther != 0 {
		t.Errorf("over-limit client: %d answers neither 200 nor 429", limitOther)
	}
}

func total(counts map[int]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}
