package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/memory"
)

// Option configures NewStore and NewRedisStore.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	logInterval time.Duration
	prefix      string
	local       limiter.Store
	redis       redis.UniversalClient
}

func buildOptions(opts []Option) options {
	o := options{
		logger:      slog.New(slog.DiscardHandler),
		logInterval: 10 * time.Second,
		prefix:      "amexd",
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLogger sets the logger the Redis store reports failures and recovery
// to, and the shared table its pressure; by default they log nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithLogInterval sets how often, at most, the Redis store logs that Redis is
// failing and the table that it is full (default 10s); what happens in
// between is counted, not logged. NewStore sets it from the configuration.
func WithLogInterval(d time.Duration) Option {
	return func(o *options) { o.logInterval = d }
}

// WithKeyPrefix sets the prefix of the keys the memory and Redis stores write
// (default "amexd"), so that several services can share one Redis.
func WithKeyPrefix(p string) Option {
	return func(o *options) { o.prefix = p }
}

// WithLocal sets the store the Redis store counts in under the local policy
// while Redis fails; NewStore passes the machine's shared table.
func WithLocal(st limiter.Store) Option {
	return func(o *options) { o.local = st }
}

// WithRedis sets the client of the Redis store, which NewStore needs for
// ratelimit.store redis; the caller keeps it and closes it.
func WithRedis(rdb redis.UniversalClient) Option {
	return func(o *options) { o.redis = rdb }
}

// NewStore builds the store cfg.Store names, after validating cfg:
//   - "memory": ulule's in-memory store, private to this process.
//   - "shared": the supervisor's table, mapped from shared (the inherited file).
//   - "redis": a *RedisStore on the client WithRedis gives, which never fails a call because of Redis;
//     under the local policy it falls back to the table mapped from shared,
//     or to a table of its own when shared is nil.
//
// The *Table and *RedisStore it returns implement io.Closer; close the store
// when done.
func NewStore(ctx context.Context, cfg Config, shared *os.File, opts ...Option) (limiter.Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ratelimit: new store: %w", err)
	}
	opts = append([]Option{WithLogInterval(cfg.LogInterval)}, opts...)
	switch cfg.Store {
	case StoreMemory:
		o := buildOptions(opts)
		return memory.NewStoreWithOptions(limiter.StoreOptions{
			Prefix:          o.prefix,
			CleanUpInterval: limiter.DefaultCleanUpInterval,
		}), nil
	case StoreShared:
		if shared == nil {
			return nil, errors.New("ratelimit: new store: ratelimit.store shared needs the supervisor's table")
		}
		return OpenTable(shared, opts...)
	default:
		rdb := buildOptions(opts).redis
		if cfg.OnRedisError != OnRedisErrorLocal || shared == nil {
			return NewRedisStore(ctx, rdb, cfg, opts...)
		}
		table, err := OpenTable(shared, opts...)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: new store: %w", err)
		}
		st, err := NewRedisStore(ctx, rdb, cfg, append(opts, WithLocal(table))...)
		if err != nil {
			table.Close()
			return nil, err
		}
		st.ownLocal = table
		return st, nil
	}
}

var (
	_ limiter.Store = (*Table)(nil)
	_ limiter.Store = (*RedisStore)(nil)
	_ io.Closer     = (*Table)(nil)
	_ io.Closer     = (*RedisStore)(nil)
)
