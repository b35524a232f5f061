package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	redisstore "github.com/ulule/limiter/v3/drivers/store/redis"
)

// errNotReady stands for Redis while the store's scripts are not loaded yet
// and another call is loading them.
var errNotReady = errors.New("redis store not initialised yet")

// RedisStore is ulule's Redis store behind a per-call timeout and a failure
// policy. When Redis fails or is slower than the timeout, every call answers by
// the policy instead of an error: "local" counts the call in a local store
// (the machine's shared table) against the machine's share of the rate, the
// limit divided by the number of instances and rounded up; "allow" returns a
// Context that is not Reached (Remaining = Limit, Reset one period from now),
// "deny" one that is Reached. After a failure, calls answer by the policy at
// once for a short while; then one call tries Redis again, and the store
// recovers on its own once Redis answers, including when Redis was down when
// the store was created.
type RedisStore struct {
	client    redis.UniversalClient
	prefix    string
	timeout   time.Duration
	policy    string
	instances int64
	// local counts calls under the local policy; ownLocal is set when the
	// store created it and closes it.
	local    limiter.Store
	ownLocal io.Closer

	logger      *slog.Logger
	logInterval time.Duration
	now         func() time.Time

	// inner is ulule's store, built on first contact with Redis because its
	// constructor loads Lua scripts there; initMu lets one call do that while
	// the others apply the policy.
	inner  atomic.Pointer[innerStore]
	initMu sync.Mutex

	failures   atomic.Uint64
	suppressed atomic.Uint64
	lastLog    atomic.Int64
	degraded   atomic.Bool
	// retryAt (unix nanos) is when a degraded store tries Redis again; the
	// one call that moves it on does, and the others get the policy's
	// answer at once instead of each waiting out the timeout against a
	// Redis that is known to be failing.
	retryAt atomic.Int64
}

// redisRetryInterval is how long a failed Redis is left alone.
const redisRetryInterval = 500 * time.Millisecond

type innerStore struct{ limiter.Store }

// NewRedisStore counts on rdb, which it does not close. Under the local
// policy it counts in the store WithLocal gives (NewStore gives the
// machine's shared table), or else in a table of its own. It fails only
// for a configuration it cannot use; an unreachable Redis is logged and
// handled per call. Its keys are the prefix and the client key, so that
// in a Redis Cluster clients spread over the slots.
func NewRedisStore(ctx context.Context, rdb redis.UniversalClient, cfg Config, opts ...Option) (*RedisStore, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: redis store: no Redis client")
	}
	if cfg.RedisTimeout <= 0 {
		return nil, fmt.Errorf("ratelimit: redis store: timeout %v must be positive", cfg.RedisTimeout)
	}
	o := buildOptions(opts)
	s := &RedisStore{
		prefix:      o.prefix,
		timeout:     cfg.RedisTimeout,
		policy:      cfg.OnRedisError,
		instances:   int64(max(cfg.Instances, 1)),
		local:       o.local,
		logger:      o.logger,
		logInterval: o.logInterval,
		now:         time.Now,
	}
	if s.policy == OnRedisErrorLocal && s.local == nil {
		table, f, err := CreateTable(cfg.TableSlots, opts...)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: redis store: local table: %w", err)
		}
		// The mapping outlives the file.
		f.Close()
		s.local, s.ownLocal = table, table
	}
	s.client = rdb
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.ready(cctx); err != nil {
		s.degraded.Store(true)
		s.logger.Warn("ratelimit: redis not reachable yet; applying on_redis_error until it is",
			"policy", s.policy, "error", err)
	}
	return s, nil
}

// RedisFailures counts the calls answered by the policy because Redis failed.
func (s *RedisStore) RedisFailures() uint64 { return s.failures.Load() }

// Degraded reports whether the store answers by the policy now, since its
// last call to Redis failed.
func (s *RedisStore) Degraded() bool { return s.degraded.Load() }

// Close closes the local table when the store created it; the Redis
// client is its owner's to close.
func (s *RedisStore) Close() error {
	if s.ownLocal == nil {
		return nil
	}
	if err := s.ownLocal.Close(); err != nil {
		return fmt.Errorf("ratelimit: close redis store: %w", err)
	}
	return nil
}

// storeOp is one limiter.Store call, made on Redis with the configured rate
// or on the local store with this machine's share of it.
type storeOp func(ctx context.Context, st limiter.Store, rate limiter.Rate) (limiter.Context, error)

// Get increments the key's count by one.
func (s *RedisStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.call(ctx, rate, func(ctx context.Context, st limiter.Store, rate limiter.Rate) (limiter.Context, error) {
		return st.Get(ctx, key, rate)
	})
}

// Peek returns the key's state without changing it.
func (s *RedisStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.call(ctx, rate, func(ctx context.Context, st limiter.Store, rate limiter.Rate) (limiter.Context, error) {
		return st.Peek(ctx, key, rate)
	})
}

// Reset deletes the key's window.
func (s *RedisStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.call(ctx, rate, func(ctx context.Context, st limiter.Store, rate limiter.Rate) (limiter.Context, error) {
		return st.Reset(ctx, key, rate)
	})
}

// Increment adds count to the key's window.
func (s *RedisStore) Increment(ctx context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	return s.call(ctx, rate, func(ctx context.Context, st limiter.Store, rate limiter.Rate) (limiter.Context, error) {
		return st.Increment(ctx, key, count, rate)
	})
}

func (s *RedisStore) call(ctx context.Context, rate limiter.Rate, op storeOp) (limiter.Context, error) {
	if s.degraded.Load() && !s.retryNow() {
		s.failures.Add(1)
		s.suppressed.Add(1)
		return s.fallback(ctx, rate, op)
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	st, err := s.ready(cctx)
	if err == nil {
		var lctx limiter.Context
		if lctx, err = op(cctx, st, rate); err == nil {
			if s.degraded.CompareAndSwap(true, false) {
				s.logger.Info("ratelimit: redis reachable again", "failures", s.failures.Load())
			}
			return lctx, nil
		}
	}
	// A caller that gave up is not Redis failing; it still gets the policy's
	// answer so that no caller sees an error because of Redis.
	if ctx.Err() == nil {
		s.failed(err)
	}
	return s.fallback(ctx, rate, op)
}

// retryNow reports whether this call of a degraded store is the one to try
// Redis again: the first after retryAt, which moves retryAt on.
func (s *RedisStore) retryNow() bool {
	now := s.now().UnixNano()
	at := s.retryAt.Load()
	return now >= at && s.retryAt.CompareAndSwap(at, now+int64(redisRetryInterval))
}

// ready returns ulule's store, building it if this call is the one to do so.
func (s *RedisStore) ready(ctx context.Context) (limiter.Store, error) {
	if in := s.inner.Load(); in != nil {
		return in.Store, nil
	}
	if !s.initMu.TryLock() {
		return nil, errNotReady
	}
	defer s.initMu.Unlock()
	if in := s.inner.Load(); in != nil {
		return in.Store, nil
	}
	// ulule's constructor loads its scripts without a deadline; checking Redis
	// first keeps a dead Redis from holding this call past its timeout.
	if err := s.client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	st, err := redisstore.NewStoreWithOptions(s.client, limiter.StoreOptions{Prefix: s.prefix})
	if err != nil {
		return nil, fmt.Errorf("load scripts: %w", err)
	}
	s.inner.Store(&innerStore{st})
	return st, nil
}

// fallback answers op by the policy while Redis fails.
func (s *RedisStore) fallback(ctx context.Context, rate limiter.Rate, op storeOp) (limiter.Context, error) {
	if s.policy == OnRedisErrorLocal {
		share := rate
		share.Limit = (rate.Limit + s.instances - 1) / s.instances
		// The local table answers at once; the caller's context may be the
		// one Redis just ran out.
		lctx, err := op(context.WithoutCancel(ctx), s.local, share)
		if err != nil {
			return limiter.Context{}, fmt.Errorf("ratelimit: local fallback: %w", err)
		}
		return lctx, nil
	}
	lctx := limiter.Context{
		Limit:     rate.Limit,
		Remaining: rate.Limit,
		Reset:     s.now().Add(rate.Period).Unix(),
	}
	if s.policy == OnRedisErrorDeny {
		lctx.Remaining, lctx.Reached = 0, true
	}
	return lctx, nil
}

// failed counts a failure and logs it unless it logged one within logInterval.
func (s *RedisStore) failed(err error) {
	s.failures.Add(1)
	s.degraded.Store(true)
	s.retryAt.Store(s.now().Add(redisRetryInterval).UnixNano())
	now := s.now().UnixNano()
	last := s.lastLog.Load()
	if last != 0 && now-last < int64(s.logInterval) || !s.lastLog.CompareAndSwap(last, now) {
		s.suppressed.Add(1)
		return
	}
	s.logger.Warn("ratelimit: redis failed; applying on_redis_error",
		"policy", s.policy, "error", err,
		"failures", s.failures.Load(), "not_logged", s.suppressed.Swap(0))
}
