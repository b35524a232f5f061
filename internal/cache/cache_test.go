package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newCache returns a cache with cfg (the defaults when nil) on a fake clock,
// closed when the test ends.
func newCache(t testing.TB, cfg *Config, opts ...Option) (*Cache, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if cfg == nil {
		def := DefaultConfig()
		cfg = &def
	}
	c, err := New(*cfg, append([]Option{WithClock(clock.Now)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, clock
}

// waitFor fails the test unless cond becomes true within a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// receive returns the next value from ch, failing the test if none comes
// within a few seconds.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

type result struct {
	entry  Entry
	status Status
	err    error
}

// getAsync runs Get in a goroutine and delivers its result on the channel.
func getAsync(ctx context.Context, c *Cache, kind Kind, key string, fetch func(context.Context) ([]byte, error)) <-chan result {
	done := make(chan result, 1)
	go func() {
		e, st, err := c.Get(ctx, kind, key, fetch)
		done <- result{e, st, err}
	}()
	return done
}

// constant returns a fetch that answers body and counts its calls.
func constant(body string, calls *atomic.Int32) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		calls.Add(1)
		return []byte(body), nil
	}
}

var errUpstream = errors.New("upstream unavailable")

func TestGetWindows(t *testing.T) {
	// The user kind is fresh for 30s and stale for 10m after that.
	c, clock := newCache(t, nil)
	key := Key(KindUser, "1")
	steps := []struct {
		name       string
		advance    time.Duration
		body       string
		fetchErr   error
		wantStatus Status
		wantBody   string
		wantErr    error
		wantCalls  int32
	}{
		{name: "missing entry is fetched", body: "v1", wantStatus: StatusMiss, wantBody: "v1", wantCalls: 1},
		{name: "fresh entry is a hit", advance: 29 * time.Second, body: "unused", wantStatus: StatusHit, wantBody: "v1", wantCalls: 1},
		{name: "entry past fresh is refetched", advance: 2 * time.Second, body: "v2", wantStatus: StatusMiss, wantBody: "v2", wantCalls: 2},
		{name: "failed fetch within stale serves stale", advance: 31 * time.Second, fetchErr: errUpstream, wantStatus: StatusStale, wantBody: "v2", wantCalls: 3},
		{name: "failed fetch past stale fails", advance: 10 * time.Minute, fetchErr: errUpstream, wantErr: errUpstream, wantCalls: 4},
		{name: "recovered upstream is fetched", body: "v3", wantStatus: StatusMiss, wantBody: "v3", wantCalls: 5},
	}
	var calls atomic.Int32
	for _, s := range steps {
		clock.Advance(s.advance)
		e, st, err := c.Get(t.Context(), KindUser, key, func(context.Context) ([]byte, error) {
			calls.Add(1)
			if s.fetchErr != nil {
				return nil, fmt.Errorf("get user: %w", s.fetchErr)
			}
			return []byte(s.body), nil
		})
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
			}
		} else if err != nil || st != s.wantStatus || string(e.Body) != s.wantBody {
			t.Fatalf("%s: got (%q, %s, %v), want (%q, %s, nil)", s.name, e.Body, st, err, s.wantBody, s.wantStatus)
		}
		if n := calls.Load(); n != s.wantCalls {
			t.Fatalf("%s: %d fetches so far, want %d", s.name, n, s.wantCalls)
		}
	}
}

func TestHitReturnsStoredEntry(t *testing.T) {
	c, clock := newCache(t, nil)
	var calls atomic.Int32
	miss, _, err := c.Get(t.Context(), KindEvent, "event:1", constant(`{"id":"event-1"}`, &calls))
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	hit, st, err := c.Get(t.Context(), KindEvent, "event:1", constant("unused", &calls))
	if err != nil || st != StatusHit {
		t.Fatalf("second Get = %s, %v; want HIT", st, err)
	}
	if !bytes.Equal(hit.Body, miss.Body) || hit.ETag != miss.ETag || !hit.Stored.Equal(miss.Stored) {
		t.Fatalf("hit %+v differs from stored %+v", hit, miss)
	}
	if hit.ETag != etagOf(miss.Body) {
		t.Fatalf("ETag %s is not the body's %s", hit.ETag, etagOf(miss.Body))
	}
}

func TestETagSameAcrossCaches(t *testing.T) {
	a, _ := newCache(t, nil)
	b, _ := newCache(t, nil)
	ea := a.Set(KindUsers, "users", []byte(`[{"id":1}]`))
	eb := b.Set(KindUsers, "users", []byte(`[{"id":1}]`))
	ec := b.Set(KindEvents, "events", []byte(`[{"id":2}]`))
	if ea.ETag != eb.ETag {
		t.Errorf("same body, different ETags across caches: %s, %s", ea.ETag, eb.ETag)
	}
	if ea.ETag == ec.ETag {
		t.Errorf("different bodies, same ETag %s", ea.ETag)
	}
}

func TestStalePredicate(t *testing.T) {
	errBusy := errors.New("upstream busy")
	errNotFound := errors.New("not found")
	c, clock := newCache(t, nil, WithStaleOn(func(err error) bool { return errors.Is(err, errBusy) }))
	c.Set(KindUser, "user:1", []byte("cached"))
	clock.Advance(time.Minute) // past fresh, within stale

	tests := []struct {
		name       string
		fetchErr   error
		wantStatus Status
		wantErr    error
	}{
		{"accepted error serves stale", fmt.Errorf("get: %w", errBusy), StatusStale, nil},
		{"rejected error is returned", fmt.Errorf("get: %w", errNotFound), "", errNotFound},
	}
	for _, tt := range tests {
		e, st, err := c.Get(t.Context(), KindUser, "user:1", func(context.Context) ([]byte, error) { return nil, tt.fetchErr })
		if st != tt.wantStatus || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: got (%s, %v), want (%s, %v)", tt.name, st, err, tt.wantStatus, tt.wantErr)
		}
		if tt.wantStatus == StatusStale && string(e.Body) != "cached" {
			t.Errorf("%s: body %q, want the stale one", tt.name, e.Body)
		}
	}
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	c, _ := newCache(t, nil)
	const callers = 100
	var calls atomic.Int32
	release := make(chan struct{})
	fetch := func(context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("all users"), nil
	}
	results := make([]<-chan result, callers)
	for i := range results {
		results[i] = getAsync(t.Context(), c, KindUsers, "users", fetch)
	}
	waitFor(t, "every caller to wait on the fetch", func() bool { return c.Stats().Waiting == callers })
	close(release)
	for i, ch := range results {
		r := receive(t, "a caller's answer", ch)
		if r.err != nil || r.status != StatusMiss || string(r.entry.Body) != "all users" {
			t.Fatalf("caller %d: got (%q, %s, %v)", i, r.entry.Body, r.status, r.err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if s := c.Stats(); s.Misses != callers || s.Waiting != 0 {
		t.Fatalf("stats %+v, want %d misses and none waiting", s, callers)
	}
}

func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	type ctxKey struct{}
	c, _ := newCache(t, nil)
	release := make(chan struct{})
	fetchSaw := make(chan error, 1)
	var calls atomic.Int32
	fetch := func(ctx context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		if ctx.Value(ctxKey{}) != "first" {
			return nil, errors.New("fetch context lost the first caller's values")
		}
		fetchSaw <- ctx.Err()
		return []byte("events"), nil
	}

	first, cancelFirst := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "first"))
	defer cancelFirst()
	a := getAsync(first, c, KindEvents, "events", fetch)
	waitFor(t, "the first caller to wait", func() bool { return c.Stats().Waiting == 1 })
	b := getAsync(t.Context(), c, KindEvents, "events", fetch)
	waitFor(t, "the second caller to wait", func() bool { return c.Stats().Waiting == 2 })

	cancelFirst()
	if r := receive(t, "the first caller's answer", a); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("first caller: err = %v, want context.Canceled", r.err)
	}
	close(release)
	if r := receive(t, "the second caller's answer", b); r.err != nil || r.status != StatusMiss || string(r.entry.Body) != "events" {
		t.Fatalf("second caller: got (%q, %s, %v), want the fetched events", r.entry.Body, r.status, r.err)
	}
	if err := receive(t, "the fetch", fetchSaw); err != nil {
		t.Fatalf("fetch context was canceled with the first caller: %v", err)
	}
	if _, st, ok := c.Peek("events"); !ok || st != StatusHit || calls.Load() != 1 {
		t.Fatalf("after the fetch: Peek = %s, %v; %d fetches; want a stored fresh entry from 1 fetch", st, ok, calls.Load())
	}
}

func TestCanceledCallerDoesNotFetch(t *testing.T) {
	c, _ := newCache(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var calls atomic.Int32
	if _, _, err := c.Get(ctx, KindUser, "user:1", constant("x", &calls)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls.Load() != 0 {
		t.Fatal("fetched for a caller that had already gone")
	}
}

// invalidations are the ways an entry is superseded while a fetch for it
// may be in flight; want is what Peek finds afterwards ("" for nothing).
var invalidations = []struct {
	name       string
	invalidate func(c *Cache, key string)
	want       string
}{
	{"delete", func(c *Cache, key string) { c.Delete("user:other", key) }, ""},
	{"purge", func(c *Cache, _ string) { c.Purge() }, ""},
	{"set", func(c *Cache, key string) { c.Set(KindUser, key, []byte("written")) }, "written"},
}

func TestFetchStartedBeforeInvalidationIsNotStored(t *testing.T) {
	for _, tt := range invalidations {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCache(t, nil)
			key := Key(KindUser, "1")
			started, release := make(chan struct{}), make(chan struct{})
			old := getAsync(t.Context(), c, KindUser, key, func(context.Context) ([]byte, error) {
				close(started)
				<-release
				return []byte("old"), nil
			})
			receive(t, "the fetch to start", started)
			tt.invalidate(c, key)
			close(release)

			// The caller that asked before the invalidation still gets its answer.
			if r := receive(t, "the first answer", old); r.err != nil || string(r.entry.Body) != "old" {
				t.Fatalf("first caller: got (%q, %v), want old", r.entry.Body, r.err)
			}
			e, _, ok := c.Peek(key)
			if got := string(e.Body); ok != (tt.want != "") || got != tt.want {
				t.Fatalf("after invalidation: Peek = (%q, %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestGetAfterInvalidationDoesNotJoinEarlierFetch(t *testing.T) {
	for _, tt := range invalidations[:2] { // after Set, a Get is simply a hit
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCache(t, nil)
			key := Key(KindUser, "1")
			started, release := make(chan struct{}), make(chan struct{})
			old := getAsync(t.Context(), c, KindUser, key, func(context.Context) ([]byte, error) {
				close(started)
				<-release
				return []byte("old"), nil
			})
			receive(t, "the first fetch to start", started)
			tt.invalidate(c, key)

			// If this Get joined the blocked fetch it would not answer before release.
			var calls atomic.Int32
			r := receive(t, "a Get that does not join the earlier fetch",
				getAsync(t.Context(), c, KindUser, key, constant("new", &calls)))
			if r.err != nil || r.status != StatusMiss || string(r.entry.Body) != "new" || calls.Load() != 1 {
				t.Fatalf("Get after invalidation: got (%q, %s, %v) with %d fetches, want its own fetch of new",
					r.entry.Body, r.status, r.err, calls.Load())
			}

			close(release)
			receive(t, "the first answer", old)
			if e, _, ok := c.Peek(key); !ok || string(e.Body) != "new" {
				t.Fatalf("Peek = (%q, %v), want new: the earlier fetch overwrote it", e.Body, ok)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	c, _ := newCache(t, nil)
	keys := []string{"users", "user:1", "event:1"}
	for _, key := range keys {
		c.Set(KindOf(key), key, []byte(key))
	}
	if n := c.Stats().Entries; n != int64(len(keys)) {
		t.Fatalf("%d entries before Purge, want %d", n, len(keys))
	}
	c.Purge()
	if n := c.Stats().Entries; n != 0 {
		t.Fatalf("%d entries after Purge, want 0", n)
	}
	for _, key := range keys {
		if _, _, ok := c.Peek(key); ok {
			t.Errorf("Peek(%q) found an entry after Purge", key)
		}
	}
	var calls atomic.Int32
	if _, st, err := c.Get(t.Context(), KindUsers, "users", constant("refetched", &calls)); err != nil || st != StatusMiss {
		t.Fatalf("Get after Purge = %s, %v; want MISS", st, err)
	}
}

func TestDeleteRemovesOnlyNamedKeys(t *testing.T) {
	c, _ := newCache(t, nil)
	for _, key := range []string{"user:1", "user:2", "user:3"} {
		c.Set(KindUser, key, []byte(key))
	}
	c.Delete("user:1", "user:3", "user:404")
	for key, want := range map[string]bool{"user:1": false, "user:2": true, "user:3": false} {
		if _, _, ok := c.Peek(key); ok != want {
			t.Errorf("Peek(%q) found = %v, want %v", key, ok, want)
		}
	}
}

func TestPeekWindows(t *testing.T) {
	c, clock := newCache(t, nil)
	c.Set(KindEvents, "events", []byte("[]")) // 10s fresh, 10m stale
	tests := []struct {
		advance time.Duration
		want    Status
		found   bool
	}{
		{9 * time.Second, StatusHit, true},
		{time.Second, StatusStale, true},
		{10*time.Minute - time.Nanosecond, StatusStale, true},
		{time.Nanosecond, "", false},
	}
	for i, tt := range tests {
		clock.Advance(tt.advance)
		if _, st, ok := c.Peek("events"); st != tt.want || ok != tt.found {
			t.Errorf("step %d: Peek = (%s, %v), want (%s, %v)", i, st, ok, tt.want, tt.found)
		}
	}
}

func TestStats(t *testing.T) {
	c, clock := newCache(t, nil)
	var calls atomic.Int32
	ctx := t.Context()
	get := func(fetch func(context.Context) ([]byte, error)) {
		t.Helper()
		if _, _, err := c.Get(ctx, KindUser, "user:1", fetch); err != nil {
			t.Fatal(err)
		}
	}
	get(constant("u1", &calls)) // miss
	get(constant("u1", &calls)) // hit
	get(constant("u1", &calls)) // hit
	clock.Advance(time.Minute)
	get(func(context.Context) ([]byte, error) { return nil, errUpstream }) // stale
	c.Peek("user:1")                                                       // not counted

	s := c.Stats()
	if s.Hits != 2 || s.Misses != 1 || s.Stale != 1 || s.Entries != 1 || s.Waiting != 0 || s.Evictions != 0 {
		t.Fatalf("stats %+v, want 2 hits, 1 miss, 1 stale, 1 entry", s)
	}
	if s.Bytes <= 0 {
		t.Fatalf("stats report %d bytes for a cache holding an entry", s.Bytes)
	}
}

func TestEvictionsWhenFull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SizeMB, cfg.Shards = 1, 1
	c, _ := newCache(t, &cfg)
	const n = 30
	body := bytes.Repeat([]byte("x"), 100<<10)
	for i := range n {
		c.Set(KindEvent, Key(KindEvent, fmt.Sprint(i)), body)
	}
	s := c.Stats()
	if s.Evictions == 0 || s.Entries+int64(s.Evictions) != n {
		t.Fatalf("after %d entries of 100 KiB in 1 MiB: %d entries, %d evictions", n, s.Entries, s.Evictions)
	}
	if _, _, ok := c.Peek(Key(KindEvent, fmt.Sprint(n-1))); !ok {
		t.Fatal("the newest entry was evicted")
	}
	c.Delete(Key(KindEvent, fmt.Sprint(n-1)))
	if got := c.Stats().Evictions; got != s.Evictions {
		t.Fatalf("Delete counted as an eviction: %d, was %d", got, s.Evictions)
	}
}

func TestOversizedAnswerIsServedUncached(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SizeMB, cfg.Shards = 1, 1
	c, _ := newCache(t, &cfg)
	var calls atomic.Int32
	huge := strings.Repeat("x", 2<<20)
	for range 2 {
		e, st, err := c.Get(t.Context(), KindEvents, "events", constant(huge, &calls))
		if err != nil || st != StatusMiss || len(e.Body) != len(huge) {
			t.Fatalf("Get = (%d bytes, %s, %v), want the whole answer as MISS", len(e.Body), st, err)
		}
	}
	if calls.Load() != 2 {
		t.Fatalf("%d fetches, want 2: an answer larger than half a shard is not cached", calls.Load())
	}
}

func TestUnknownKind(t *testing.T) {
	c, _ := newCache(t, nil)
	var calls atomic.Int32
	_, _, err := c.Get(t.Context(), Kind("nope"), "nope:1", constant("x", &calls))
	if err == nil || !strings.Contains(err.Error(), `unknown kind "nope"`) || calls.Load() != 0 {
		t.Fatalf("Get with an unknown kind: err = %v, %d fetches", err, calls.Load())
	}
	c.Set(Kind("nope"), "nope:1", []byte("x"))
	if _, _, ok := c.Peek("nope:1"); ok {
		t.Fatal("Set stored an entry of an unknown kind")
	}
}

func TestFetchPanicBecomesError(t *testing.T) {
	c, _ := newCache(t, nil)
	_, _, err := c.Get(t.Context(), KindUser, "user:1", func(context.Context) ([]byte, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), `fetch "user:1" panicked: boom`) {
		t.Fatalf("err = %v, want the panic as an error", err)
	}
	var calls atomic.Int32
	if _, st, err := c.Get(t.Context(), KindUser, "user:1", constant("ok", &calls)); err != nil || st != StatusMiss {
		t.Fatalf("Get after a panic = %s, %v; want MISS", st, err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Shards = 3
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "cache.shards: 3") {
		t.Fatalf("New = %v, want the invalid field named", err)
	}
}

func TestBigAnswerLeavesOtherEntriesInPlace(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SizeMB, cfg.Shards = 1, 1
	c, _ := newCache(t, &cfg)
	small := []byte(strings.Repeat("s", 1<<10))
	for i := range 10 {
		c.Set(KindEvent, Key(KindEvent, fmt.Sprint(i)), small)
	}
	var calls atomic.Int32
	// Larger than the shard, and larger than the shard's free space.
	for _, size := range []int{2 << 20, 1<<20 - 100} {
		if _, st, err := c.Get(t.Context(), KindEvents, "events", constant(strings.Repeat("x", size), &calls)); err != nil || st != StatusMiss {
			t.Fatalf("Get of %d bytes = %s, %v; want MISS", size, st, err)
		}
		c.Set(KindEvents, "events", bytes.Repeat([]byte("y"), size))
		for i := range 10 {
			if _, _, ok := c.Peek(Key(KindEvent, fmt.Sprint(i))); !ok {
				t.Fatalf("an answer of %d bytes evicted entry %d", size, i)
			}
		}
		if _, _, ok := c.Peek("events"); ok {
			t.Fatalf("an answer of %d bytes was stored in a 1 MiB shard", size)
		}
	}
	if s := c.Stats(); s.Evictions != 0 || s.Entries != 10 {
		t.Fatalf("stats %+v, want the 10 small entries and no evictions", s)
	}
}

func TestLargestStorableAnswerIsStored(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SizeMB, cfg.Shards = 1, 1
	c, _ := newCache(t, &cfg)
	key := "events"
	pol, _ := cfg.Policy(KindEvents)
	_, empty := c.newRecord(pol, nil)
	body := bytes.Repeat([]byte("x"), c.maxRecord(key)-len(empty))
	c.Set(KindEvents, key, body)
	if e, _, ok := c.Peek(key); !ok || len(e.Body) != len(body) {
		t.Fatalf("an answer of the largest storable size (%d bytes) was not stored", len(body))
	}
	c.Set(KindEvents, key, append(body, 'x'))
	if e, _, ok := c.Peek(key); ok && len(e.Body) != len(body) {
		t.Fatalf("an answer one byte over the largest storable size replaced the entry")
	}
}
