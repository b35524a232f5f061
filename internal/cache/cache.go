// Package cache is the response cache of an amexd worker. It keeps upstream
// answers as ready-to-send bytes in bigcache, each entry with its own fresh
// and stale windows, fills a missing or outdated entry with one fetch per key
// at a time, serves stale entries when the upstream fails, and makes
// invalidation win over fetches that were already in flight, so that a read
// after a write and its invalidation never sees the old answer. An optional
// shared tier in Redis (see [Shared]) sits below it, so that several
// machines make one upstream call per key.
package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
	"golang.org/x/sync/singleflight"
)

// Status says where an answer of [Cache.Get] came from. Its values are meant
// for an X-Cache response header.
type Status string

// The statuses of an answer.
const (
	StatusHit   Status = "HIT"   // a fresh entry, no upstream call
	StatusMiss  Status = "MISS"  // fetched from the upstream now
	StatusStale Status = "STALE" // the fetch failed; an entry past its fresh window
)

// Stats are counters of a [Cache] since it was created.
type Stats struct {
	Hits   uint64 // Get answers with StatusHit
	Misses uint64 // Get answers with StatusMiss, counted per caller
	Stale  uint64 // Get answers with StatusStale
	// Evictions counts entries bigcache dropped for lack of space or because
	// they outlived the longest window of any kind; deletions do not count.
	Evictions uint64
	// Waiting is the number of Get calls blocked on a fetch right now.
	Waiting int64
	// Entries is the number of entries stored, including those past their
	// stale window that were not yet evicted.
	Entries int64
	// Bytes is the memory bigcache has allocated for entries; it grows up
	// to Config.SizeMB.
	Bytes int64
}

// stripeCount is the number of invalidation stripes. Keys sharing a stripe
// only cost each other an occasional fill that is not stored.
const stripeCount = 256

// stripe orders stores against invalidations for the keys hashed to it.
type stripe struct {
	mu sync.Mutex
	// gen changes, under mu, whenever a key of the stripe is invalidated; a
	// fill stores its result only if gen is what it was when it started.
	gen atomic.Uint64
}

// Cache is a response cache. It is safe for concurrent use.
type Cache struct {
	cfg     Config
	now     func() time.Time
	staleOn func(error) bool

	store *bigcache.BigCache
	// shared is the optional second level, below store, common to machines.
	shared *Shared
	// group is replaced by Purge, so that no Get after a Purge joins a fetch
	// that started before it.
	group   atomic.Pointer[singleflight.Group]
	seed    maphash.Seed
	stripes [stripeCount]stripe

	hits, misses, stale, evictions atomic.Uint64
	waiting                        atomic.Int64
}

// Option configures a [Cache].
type Option func(*Cache)

// WithClock makes the cache read the time from now instead of time.Now. It
// governs the fresh and stale windows; bigcache's own eviction of entries
// older than the longest window still follows the real clock.
func WithClock(now func() time.Time) Option {
	return func(c *Cache) { c.now = now }
}

// WithStaleOn sets which fetch errors may be answered from a stale entry;
// by default every error may.
func WithStaleOn(accept func(error) bool) Option {
	return func(c *Cache) { c.staleOn = accept }
}

// WithShared puts a shared tier below the cache: a miss looks there before
// fetching, and a fill is stored there too. The caller closes it.
func WithShared(s *Shared) Option {
	return func(c *Cache) { c.shared = s }
}

// New returns a cache configured by cfg, which must be valid. Call Close
// once when the cache is no longer used.
func New(cfg Config, opts ...Option) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cache: invalid config: %w", err)
	}
	c := &Cache{
		cfg:     cfg,
		now:     time.Now,
		staleOn: func(error) bool { return true },
		seed:    maphash.MakeSeed(),
	}
	for _, opt := range opts {
		opt(c)
	}
	c.group.Store(new(singleflight.Group))

	bcfg := bigcache.Config{
		Shards: cfg.Shards,
		// Each entry carries its own windows; bigcache's single LifeWindow
		// only has to outlast the longest of them. It counts whole seconds.
		LifeWindow: cfg.lifeWindow() + time.Second,
		// Expired entries are dead weight, not wrong answers, so sweeping
		// them once a minute is enough.
		CleanWindow: time.Minute,
		// These two only size the initial allocation: 4096 entries of 1 KiB.
		MaxEntriesInWindow: 4096,
		MaxEntrySize:       1024,
		HardMaxCacheSize:   cfg.SizeMB,
		OnRemoveWithReason: func(string, []byte, bigcache.RemoveReason) { c.evictions.Add(1) },
	}.OnRemoveFilterSet(bigcache.Expired, bigcache.NoSpace)
	store, err := bigcache.New(context.Background(), bcfg)
	if err != nil {
		return nil, fmt.Errorf("cache: start bigcache: %w", err)
	}
	c.store = store
	return c, nil
}

// Close stops the cache's background cleaning. It must be called once.
func (c *Cache) Close() error {
	return c.store.Close()
}

// Get returns the answer cached under key, fetching it when needed; kind
// selects the windows of a newly stored entry.
//
// A fresh entry is returned with StatusHit. Otherwise fetch is called, once
// per key however many callers wait for it, and its body is stored and
// returned with StatusMiss. The fetch runs on a context that keeps ctx's
// values but not its cancellation, so one caller giving up does not fail
// the others; fetch must bound its own duration. A caller whose ctx ends
// first returns ctx.Err(). When fetch fails, an entry still within its stale
// window is returned with StatusStale if the WithStaleOn predicate accepts
// the error; otherwise the fetch error is returned unchanged. A panic in
// fetch becomes an error.
func (c *Cache) Get(ctx context.Context, kind Kind, key string, fetch func(ctx context.Context) ([]byte, error)) (Entry, Status, error) {
	pol, ok := c.cfg.Policy(kind)
	if !ok {
		return Entry{}, "", fmt.Errorf("cache: get %q: unknown kind %q", key, kind)
	}
	if e, ok := c.Fresh(key); ok {
		return e, StatusHit, nil
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, "", err
	}

	fillCtx := context.WithoutCancel(ctx)
	ch := c.group.Load().DoChan(key, func() (any, error) {
		return c.fill(fillCtx, pol, key, fetch)
	})
	c.waiting.Add(1)
	defer c.waiting.Add(-1)

	select {
	case <-ctx.Done():
		return Entry{}, "", ctx.Err()
	case res := <-ch:
		if res.Err == nil {
			c.misses.Add(1)
			return res.Val.(Entry), StatusMiss, nil
		}
		if r, ok := c.lookup(key); ok && c.now().UnixNano() < r.staleUntil && c.staleOn(res.Err) {
			c.stale.Add(1)
			return r.entry, StatusStale, nil
		}
		return Entry{}, "", res.Err
	}
}

// Fresh returns the entry under key when it is fresh, counted as a hit as
// [Cache.Get] counts it. Callers on a hot path try it before building
// Get's fetch function.
func (c *Cache) Fresh(key string) (Entry, bool) {
	if r, ok := c.lookup(key); ok && c.now().UnixNano() < r.freshUntil {
		c.hits.Add(1)
		return r.entry, true
	}
	return Entry{}, false
}

// Peek returns the entry under key without fetching and without counting
// it in Stats: StatusHit when it is fresh, StatusStale when it is within
// its stale window, and false when there is none or it is past both.
func (c *Cache) Peek(key string) (Entry, Status, bool) {
	r, ok := c.lookup(key)
	if !ok {
		return Entry{}, "", false
	}
	switch now := c.now().UnixNano(); {
	case now < r.freshUntil:
		return r.entry, StatusHit, true
	case now < r.staleUntil:
		return r.entry, StatusStale, true
	}
	return Entry{}, "", false
}

// Set stores body under key with kind's windows and returns the entry.
// Fetches for key already in flight will not overwrite it. The entry is
// returned but not stored when kind is unknown or the entry is too large
// to store (see maxBody).
func (c *Cache) Set(kind Kind, key string, body []byte) Entry {
	pol, ok := c.cfg.Policy(kind)
	rec, enc := c.newRecord(pol, body)
	if !ok {
		return rec.entry
	}
	s := c.stripeOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	c.group.Load().Forget(key)
	c.store1(key, enc)
	return rec.entry
}

// Delete removes the entries under keys. A fetch for one of them that is in
// flight will not store its result, and a Get that starts after Delete
// returns fetches anew instead of joining it.
func (c *Cache) Delete(keys ...string) {
	for _, key := range keys {
		s := c.stripeOf(key)
		s.mu.Lock()
		s.gen.Add(1)
		c.group.Load().Forget(key)
		// The only error is that there was no entry, which is the goal.
		_ = c.store.Delete(key)
		s.mu.Unlock()
	}
}

// Invalidate removes the entries under keys after a write made them stale:
// from the shared tier first, so that this cache cannot refill them from
// there, then as Delete does. It returns the shared tier's error, if any,
// once the local entries are gone.
func (c *Cache) Invalidate(ctx context.Context, keys ...string) error {
	var err error
	if c.shared != nil {
		err = c.shared.invalidate(ctx, keys)
	}
	c.Delete(keys...)
	return err
}

// Purge removes every entry, with the same guarantees towards fetches in
// flight as Delete.
func (c *Cache) Purge() {
	for i := range c.stripes {
		c.stripes[i].mu.Lock()
	}
	for i := range c.stripes {
		c.stripes[i].gen.Add(1)
	}
	c.group.Store(new(singleflight.Group))
	// Reset returns no error in bigcache v3.
	_ = c.store.Reset()
	for i := range c.stripes {
		c.stripes[i].mu.Unlock()
	}
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Stale:     c.stale.Load(),
		Evictions: c.evictions.Load(),
		Waiting:   c.waiting.Load(),
		Entries:   int64(c.store.Len()),
		Bytes:     int64(c.store.Capacity()),
	}
}

// fill takes the answer for key from the shared tier or fetches it, and
// stores it unless key was invalidated since the fill started.
func (c *Cache) fill(ctx context.Context, pol Policy, key string, fetch func(context.Context) ([]byte, error)) (Entry, error) {
	s := c.stripeOf(key)
	gen := s.gen.Load()
	fetchRecord := func(ctx context.Context) (filled, error) {
		body, err := callFetch(ctx, key, fetch)
		if err != nil {
			return filled{}, err
		}
		rec, enc := c.newRecord(pol, body)
		return filled{rec: rec, enc: enc}, nil
	}
	var f filled
	var err error
	if c.shared != nil {
		f, err = c.shared.load(ctx, key, func() int64 { return c.now().UnixNano() }, fetchRecord)
	} else {
		f, err = fetchRecord(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		// The shared tier's stale copy, if any, is kept where Get's stale
		// fallback looks, unless this cache holds a longer-lived one.
		if f.enc != nil && s.gen.Load() == gen {
			if local, ok := c.lookup(key); !ok || local.staleUntil < f.rec.staleUntil {
				c.store1(key, f.enc)
			}
		}
		return Entry{}, err
	}
	if s.gen.Load() == gen {
		c.store1(key, f.enc)
	}
	return f.rec.entry, nil
}

// store1 stores one encoded record unless its body is too large: bigcache
// evicts a whole shard's entries before it refuses an entry that cannot fit,
// so one big answer would empty the shard. A big answer is served uncached.
func (c *Cache) store1(key string, enc []byte) {
	if len(enc) > c.maxRecord(key) {
		return
	}
	// With the size checked, a failure is not expected; the answer is then
	// served uncached all the same.
	_ = c.store.Set(key, enc)
}

// maxRecord is the largest encoded record stored under key. bigcache's
// shard is a byte queue that grows by doubling up to SizeMB/Shards and
// refuses an entry that fits neither in its current size nor in what it may
// still grow by; one of the two is always at least half the limit, so an
// entry up to half a shard, with bigcache's headers, fits once older entries
// are evicted.
func (c *Cache) maxRecord(key string) int {
	const bigcacheHeaders = 8 + 8 + 2 + 5 // timestamp, hash, key length, queue header
	shard := c.cfg.SizeMB << 20 / c.cfg.Shards
	return shard/2 - 1 - bigcacheHeaders - len(key)
}

// callFetch calls fetch, turning a panic into an error: singleflight would
// re-raise it where nothing can recover it, ending the worker.
func callFetch(ctx context.Context, key string, fetch func(context.Context) ([]byte, error)) (body []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("cache: fetch %q panicked: %v\n%s", key, v, debug.Stack())
		}
	}()
	return fetch(ctx)
}

// newRecord makes the record for body stored now under pol, and its
// encoding. The record's Body aliases the encoding, which the cache owns.
func (c *Cache) newRecord(pol Policy, body []byte) (record, []byte) {
	now := c.now()
	rec := record{
		freshUntil: now.Add(pol.Fresh).UnixNano(),
		staleUntil: now.Add(pol.Fresh + pol.Stale).UnixNano(),
		entry:      Entry{Body: body, ETag: etagOf(body), Stored: time.Unix(0, now.UnixNano())},
	}
	enc := encode(rec)
	rec.entry.Body = enc[len(enc)-len(body):]
	return rec, enc
}

// lookup returns the record stored under key, whatever its windows say.
func (c *Cache) lookup(key string) (record, bool) {
	b, err := c.store.Get(key)
	if err != nil {
		return record{}, false
	}
	rec, err := decode(b)
	if err != nil {
		return record{}, false
	}
	return rec, true
}

func (c *Cache) stripeOf(key string) *stripe { return &c.stripes[c.stripeIndex(key)] }

func (c *Cache) stripeIndex(key string) int {
	return int(maphash.String(c.seed, key) % stripeCount)
}
