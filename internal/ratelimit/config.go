package ratelimit

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ulule/limiter/v3"
)

// Store kinds for Config.Store.
const (
	StoreShared = "shared"
	StoreMemory = "memory"
	StoreRedis  = "redis"
)

// Policies for Config.OnRedisError.
const (
	OnRedisErrorLocal = "local"
	OnRedisErrorAllow = "allow"
	OnRedisErrorDeny  = "deny"
)

// Config is the `ratelimit:` section of amexd's configuration.
type Config struct {
	// Rate is the per-client limit in ulule/limiter notation, e.g. "100-M".
	Rate string `yaml:"rate"`
	// Store is "shared" (one table per machine, created by the supervisor),
	// "memory" (per worker: a client gets one budget per worker) or "redis".
	Store string `yaml:"store"`
	// TableSlots is the shared table's size; each slot takes SlotBytes bytes and
	// holds one client's window. Clients beyond it are counted, more coarsely,
	// in the table's overflow sketch.
	TableSlots int `yaml:"table_slots"`
	// IPv6Prefix is the length of the prefix an IPv6 client is keyed by: one
	// budget for the whole /64 by default, since one host usually owns one.
	// IPv4 clients are keyed by their address.
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// LogInterval is how often, at most, the store logs that the shared table
	// is full or that Redis fails; what happens in between is counted.
	LogInterval time.Duration `yaml:"log_interval"`
	// RedisURL is deprecated: the Redis of earlier releases, read as
	// redis.url (amexd's redis section) when that names no server.
	RedisURL string `yaml:"redis_url"`
	// RedisTimeout bounds each Redis call.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	// OnRedisError says how requests are limited while Redis fails or is
	// slower than RedisTimeout: "local" counts them in this machine's shared
	// table against this machine's share of the rate (the rate divided by
	// Instances); "allow" lets every request through; "deny" refuses every
	// one.
	OnRedisError string `yaml:"on_redis_error"`
	// Instances is how many amexd machines share the Redis budget, which
	// sets each one's share under the local policy.
	Instances int `yaml:"instances"`
	// TrustedProxies lists the CIDRs whose X-Forwarded-For is believed when
	// finding a client's address; empty trusts none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Routes overrides Rate for given method and path pairs.
	Routes []Route `yaml:"routes"`
}

// Route is a per-route limit, e.g. {POST, /events, 10-M}.
type Route struct {
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	Rate   string `yaml:"rate"`
}

// DefaultConfig returns the defaults: 100 requests a minute per client in a
// shared table of 65536 slots; with the Redis store, a 50 ms timeout,
// limiting locally while Redis fails.
func DefaultConfig() Config {
	return Config{
		Rate:         "100-M",
		Store:        StoreShared,
		TableSlots:   65536,
		IPv6Prefix:   64,
		LogInterval:  10 * time.Second,
		RedisTimeout: 50 * time.Millisecond,
		OnRedisError: OnRedisErrorLocal,
		Instances:    1,
	}
}

var routeMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// Validate checks every field and returns all problems found, each naming the
// field by its dotted key and quoting the bad value.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("ratelimit.%s: "+format, append([]any{field}, args...)...))
	}
	maxLimit := int64(0)
	if c.UsesTable() {
		maxLimit = MaxTableLimit
	}
	if _, err := parseRate(c.Rate, maxLimit); err != nil {
		bad("rate", "%q %v (want e.g. 100-M)", c.Rate, err)
	}
	switch c.Store {
	case StoreShared, StoreMemory, StoreRedis:
	default:
		bad("store", "%q is not a store (want shared, memory or redis)", c.Store)
	}
	if c.UsesTable() && (c.TableSlots < 1 || c.TableSlots > MaxTableSlots) {
		bad("table_slots", "%d is out of range [1, %d]", c.TableSlots, MaxTableSlots)
	}
	if c.IPv6Prefix < 1 || c.IPv6Prefix > 128 {
		bad("ipv6_prefix", "%d is out of range [1, 128]", c.IPv6Prefix)
	}
	if c.LogInterval <= 0 {
		bad("log_interval", "%v must be positive", c.LogInterval)
	}
	if c.Store == StoreRedis && c.RedisTimeout <= 0 {
		bad("redis_timeout", "%v must be positive", c.RedisTimeout)
	}
	switch c.OnRedisError {
	case OnRedisErrorLocal, OnRedisErrorAllow, OnRedisErrorDeny:
	default:
		bad("on_redis_error", "%q is not a policy (want local, allow or deny)", c.OnRedisError)
	}
	if c.Instances < 1 {
		bad("instances", "%d must be at least 1", c.Instances)
	}
	for i, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not a CIDR (want e.g. 10.0.0.0/8)", p)
		}
	}
	seen := make(map[string]int)
	for i, r := range c.Routes {
		field := fmt.Sprintf("routes[%d]", i)
		method := strings.ToUpper(r.Method)
		if !slices.Contains(routeMethods, method) {
			bad(field+".method", "%q is not an HTTP method (want one of %s)", r.Method, strings.Join(routeMethods, ", "))
		}
		if !strings.HasPrefix(r.Path, "/") {
			bad(field+".path", "%q must start with /", r.Path)
		}
		if _, err := parseRate(r.Rate, maxLimit); err != nil {
			bad(field+".rate", "%q %v (want e.g. 10-M)", r.Rate, err)
		}
		id := method + " " + r.Path
		if j, dup := seen[id]; dup {
			bad(field, "%s repeats routes[%d]", id, j)
		}
		seen[id] = i
	}
	return errors.Join(errs...)
}

// UsesTable reports whether the configuration needs the machine's shared
// table: for the shared store, and for Redis's local policy.
func (c Config) UsesTable() bool {
	return c.Store == StoreShared || c.Store == StoreRedis && c.OnRedisError == OnRedisErrorLocal
}

// ParseRate parses a rate in ulule/limiter notation ("100-M": a limit, then S,
// M, H or D) and requires a limit of at least 1.
func ParseRate(s string) (limiter.Rate, error) {
	r, err := parseRate(s, 0)
	if err != nil {
		return limiter.Rate{}, fmt.Errorf("ratelimit: rate %q %w", s, err)
	}
	return r, nil
}

// parseRate parses s; maxLimit > 0 also bounds the limit. Its errors read as
// the end of a sentence that starts with the quoted value.
func parseRate(s string, maxLimit int64) (limiter.Rate, error) {
	r, err := limiter.NewRateFromFormatted(s)
	switch {
	case err != nil:
		return limiter.Rate{}, errors.New("is not a valid rate")
	case r.Limit < 1:
		return limiter.Rate{}, errors.New("has a limit below 1")
	case maxLimit > 0 && r.Limit > maxLimit:
		return limiter.Rate{}, fmt.Errorf("has a limit above the shared table's maximum %d", maxLimit)
	}
	return r, nil
}
