package cache

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind names a family of cached upstream answers; each kind has its own
// freshness policy.
type Kind string

// The kinds of answer a worker caches.
const (
	KindUsers      Kind = "users"       // the list of users
	KindUser       Kind = "user"        // one user
	KindEvents     Kind = "events"      // all events
	KindEvent      Kind = "event"       // one event; events never change once created
	KindUserEvents Kind = "user-events" // one user's events
	// KindMissing marks a key the upstream said it has no record for (its
	// id is the other kind's key, "event:event-9"), so that repeated
	// lookups of it, such as the bare-number form of every /events/{id},
	// do not each wait for the upstream. Its body is empty.
	KindMissing Kind = "missing"
)

// Key returns the cache key of the answer of kind k for id: the kind alone
// when id is empty ("users", "events"), else "kind:id" ("user:1").
func Key(k Kind, id string) string {
	if id == "" {
		return string(k)
	}
	return string(k) + ":" + id
}

// KindOf returns the kind a key made by [Key] belongs to: the part before
// the first colon, or the whole key when it has none. It does not check that
// the kind is one of the known ones.
func KindOf(key string) Kind {
	kind, _, _ := strings.Cut(key, ":")
	return Kind(kind)
}

// Policy says how long an entry of one kind is served.
type Policy struct {
	// Fresh is how long after it was stored an entry is served without
	// asking the upstream.
	Fresh time.Duration `yaml:"fresh"`
	// Stale is how long after Fresh ends an entry may still be served when
	// the upstream fails. Zero disables stale answers for the kind.
	Stale time.Duration `yaml:"stale"`
}

// Config configures a [Cache]. It sits in the application config under
// "cache:"; durations are written like "30s" or "10m".
type Config struct {
	// SizeMB bounds the memory of the stored entries, in megabytes; when it
	// is reached the oldest entries are evicted.
	SizeMB int `yaml:"size_mb"`
	// Shards is the number of independently locked shards, a power of two.
	Shards int `yaml:"shards"`

	// Shared is the second level below every worker's cache: "none", or
	// "redis" for one Redis common to the machines (see [Shared]).
	Shared string `yaml:"shared"`
	// RedisURL, when set, is a Redis node of the shared tier's own (a URL);
	// empty means the redis section's, whose client the tier then shares.
	RedisURL string `yaml:"redis_url"`
	// RedisTimeout bounds each call to the shared tier's Redis.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	// SharedWait bounds how long a miss waits for another machine's fill of
	// the same key before asking the upstream itself.
	SharedWait time.Duration `yaml:"shared_wait"`

	Users      Policy `yaml:"users"`
	User       Policy `yaml:"user"`
	Events     Policy `yaml:"events"`
	Event      Policy `yaml:"event"`
	UserEvents Policy `yaml:"user_events"`
	// Missing is how long "no such record" is remembered; keep it short,
	// since another writer may create the record meanwhile.
	Missing Policy `yaml:"missing"`
}

// DefaultConfig returns the configuration used when the application config
// says nothing about the cache.
func DefaultConfig() Config {
	return Config{
		SizeMB:       256,
		Shards:       64,
		Shared:       SharedNone,
		RedisTimeout: 100 * time.Millisecond,
		SharedWait:   3 * time.Second,
		Users:        Policy{Fresh: 30 * time.Second, Stale: 10 * time.Minute},
		User:         Policy{Fresh: 30 * time.Second, Stale: 10 * time.Minute},
		Events:       Policy{Fresh: 10 * time.Second, Stale: 10 * time.Minute},
		Event:        Policy{Fresh: 10 * time.Minute, Stale: time.Hour},
		UserEvents:   Policy{Fresh: 10 * time.Second, Stale: 10 * time.Minute},
		Missing:      Policy{Fresh: 5 * time.Second},
	}
}

// The values of Config.Shared.
const (
	SharedNone  = "none"
	SharedRedis = "redis"
)

// Policy returns the policy of kind k, and false when k is not a known kind.
func (c Config) Policy(k Kind) (Policy, bool) {
	switch k {
	case KindUsers:
		return c.Users, true
	case KindUser:
		return c.User, true
	case KindEvents:
		return c.Events, true
	case KindEvent:
		return c.Event, true
	case KindUserEvents:
		return c.UserEvents, true
	case KindMissing:
		return c.Missing, true
	}
	return Policy{}, false
}

// policyFields lists the per-kind policies with their YAML names, in the
// order Validate reports them.
func (c Config) policyFields() []struct {
	name string
	p    Policy
} {
	return []struct {
		name string
		p    Policy
	}{
		{"users", c.Users},
		{"user", c.User},
		{"events", c.Events},
		{"event", c.Event},
		{"user_events", c.UserEvents},
		{"missing", c.Missing},
	}
}

// Validate reports every invalid field, each named by its dotted path in the
// application config with the offending value, for example
// "cache.event.fresh: -1s must be positive".
func (c Config) Validate() error {
	var errs []error
	if c.SizeMB <= 0 {
		errs = append(errs, fmt.Errorf("cache.size_mb: %d must be positive", c.SizeMB))
	}
	if c.Shards <= 0 || c.Shards&(c.Shards-1) != 0 {
		errs = append(errs, fmt.Errorf("cache.shards: %d must be a positive power of two", c.Shards))
	}
	switch c.Shared {
	case SharedNone:
	case SharedRedis:
		if c.RedisURL != "" {
			if _, err := redis.ParseURL(c.RedisURL); err != nil {
				errs = append(errs, fmt.Errorf("cache.redis_url: %q is not a Redis URL: %w", c.RedisURL, err))
			}
		}
		if c.RedisTimeout <= 0 {
			errs = append(errs, fmt.Errorf("cache.redis_timeout: %s must be positive", c.RedisTimeout))
		}
		if c.SharedWait <= 0 {
			errs = append(errs, fmt.Errorf("cache.shared_wait: %s must be positive", c.SharedWait))
		}
	default:
		errs = append(errs, fmt.Errorf("cache.shared: %q is not a tier (want none or redis)", c.Shared))
	}
	for _, f := range c.policyFields() {
		if f.p.Fresh <= 0 {
			errs = append(errs, fmt.Errorf("cache.%s.fresh: %s must be positive", f.name, f.p.Fresh))
		}
		if f.p.Stale < 0 {
			errs = append(errs, fmt.Errorf("cache.%s.stale: %s must not be negative", f.name, f.p.Stale))
		}
	}
	return errors.Join(errs...)
}

// lifeWindow is the longest time any entry may be served, fresh or stale.
func (c Config) lifeWindow() time.Duration {
	var longest time.Duration
	for _, f := range c.policyFields() {
		longest = max(longest, f.p.Fresh+f.p.Stale)
	}
	return longest
}
