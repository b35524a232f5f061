// Package redisconn builds amexd's Redis clients from the redis:// URLs in
// its configuration, so that every client is made, and tuned, one way.
package redisconn

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Config says which Redis a client reaches and how its calls behave.
type Config struct {
	// URL is a redis:// (or rediss://, unix://) URL.
	URL string
	// NoRetry makes one attempt per call, for callers whose fallback is
	// elsewhere (the upstream, the local table) rather than a retry.
	NoRetry bool
}

// New returns a client for cfg.URL. It does not connect: an unreachable
// Redis is found by the first call, whose context deadline bounds it.
func New(cfg Config) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis client: %w", err)
	}
	opts.ContextTimeoutEnabled = true
	if cfg.NoRetry {
		opts.MaxRetries = -1
	}
	return redis.NewClient(opts), nil
}
