package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/redisconn"
)

// The Redis keys of the shared tier, apart from those of the other
// features that use the same Redis (rate limits, the cluster channel). A
// cached answer lives under sharedKey(key, "value"), the generation that
// guards its fills under sharedKey(key, "gen"), and the lock of its fill
// under sharedKey(key, "lock"): the cache key is their hash tag, so that in
// a Redis Cluster the three share a slot (a script may touch them together)
// while different keys spread over the slots. sharedPurged holds when the
// tier was last purged (unix nanoseconds); every answer is stored with the
// purge stamp its fill read first, and one stored under an older stamp is
// not served, so that neither an answer stored before a purge nor a fill
// that began before it comes back. v2: the value carries that stamp.
const (
	sharedPrefix = "amexd:cache:v2:{"
	sharedPurged = "amexd:cache:v2:purged"
)

// sharedKey is the Redis key of part ("value", "gen", "lock") of key.
func sharedKey(key, part string) string { return sharedPrefix + key + "}:" + part }

// Timings of the shared tier: how long a generation outlives its last
// invalidation (far longer than any fill), how often a miss that waits for
// another machine's fill looks again, and how long a failing Redis is left
// alone before it is tried again.
const (
	sharedGenTTL    = time.Hour
	sharedPoll      = 20 * time.Millisecond
	sharedRetryWait = time.Second
	sharedLogEvery  = 10 * time.Second
)

// storeIfGen stores a fill only if the key's generation is still the one
// read before the fill asked the upstream: an invalidation in between means
// the answer may predate it. KEYS share a slot.
var storeIfGen = redis.NewScript(`
local gen = redis.call('GET', KEYS[2]) or ''
if gen ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)

// invalidateKey deletes an answer and moves its generation on, at once.
// KEYS (value, gen) share a slot.
const invalidateKey = `
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1`

// purgeAt moves the tier's purge stamp to ARGV[1], never back: machines'
// clocks differ a little, and a purge must not revive what an earlier one
// hid.
var purgeAt = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1`)

// unlockIfOwner releases a fill's lock only if it is still this fill's.
var unlockIfOwner = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Shared is the cache's second level: a Redis that several machines share,
// so that the first machine to miss a key asks the upstream and the others
// take its answer. Entries keep the fresh and stale windows of the fill that
// made them; machines are expected to agree on the time (NTP).
//
// It never fails a read: when Redis errs or answers slower than its timeout
// the cache fetches from the upstream as if there were no shared tier, and
// leaves Redis alone for a second before trying it again.
type Shared struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	wait    time.Duration
	log     *slog.Logger
	// retryAt (unix nanoseconds) is when Redis is tried again after a
	// failure; lastLog rate-limits the warning about it.
	retryAt atomic.Int64
	lastLog atomic.Int64
	errors  atomic.Uint64
	// waiting counts misses now waiting for another machine's fill.
	waiting atomic.Int64
}

// NewShared returns the shared tier on rdb, which it does not close.
// timeout bounds each Redis call; wait bounds how long a miss waits for
// another machine's fill of the same key before asking the upstream itself,
// and is also how long a fill's lock lives. An unreachable Redis is not an
// error here.
func NewShared(rdb redis.UniversalClient, timeout, wait time.Duration, log *slog.Logger) (*Shared, error) {
	if rdb == nil {
		return nil, errors.New("cache: shared tier: no Redis client")
	}
	if timeout <= 0 || wait <= 0 {
		return nil, fmt.Errorf("cache: shared tier: timeout %s and wait %s must be positive", timeout, wait)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Shared{rdb: rdb, timeout: timeout, wait: wait, log: log}, nil
}

// OpenShared returns the shared tier c configures (shared: redis) on a
// client from clients for rdb (see config.Config.CacheRedis), or nil when
// there is none.
func (c Config) OpenShared(clients *redisconn.Clients, rdb redisconn.Config, log *slog.Logger) (*Shared, error) {
	if c.Shared != SharedRedis {
		return nil, nil
	}
	client, err := clients.Get(rdb)
	if err != nil {
		return nil, fmt.Errorf("cache: shared tier: %w", err)
	}
	return NewShared(client, c.RedisTimeout, c.SharedWait, log)
}

// Errors counts the Redis calls that failed or timed out.
func (s *Shared) Errors() uint64 { return s.errors.Load() }

// Waiting is the number of misses now waiting for another machine's fill
// of their key.
func (s *Shared) Waiting() int64 { return s.waiting.Load() }

// available reports whether Redis is worth asking now.
func (s *Shared) available() bool { return time.Now().UnixNano() >= s.retryAt.Load() }

// failed records a Redis failure: Redis is skipped for sharedRetryWait and
// the failure is logged at most once every sharedLogEvery.
func (s *Shared) failed(op string, err error) {
	s.errors.Add(1)
	now := time.Now()
	s.retryAt.Store(now.Add(sharedRetryWait).UnixNano())
	last := s.lastLog.Load()
	if now.UnixNano()-last >= int64(sharedLogEvery) && s.lastLog.CompareAndSwap(last, now.UnixNano()) {
		s.log.Warn("cache: shared tier unavailable; filling from the upstream on this machine", "op", op, "err", err)
	}
}

// call runs one Redis operation under the tier's timeout.
func (s *Shared) call(ctx context.Context, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return op(ctx)
}

// filled is an answer as the shared tier hands it to the cache: the decoded
// record and its encoding.
type filled struct {
	rec record
	enc []byte
}

// load returns key's answer from Redis when a fresh one is there, and
// otherwise calls fetch, once across the machines when Redis allows: the
// miss that takes the key's lock fetches and stores, the others wait for
// its answer for at most the tier's wait, then fetch on their own. now is
// the cache's clock in unix nanoseconds. When fetch fails, the answer
// returned with its error is Redis's copy past its fresh window but within
// its stale one, if there was one (its enc is nil otherwise).
func (s *Shared) load(ctx context.Context, key string, now func() int64, fetch func(context.Context) (filled, error)) (filled, error) {
	var stale filled
	fetchOr := func() (filled, error) {
		f, err := fetch(ctx)
		if err != nil {
			return stale, err
		}
		return f, nil
	}
	deadline := time.Now().Add(s.wait)
	for {
		if !s.available() {
			return fetchOr()
		}
		f, guard, err := s.lookup(ctx, key)
		t := now()
		switch {
		case err != nil:
			s.failed("lookup", err)
			return fetchOr()
		case f.enc != nil && t < f.rec.freshUntil:
			return f, nil
		case f.enc != nil && t < f.rec.staleUntil:
			stale = f
		}
		token, locked, err := s.lock(ctx, key)
		if err != nil {
			s.failed("lock", err)
			return fetchOr()
		}
		if locked || time.Now().After(deadline) {
			f, err := fetchOr()
			if err == nil {
				s.store(ctx, key, guard, f, now())
			}
			if locked {
				s.unlock(ctx, key, token)
			}
			return f, err
		}
		s.waiting.Add(1)
		timer := time.NewTimer(sharedPoll)
		select {
		case <-timer.C:
			s.waiting.Add(-1)
		case <-ctx.Done():
			s.waiting.Add(-1)
			timer.Stop()
			return fetchOr()
		}
	}
}

// fillGuard is what a fill read before it asked the upstream: the key's
// generation and the tier's purge stamp. Its answer is stored only if the
// generation is unchanged, and served only while the stamp is current.
type fillGuard struct{ gen, purged string }

// lookup reads key's answer, whatever its windows say (enc is nil when
// there is none or it was stored under an older purge stamp), and its fill
// guard, in one round trip to each slot's node.
func (s *Shared) lookup(ctx context.Context, key string) (f filled, guard fillGuard, err error) {
	var vals *redis.SliceCmd
	var purged *redis.StringCmd
	err = s.call(ctx, func(ctx context.Context) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			vals = p.MGet(ctx, sharedKey(key, "value"), sharedKey(key, "gen"))
			purged = p.Get(ctx, sharedPurged)
			return nil
		})
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	})
	if err != nil {
		return filled{}, fillGuard{}, err
	}
	guard.gen, _ = vals.Val()[1].(string)
	guard.purged = purged.Val()
	raw, ok := vals.Val()[0].(string)
	if !ok {
		return filled{}, guard, nil
	}
	stamp, body, ok := strings.Cut(raw, "\n")
	if !ok || stamp != guard.purged {
		return filled{}, guard, nil
	}
	enc := []byte(body)
	rec, err := decode(enc)
	if err != nil {
		return filled{}, guard, nil
	}
	return filled{rec: rec, enc: enc}, guard, nil
}

// lock tries to take key's fill lock, which expires after the tier's wait
// if its owner never releases it.
func (s *Shared) lock(ctx context.Context, key string) (token string, ok bool, err error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	err = s.call(ctx, func(ctx context.Context) error {
		var err error
		ok, err = s.rdb.SetNX(ctx, sharedKey(key, "lock"), token, s.wait).Result()
		return err
	})
	return token, ok, err
}

func (s *Shared) unlock(ctx context.Context, key, token string) {
	err := s.call(ctx, func(ctx context.Context) error {
		return unlockIfOwner.Run(ctx, s.rdb, []string{sharedKey(key, "lock")}, token).Err()
	})
	if err != nil {
		// The lock expires on its own; until then others wait or fall back.
		s.failed("unlock", err)
	}
}

// store writes a fill to Redis for as long as its stale window lasts,
// under the purge stamp guard read, unless key was invalidated since.
func (s *Shared) store(ctx context.Context, key string, guard fillGuard, f filled, now int64) {
	ttl := time.Duration(f.rec.staleUntil - now)
	if ttl < time.Millisecond {
		return
	}
	err := s.call(ctx, func(ctx context.Context) error {
		value := make([]byte, 0, len(guard.purged)+1+len(f.enc))
		value = append(append(append(value, guard.purged...), '\n'), f.enc...)
		return storeIfGen.Run(ctx, s.rdb, []string{sharedKey(key, "value"), sharedKey(key, "gen")},
			guard.gen, value, strconv.FormatInt(ttl.Milliseconds(), 10)).Err()
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		s.failed("store", err)
	}
}

// invalidate deletes keys' answers and moves their generations on, so that
// no fill that began before it can store an older answer afterwards. Each
// key is one script, atomic on its slot; the scripts go in one pipeline.
func (s *Shared) invalidate(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	ttl := sharedGenTTL.Milliseconds()
	err := s.call(ctx, func(ctx context.Context) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, key := range keys {
				p.Eval(ctx, invalidateKey, []string{sharedKey(key, "value"), sharedKey(key, "gen")}, ttl)
			}
			return nil
		})
		return err
	})
	if err != nil {
		s.failed("invalidate", err)
		return fmt.Errorf("cache: invalidate %d keys in the shared tier: %w", len(keys), err)
	}
	return nil
}

// Purge hides every answer the tier holds from every machine: none stored
// before at (by the clock the caches stamp their entries with) is served
// again, and no fill that began before it stores. Entries already in a
// machine's own cache stay there until their windows end or that machine
// is purged too. Unlike the tier's reads, a failure here is returned: the
// operator asked for it.
func (s *Shared) Purge(ctx context.Context, at time.Time) error {
	err := s.call(ctx, func(ctx context.Context) error {
		return purgeAt.Run(ctx, s.rdb, []string{sharedPurged}, strconv.FormatInt(at.UnixNano(), 10)).Err()
	})
	if err != nil {
		return fmt.Errorf("cache: purge the shared tier: %w", err)
	}
	return nil
}
