package cache

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/freeport"
	"github.com/amexd/amexd/internal/testkit/redistest"
)

// privateRedis starts a redis-server of this test's own, on a Unix socket
// in a directory of its own (internal/testkit/redistest), and returns its URL.
func privateRedis(t *testing.T) string { return redistest.Start(t).URL }

// machine is one cache with its own shared-tier client, as one machine of a
// cluster would have.
func machine(t *testing.T, url string, wait time.Duration) (*Cache, *fakeClock, *Shared) {
	t.Helper()
	s := newShared(t, url, 2*time.Second, wait)
	c, clock := newCache(t, nil, WithShared(s))
	return c, clock, s
}

// newShared is a shared tier on a client of its own for the Redis at url,
// closed when the test ends.
func newShared(t *testing.T, url string, timeout, wait time.Duration) *Shared {
	t.Helper()
	rdb, err := redisconn.New(redisconn.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := NewShared(rdb, timeout, wait, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// counting returns a fetch answering body and the number of its calls.
func counting(body string) (func(context.Context) ([]byte, error), *atomic.Int64) {
	var n atomic.Int64
	return func(context.Context) ([]byte, error) {
		n.Add(1)
		return []byte(body), nil
	}, &n
}

func TestSharedTierOneFetchAcrossMachines(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, 10*time.Second)
	b, _, sharedB := machine(t, url, 10*time.Second)

	release := make(chan struct{})
	var calls atomic.Int64
	slow := func(context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte(`{"id":1}`), nil
	}
	var wg sync.WaitGroup
	var gotA Entry
	wg.Add(1)
	go func() {
		defer wg.Done()
		gotA, _, _ = a.Get(context.Background(), KindUser, "user:1", slow)
	}()
	waitFor(t, "a's fetch to start", func() bool { return calls.Load() == 1 })
	var gotB Entry
	var errB error
	wg.Add(1)
	go func() {
		defer wg.Done()
		gotB, _, errB = b.Get(context.Background(), KindUser, "user:1", slow)
	}()
	// b's Get is under way at once; wait until it is polling Redis for
	// a's fill, not merely started, before a's fill may end.
	waitFor(t, "b to wait for a's fill", func() bool { return sharedB.Waiting() == 1 })
	close(release)
	wg.Wait()
	if errB != nil {
		t.Fatalf("b: %v", errB)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("two machines missing one key made %d upstream calls, want 1", n)
	}
	if string(gotB.Body) != `{"id":1}` || gotB.ETag != gotA.ETag {
		t.Errorf("b got %q %s, want a's answer %q %s", gotB.Body, gotB.ETag, gotA.Body, gotA.ETag)
	}
	// b stored it in its own cache: a hit, no Redis needed.
	if _, st, _ := b.Get(context.Background(), KindUser, "user:1", slow); st != StatusHit {
		t.Errorf("b's second read: %s, want HIT", st)
	}
}

func TestSharedTierKeepsTheFillsWindows(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, time.Second)
	b, clockB, _ := machine(t, url, time.Second)
	fetch, calls := counting(`"u"`)
	if _, _, err := a.Get(context.Background(), KindUser, "user:2", fetch); err != nil {
		t.Fatal(err)
	}
	fresh := DefaultConfig().User.Fresh
	clockB.Advance(fresh - time.Second)
	if _, _, err := b.Get(context.Background(), KindUser, "user:2", fetch); err != nil || calls.Load() != 1 {
		t.Fatalf("b within a's fresh window: err %v, %d calls, want 1", err, calls.Load())
	}
	// b's copy ends when a's fill does, not a full window after b took it.
	clockB.Advance(2 * time.Second)
	if _, st, _ := b.Get(context.Background(), KindUser, "user:2", fetch); st != StatusMiss || calls.Load() != 2 {
		t.Errorf("b past a's fresh window: %s with %d calls, want a MISS with 2", st, calls.Load())
	}
}

func TestSharedTierInvalidate(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, time.Second)
	b, _, _ := machine(t, url, time.Second)
	old, _ := counting(`"old"`)
	if _, _, err := a.Get(context.Background(), KindUser, "user:3", old); err != nil {
		t.Fatal(err)
	}
	if err := a.Invalidate(context.Background(), "user:3"); err != nil {
		t.Fatal(err)
	}
	fresh, calls := counting(`"new"`)
	for name, c := range map[string]*Cache{"a": a, "b": b} {
		if e, _, err := c.Get(context.Background(), KindUser, "user:3", fresh); err != nil || string(e.Body) != `"new"` {
			t.Errorf("%s after the invalidation: %q %v, want \"new\"", name, e.Body, err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d fetches after the invalidation, want 1 (the second machine reads the first's)", calls.Load())
	}
}

// holdFill starts a Get of key on c whose fetch, once called, waits; it
// returns when the fetch was called, and finish lets the fetch answer body
// and waits for the Get to return.
func holdFill(c *Cache, kind Kind, key, body string) (finish func()) {
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = c.Get(context.Background(), kind, key, func(context.Context) ([]byte, error) {
			close(started)
			<-release
			return []byte(body), nil
		})
	}()
	<-started
	return func() {
		close(release)
		<-done
	}
}

// A fill that asked the upstream before a write's invalidation must not
// leave its older answer in Redis for the other machines.
func TestSharedTierFillRacingInvalidation(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, time.Second)
	b, _, _ := machine(t, url, time.Second)
	c, _, _ := machine(t, url, time.Second)
	finish := holdFill(a, KindUserEvents, "user-events:4", `"before the write"`)
	if err := b.Invalidate(context.Background(), "user-events:4"); err != nil {
		t.Fatal(err)
	}
	finish()
	e, _, err := c.Get(context.Background(), KindUserEvents, "user-events:4", func(context.Context) ([]byte, error) {
		return []byte(`"after the write"`), nil
	})
	if err != nil || string(e.Body) != `"after the write"` {
		t.Errorf("a machine reading after the write got %q %v, want the new answer", e.Body, err)
	}
}

// A purge hides what the tier holds from every machine, a fill that asked
// the upstream before it stores nothing after it, and a purge stamped
// earlier than the last one (another machine's clock behind) revives
// nothing.
func TestSharedTierPurge(t *testing.T) {
	ctx := context.Background()
	url := privateRedis(t)
	a, clockA, sharedA := machine(t, url, time.Second)
	b, clockB, _ := machine(t, url, time.Second)
	old, _ := counting(`"before the purge"`)
	for _, key := range []string{"user:8", "user:10"} {
		if _, _, err := a.Get(ctx, KindUser, key, old); err != nil {
			t.Fatal(err)
		}
	}
	finish := holdFill(a, KindUser, "user:9", `"fetched before the purge"`)
	purgedAt := clockA.Now()
	if err := sharedA.Purge(ctx, purgedAt); err != nil {
		t.Fatal(err)
	}
	// The held fill's answer comes after the purge, as it would in
	// time; what it fetched is from before.
	clockA.Advance(time.Millisecond)
	clockB.Advance(time.Millisecond)
	finish()

	fresh, calls := counting(`"after the purge"`)
	for _, key := range []string{"user:8", "user:9"} {
		if e, _, err := b.Get(ctx, KindUser, key, fresh); err != nil || string(e.Body) != `"after the purge"` {
			t.Errorf("another machine reading %s after the purge got %q %v, want a new answer", key, e.Body, err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d fetches after the purge, want 2", n)
	}

	// An earlier stamp leaves the purge in place: a's answer of user:10,
	// stored before purgedAt and still in Redis, stays hidden from a
	// machine new to the key, which reads b's answers of the others.
	if err := sharedA.Purge(ctx, purgedAt.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, clockC, _ := machine(t, url, time.Second)
	clockC.Advance(time.Millisecond)
	for _, key := range []string{"user:8", "user:10"} {
		if e, _, err := c.Get(ctx, KindUser, key, fresh); err != nil || string(e.Body) != `"after the purge"` {
			t.Errorf("a third machine reading %s got %q %v, want an answer from after the purge", key, e.Body, err)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d fetches, want 3: user:10 fetched again, user:8 read from Redis", n)
	}
}

func TestSharedTierPurgeFailsWhenRedisIsDown(t *testing.T) {
	s := newShared(t, unanswering(t), 50*time.Millisecond, time.Second)
	if err := s.Purge(context.Background(), time.Now()); err == nil || !strings.Contains(err.Error(), "purge the shared tier") {
		t.Errorf("Purge with Redis hanging = %v, want an error naming the purge", err)
	}
}

func TestSharedTierWaitIsBounded(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, 10*time.Second)
	b, _, _ := machine(t, url, 200*time.Millisecond)
	finish := holdFill(a, KindUser, "user:5", `"a"`)
	fetch, calls := counting(`"b"`)
	e, st, err := b.Get(context.Background(), KindUser, "user:5", fetch)
	finish()
	if err != nil || st != StatusMiss || string(e.Body) != `"b"` || calls.Load() != 1 {
		t.Errorf("b while a holds the lock past b's wait: %q %s %v, %d calls; want its own fetch", e.Body, st, err, calls.Load())
	}
}

// unanswering accepts connections and never answers: a Redis that hangs.
func unanswering(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "redis://" + ln.Addr().String() + "/0"
}

func TestSharedTierRedisDownOrHanging(t *testing.T) {
	closed := func(t *testing.T) string {
		addr, err := freeport.Loopback()
		if err != nil {
			t.Fatal(err)
		}
		return "redis://" + addr + "/0"
	}
	for name, url := range map[string]func(*testing.T) string{"down": closed, "hanging": unanswering} {
		t.Run(name, func(t *testing.T) {
			s := newShared(t, url(t), 50*time.Millisecond, time.Second)
			c, _ := newCache(t, nil, WithShared(s))
			fetch, calls := counting(`"x"`)
			for i, key := range []string{"user:6", "user:7"} {
				e, st, err := c.Get(context.Background(), KindUser, key, fetch)
				if err != nil || st != StatusMiss || string(e.Body) != `"x"` {
					t.Fatalf("read %d: %q %s %v, want the upstream's answer", i, e.Body, st, err)
				}
			}
			if calls.Load() != 2 || s.Errors() == 0 {
				t.Errorf("%d fetches and %d Redis errors, want 2 fetches and the errors counted", calls.Load(), s.Errors())
			}
			err := c.Invalidate(context.Background(), "user:6")
			if err == nil || !strings.Contains(err.Error(), "shared tier") {
				t.Errorf("Invalidate with Redis %s: %v, want the shared tier's error", name, err)
			}
			if _, ok := c.lookup("user:6"); ok {
				t.Error("the local entry survived an invalidation whose Redis part failed")
			}
		})
	}
}

func TestSharedConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Shared = "memcached" }, `cache.shared: "memcached"`},
		{func(c *Config) { c.Shared, c.RedisURL = SharedRedis, "http://x" }, "cache.redis_url"},
		{func(c *Config) { c.Shared, c.RedisTimeout = SharedRedis, 0 }, "cache.redis_timeout"},
		{func(c *Config) { c.Shared, c.SharedWait = SharedRedis, -time.Second }, "cache.shared_wait"},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want an error naming %s", err, tc.want)
		}
	}
	cfg := DefaultConfig()
	cfg.Shared = SharedRedis
	if err := cfg.Validate(); err != nil {
		t.Errorf("redis with the default URL (the redis section's): %v", err)
	}
	rdb, err := redisconn.New(redisconn.Config{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, err := NewShared(rdb, 0, time.Second, nil); err == nil {
		t.Error("NewShared accepted a zero timeout")
	}
	if _, err := NewShared(nil, time.Second, time.Second, nil); err == nil {
		t.Error("NewShared accepted no client")
	}
}

// A machine that has nothing of its own answers from the shared tier's
// stale copy when the upstream fails.
func TestSharedTierStaleWhenUpstreamFails(t *testing.T) {
	url := privateRedis(t)
	a, _, _ := machine(t, url, time.Second)
	b, clockB, _ := machine(t, url, time.Second)
	fetch, _ := counting(`"kept"`)
	if _, _, err := a.Get(context.Background(), KindUser, "user:8", fetch); err != nil {
		t.Fatal(err)
	}
	clockB.Advance(DefaultConfig().User.Fresh + time.Second)
	down := errors.New("upstream down")
	e, st, err := b.Get(context.Background(), KindUser, "user:8", func(context.Context) ([]byte, error) { return nil, down })
	if err != nil || st != StatusStale || string(e.Body) != `"kept"` {
		t.Errorf("b past the fresh window, upstream failing: %q %s %v, want a's answer as STALE", e.Body, st, err)
	}
	clockB.Advance(DefaultConfig().User.Stale)
	if _, _, err := b.Get(context.Background(), KindUser, "user:8", func(context.Context) ([]byte, error) { return nil, down }); !errors.Is(err, down) {
		t.Errorf("b past the stale window too: %v, want the upstream's error", err)
	}
}
