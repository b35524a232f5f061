package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/tests"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redistest"
)

// newTestRedisStore builds a store on the Redis at url (each test starts its
// own with redistest.Start, so no test sees another's keys or load).
func newTestRedisStore(tb testing.TB, url, policy string, timeout time.Duration, opts ...Option) *RedisStore {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Store = StoreRedis
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	cfg.RedisTimeout = timeout
	cfg.OnRedisError = policy
	rdb := testClient(tb, url+sep+"pool_size=64")
	st, err := NewStore(context.Background(), cfg, nil, append(opts, WithRedis(rdb))...)
	if err != nil {
		tb.Fatalf("NewStore(redis %s): %v", url, err)
	}
	rs := st.(*RedisStore)
	tb.Cleanup(func() { rs.Close() })
	return rs
}

// testClient is a client of the Redis at url, closed when the test ends.
func testClient(tb testing.TB, url string) redis.UniversalClient {
	tb.Helper()
	rdb, err := redisconn.New(redisconn.Config{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// closedURL is a Redis URL of a socket nobody listens on.
func closedURL(t *testing.T) string {
	return "unix://" + filepath.Join(t.TempDir(), "none.sock") + "?db=0"
}

func TestRedisStoreULuleSuite(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		st := newTestRedisStore(t, redistest.Start(t).URL, OnRedisErrorDeny, time.Second)
		tests.TestStoreSequentialAccess(t, st)
		if n := st.RedisFailures(); n != 0 {
			t.Errorf("RedisFailures() = %d against a healthy Redis, want 0", n)
		}
	})
	// ulule's concurrent suite counts 250,000 calls in a 10 s window, which a
	// loaded machine does not always finish in time; this counts 4,000 calls
	// from 16 goroutines in a window of an hour, exactly.
	t.Run("concurrent", func(t *testing.T) {
		st := newTestRedisStore(t, redistest.Start(t).URL, OnRedisErrorDeny, 10*time.Second)
		rate := limiter.Rate{Limit: 1 << 20, Period: time.Hour}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 250 {
					if _, err := st.Get(context.Background(), "foo", rate); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		got, err := st.Peek(context.Background(), "foo", rate)
		if err != nil {
			t.Fatal(err)
		}
		if n := rate.Limit - got.Remaining; n != 16*250 || st.RedisFailures() != 0 {
			t.Errorf("count after 16×250 concurrent Gets = %d with %d Redis failures, want %d and none", n, st.RedisFailures(), 16*250)
		}
	})
}

// Two amexd instances (two stores, two connection pools) share one budget.
func TestRedisStoreInstancesShareBudget(t *testing.T) {
	url := redistest.Start(t).URL
	stores := []*RedisStore{
		newTestRedisStore(t, url, OnRedisErrorDeny, time.Second),
		newTestRedisStore(t, url, OnRedisErrorDeny, time.Second),
	}
	rate := limiter.Rate{Limit: 25, Period: time.Minute}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for _, st := range stores {
		for range 4 {
			wg.Go(func() {
				for range 20 {
					got, err := st.Get(context.Background(), "client", rate)
					if err != nil {
						t.Error(err)
						return
					}
					if !got.Reached {
						allowed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if n := allowed.Load(); n != rate.Limit {
		t.Errorf("two instances allowed %d of 160 requests, want exactly the limit %d", n, rate.Limit)
	}
	for i, st := range stores {
		if n := st.RedisFailures(); n != 0 {
			t.Errorf("store %d: RedisFailures() = %d, want 0", i, n)
		}
	}
}

func TestRedisStoreUnreachable(t *testing.T) {
	rate := limiter.Rate{Limit: 7, Period: time.Minute}
	for _, tc := range []struct {
		policy string
		want   limiter.Context
	}{
		{OnRedisErrorAllow, limiter.Context{Limit: 7, Remaining: 7}},
		{OnRedisErrorDeny, limiter.Context{Limit: 7, Remaining: 0, Reached: true}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			st := newTestRedisStore(t, closedURL(t), tc.policy, 50*time.Millisecond)
			ctx := context.Background()
			calls := []func() (limiter.Context, error){
				func() (limiter.Context, error) { return st.Get(ctx, "k", rate) },
				func() (limiter.Context, error) { return st.Increment(ctx, "k", 3, rate) },
				func() (limiter.Context, error) { return st.Peek(ctx, "k", rate) },
				func() (limiter.Context, error) { return st.Reset(ctx, "k", rate) },
			}
			for i, call := range calls {
				before := time.Now()
				got, err := call()
				if err != nil {
					t.Fatalf("call %d returned error %v; Redis failures must be answered by the policy", i, err)
				}
				reset := got.Reset
				got.Reset = 0
				if got != tc.want {
					t.Errorf("call %d = %+v, want %+v", i, got, tc.want)
				}
				if lo, hi := before.Add(rate.Period).Unix(), time.Now().Add(rate.Period).Unix(); reset < lo || reset > hi {
					t.Errorf("call %d: Reset %d, want one period from now [%d, %d]", i, reset, lo, hi)
				}
				if n := st.RedisFailures(); n != uint64(i+1) {
					t.Errorf("after %d calls RedisFailures() = %d", i+1, n)
				}
			}
		})
	}
}

func TestRedisStoreCallerGaveUp(t *testing.T) {
	st := newTestRedisStore(t, closedURL(t), OnRedisErrorAllow, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := st.Get(ctx, "k", limiter.Rate{Limit: 3, Period: time.Second})
	if err != nil || got.Reached {
		t.Errorf("Get with a cancelled context = %+v, %v; want the allow answer", got, err)
	}
	if n := st.RedisFailures(); n != 0 {
		t.Errorf("RedisFailures() = %d after the caller gave up, want 0", n)
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func TestRedisStoreLogsOncePerInterval(t *testing.T) {
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	st := newTestRedisStore(t, closedURL(t), OnRedisErrorAllow, 50*time.Millisecond,
		WithLogger(logger), WithLogInterval(time.Minute))
	clk := newFakeClock()
	st.now = clk.Now
	rate := limiter.Rate{Limit: 3, Period: time.Second}

	if n := logs.count("redis not reachable yet"); n != 1 {
		t.Errorf("creating the store against a closed port logged %d start warnings, want 1", n)
	}
	for range 5 {
		st.Get(context.Background(), "k", rate)
	}
	if n := logs.count("redis failed"); n != 1 {
		t.Errorf("5 failures within the interval logged %d lines, want 1", n)
	}
	clk.Advance(time.Minute)
	st.Get(context.Background(), "k", rate)
	if n := logs.count("redis failed"); n != 2 {
		t.Errorf("a failure after the interval: %d lines in all, want 2", n)
	}
	if n := logs.count("not_logged=4"); n != 1 {
		t.Errorf("second line should report the 4 failures not logged; log:\n%s", logs.buf.String())
	}
}

// toggleProxy forwards TCP connections to Redis while up; while down it cuts
// open connections and refuses new ones by closing them at once.
type toggleProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     bool
	conns  map[net.Conn]struct{}
}

// newToggleProxy listens on loopback TCP and forwards to the Unix socket
// target.
func newToggleProxy(t *testing.T, target string) *toggleProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &toggleProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		p.set(false)
	})
	return p
}

func (p *toggleProxy) serve(c net.Conn) {
	p.mu.Lock()
	if !p.up {
		p.mu.Unlock()
		c.Close()
		return
	}
	up, err := net.Dial("unix", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() {
		io.Copy(up, c)
		up.Close()
	}()
	io.Copy(c, up)
	c.Close()
}

func (p *toggleProxy) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func TestRedisStoreRecovers(t *testing.T) {
	proxy := newToggleProxy(t, redistest.Start(t).Socket)
	logs := &lockedBuffer{}
	st := newTestRedisStore(t, "redis://"+proxy.ln.Addr().String()+"/0", OnRedisErrorAllow, 200*time.Millisecond,
		WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	ctx := context.Background()
	rate := limiter.Rate{Limit: 100, Period: time.Minute}

	// getUntil calls Get until it answers from Redis (up) or by the policy.
	getUntil := func(fromRedis bool) limiter.Context {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			failures := st.RedisFailures()
			got, err := st.Get(ctx, "client", rate)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if (st.RedisFailures() == failures) == fromRedis {
				return got
			}
		}
		t.Fatalf("Get did not answer from Redis=%v within 10s", fromRedis)
		return limiter.Context{}
	}

	if got := getUntil(false); got.Reached || got.Remaining != rate.Limit {
		t.Errorf("Get while Redis was down from the start = %+v, want the allow answer", got)
	}
	proxy.set(true)
	first := getUntil(true)
	if first.Remaining >= rate.Limit {
		t.Errorf("first Get answered by Redis = %+v, want a counted hit", first)
	}
	if n := logs.count("redis reachable again"); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}

	proxy.set(false)
	if got := getUntil(false); got.Reached || got.Remaining != rate.Limit {
		t.Errorf("Get after Redis went away = %+v, want the allow answer", got)
	}
	proxy.set(true)
	again := getUntil(true)
	if again.Remaining >= first.Remaining {
		t.Errorf("after recovering again Remaining = %d, want below %d: the count must live on in Redis", again.Remaining, first.Remaining)
	}
}

// newLocalRedisStore is a store with the local policy for instances
// machines, counting locally in a table of its own.
func newLocalRedisStore(t *testing.T, url string, instances int, timeout time.Duration) *RedisStore {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Store, cfg.RedisTimeout, cfg.Instances = StoreRedis, timeout, instances
	if cfg.OnRedisError != OnRedisErrorLocal {
		t.Fatalf("default on_redis_error = %q, want local", cfg.OnRedisError)
	}
	st, err := NewStore(context.Background(), cfg, nil, WithRedis(testClient(t, url)))
	if err != nil {
		t.Fatal(err)
	}
	rs := st.(*RedisStore)
	t.Cleanup(func() { rs.Close() })
	return rs
}

// reachedPattern makes n Gets of key and returns which were refused, and
// the limits the answers carried.
func reachedPattern(t *testing.T, st limiter.Store, key string, n int, rate limiter.Rate) ([]bool, map[int64]int) {
	t.Helper()
	var reached []bool
	limits := map[int64]int{}
	for range n {
		lc, err := st.Get(context.Background(), key, rate)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		reached = append(reached, lc.Reached)
		limits[lc.Limit]++
	}
	return reached, limits
}

// firstN is n false values followed by m true ones: n allowed, then m refused.
func firstN(n, m int) []bool {
	return append(make([]bool, n), slices.Repeat([]bool{true}, m)...)
}

// With Redis unreachable from the start, the local policy limits each key
// at this machine's share: 7 a minute over 2 machines is 4 here.
func TestRedisStoreLocalPolicyUnreachable(t *testing.T) {
	st := newLocalRedisStore(t, closedURL(t), 2, 50*time.Millisecond)
	rate := limiter.Rate{Limit: 7, Period: time.Minute}
	got, limits := reachedPattern(t, st, "k", 6, rate)
	if want := firstN(4, 2); !slices.Equal(got, want) {
		t.Errorf("6 Gets with Redis unreachable: reached %v, want %v", got, want)
	}
	if limits[4] != 6 {
		t.Errorf("answers carried limits %v, want the local share 4 on all 6", limits)
	}
	if lc, err := st.Peek(context.Background(), "k", rate); err != nil || !lc.Reached {
		t.Errorf("Peek = %+v, %v; want the local count, reached", lc, err)
	}
	if st.RedisFailures() != 7 || !st.Degraded() {
		t.Errorf("RedisFailures %d, Degraded %v; want 7 and true", st.RedisFailures(), st.Degraded())
	}
}

// With Redis paused (SIGSTOP) while other clients keep calling, a client is
// limited to the machine's share; once Redis continues, limiting is exact
// again.
func TestRedisStorePausedLimitsLocally(t *testing.T) {
	rds := redistest.Start(t)
	st := newLocalRedisStore(t, rds.URL, 2, time.Second)
	rate := limiter.Rate{Limit: 10, Period: time.Hour}
	if got, limits := reachedPattern(t, st, "before", 12, rate); !slices.Equal(got, firstN(10, 2)) || limits[10] != 12 {
		t.Fatalf("with Redis up: reached %v, limits %v; want 10 allowed of 12, all answered by Redis", got, limits)
	}

	// Load from other clients for the whole test.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for g := range 4 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				st.Get(context.Background(), fmt.Sprintf("load-%d-%d", g, i%50), rate)
			}
		})
	}
	defer func() {
		close(stop)
		load.Wait()
	}()

	rds.Pause()
	if got, limits := reachedPattern(t, st, "paused", 8, rate); !slices.Equal(got, firstN(5, 3)) || limits[5] != 8 {
		t.Errorf("with Redis paused: reached %v, limits %v; want the share, 5 of 8, counted locally", got, limits)
	}
	rds.Resume()
	deadline := time.Now().Add(30 * time.Second)
	for st.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("the store still answers by the policy 30s after Redis continued")
		}
		st.Get(context.Background(), "probe", rate) // waits for Redis or answers locally at once
		time.Sleep(10 * time.Millisecond)           // polling a condition, bounded by the deadline
	}
	if got, limits := reachedPattern(t, st, "after", 12, rate); !slices.Equal(got, firstN(10, 2)) || limits[10] != 12 {
		t.Errorf("after Redis continued: reached %v, limits %v; want exactly 10 of 12, all answered by Redis", got, limits)
	}
}
