// Package redisconn builds amexd's Redis clients, so that every client is
// made, and tuned, one way: one node, a Sentinel-watched master, or a Redis
// Cluster, chosen by the `redis:` section of the configuration. A process
// keeps one client per server in a Clients set, which every shared tier
// (rate limit, cache tier, Idempotency-Keys, cluster bridge) draws from.
package redisconn

import (
	"errors"
	"fmt"
	neturl "net/url"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultURL is the Redis a configuration that names none reaches.
const DefaultURL = "redis://127.0.0.1:6379/0"

// Config says which Redis a client reaches and how its calls behave. Set
// at most one of URL, Sentinel and Cluster; none set means DefaultURL.
type Config struct {
	// URL is one node: a redis://, rediss:// or unix:// URL.
	URL string `yaml:"url"`
	// Sentinel names a master that Redis Sentinel watches and fails over.
	Sentinel Sentinel `yaml:"sentinel"`
	// Cluster lists seed nodes of a Redis Cluster.
	Cluster Cluster `yaml:"cluster"`
	// Password authenticates to the data nodes of a Sentinel or Cluster
	// setup (a URL carries its own).
	Password string `yaml:"password"`
	// DialTimeout, ReadTimeout and WriteTimeout bound a connection's
	// setup and socket calls; each tier also bounds its calls with a
	// context deadline of its own, usually much shorter.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// PoolSize bounds the connections per server; 0 is go-redis's default
	// (ten per CPU).
	PoolSize int `yaml:"pool_size"`
	// WaitReplicas is how many replicas must acknowledge an
	// Idempotency-Key claim (Redis WAIT) before its write goes upstream,
	// so that a claim survives a failover; 0 does not wait.
	WaitReplicas int `yaml:"wait_replicas"`
	// WaitTimeout bounds that wait; a claim not acknowledged in time is
	// released and the write answered 503.
	WaitTimeout time.Duration `yaml:"wait_timeout"`
}

// Sentinel is a master watched by Redis Sentinel.
type Sentinel struct {
	// Master is the master's name in the sentinels' configuration.
	Master string `yaml:"master"`
	// Addrs are host:port addresses of sentinels; one reachable suffices.
	Addrs []string `yaml:"addrs"`
	// Password authenticates to the sentinels themselves.
	Password string `yaml:"password"`
}

// Cluster is a Redis Cluster.
type Cluster struct {
	// Addrs are host:port addresses of some of its nodes; the client
	// learns the others and the slot map from them.
	Addrs []string `yaml:"addrs"`
}

// DefaultConfig returns the defaults: DefaultURL, one-second socket
// timeouts, no replica wait (100 ms once wait_replicas is set).
func DefaultConfig() Config {
	return Config{
		DialTimeout:  time.Second,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		WaitTimeout:  100 * time.Millisecond,
	}
}

// Mode names the kind of setup c reaches: "url", "sentinel" or "cluster".
func (c Config) Mode() string {
	switch {
	case c.Sentinel.Master != "" || len(c.Sentinel.Addrs) > 0:
		return "sentinel"
	case len(c.Cluster.Addrs) > 0:
		return "cluster"
	}
	return "url"
}

// Validate reports every invalid field, each named by its key under
// prefix (such as "redis.").
func (c Config) Validate(prefix string) error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: "+format, append([]any{prefix, key}, args...)...))
	}
	var set []string
	for _, k := range []struct {
		key string
		on  bool
	}{{"url", c.URL != ""}, {"sentinel", c.Sentinel.Master != "" || len(c.Sentinel.Addrs) > 0}, {"cluster", len(c.Cluster.Addrs) > 0}} {
		if k.on {
			set = append(set, prefix+k.key)
		}
	}
	if len(set) > 1 {
		errs = append(errs, fmt.Errorf("%s: set only one of url, sentinel and cluster", strings.Join(set, " and ")))
	}
	if c.URL != "" {
		if _, err := redis.ParseURL(c.URL); err != nil {
			bad("url", "%q is not a Redis URL: %v", c.URL, err)
		}
	}
	if (c.Sentinel.Master == "") != (len(c.Sentinel.Addrs) == 0) {
		bad("sentinel.master", "%q and sentinel.addrs must be set together", c.Sentinel.Master)
	}
	for i, a := range c.Sentinel.Addrs {
		if !hostPort(a) {
			bad(fmt.Sprintf("sentinel.addrs[%d]", i), "%q is not a host:port address", a)
		}
	}
	for i, a := range c.Cluster.Addrs {
		if !hostPort(a) {
			bad(fmt.Sprintf("cluster.addrs[%d]", i), "%q is not a host:port address", a)
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"dial_timeout", c.DialTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}} {
		if d.v <= 0 {
			bad(d.key, "%v must be positive", d.v)
		}
	}
	if c.PoolSize < 0 {
		bad("pool_size", "%d must not be negative (0: go-redis's default)", c.PoolSize)
	}
	if c.WaitReplicas < 0 {
		bad("wait_replicas", "%d must not be negative (0 does not wait)", c.WaitReplicas)
	}
	// WAIT takes whole milliseconds, 0 waiting for ever, and its answer is
	// read under read_timeout: a longer wait would fail as a lost answer.
	if c.WaitReplicas > 0 && (c.WaitTimeout < time.Millisecond || c.WaitTimeout >= c.ReadTimeout) {
		bad("wait_timeout", "%v must be at least 1ms and shorter than read_timeout (%v) when wait_replicas is set", c.WaitTimeout, c.ReadTimeout)
	}
	return errors.Join(errs...)
}

func hostPort(a string) bool {
	i := strings.LastIndexByte(a, ':')
	return i > 0 && i < len(a)-1
}

// New returns a client for c: a Client for a URL, a FailoverClient that
// asks the sentinels for the master (and follows its failovers), or a
// ClusterClient, which follows MOVED and ASK redirections. It does not
// connect: an unreachable Redis is found by the first call, whose context
// deadline bounds it. Calls that fail on a broken connection are retried
// (go-redis's default) within that deadline.
func New(c Config) (redis.UniversalClient, error) {
	if mode := c.Mode(); mode != "url" {
		// go-redis picks the client from the options: a master name is
		// Sentinel, IsClusterMode a cluster (even from one seed address).
		opts := &redis.UniversalOptions{
			Password:              c.Password,
			DialTimeout:           c.DialTimeout,
			ReadTimeout:           c.ReadTimeout,
			WriteTimeout:          c.WriteTimeout,
			PoolSize:              c.PoolSize,
			ContextTimeoutEnabled: true,
		}
		if mode == "sentinel" {
			opts.MasterName, opts.Addrs, opts.SentinelPassword = c.Sentinel.Master, c.Sentinel.Addrs, c.Sentinel.Password
		} else {
			opts.Addrs, opts.IsClusterMode = c.Cluster.Addrs, true
		}
		return redis.NewUniversalClient(opts), nil
	}
	url := c.URL
	if url == "" {
		url = DefaultURL
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis client: %w", err)
	}
	opts.ContextTimeoutEnabled = true
	// The URL's own query (dial_timeout=, pool_size=) wins over the section.
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, fmt.Errorf("redis client: %w", err)
	}
	q := u.Query()
	for _, d := range []struct {
		key string
		dst *time.Duration
		v   time.Duration
	}{{"dial_timeout", &opts.DialTimeout, c.DialTimeout}, {"read_timeout", &opts.ReadTimeout, c.ReadTimeout}, {"write_timeout", &opts.WriteTimeout, c.WriteTimeout}} {
		if !q.Has(d.key) && d.v > 0 {
			*d.dst = d.v
		}
	}
	if !q.Has("pool_size") && c.PoolSize > 0 {
		opts.PoolSize = c.PoolSize
	}
	return redis.NewClient(opts), nil
}

// Clients is a process's set of Redis clients: one per distinct Config,
// so that tiers pointed at the same server share one connection pool. It
// is safe for concurrent use.
type Clients struct {
	mu   sync.Mutex
	open []entry
}

type entry struct {
	cfg Config
	rdb redis.UniversalClient
}

// Get returns the client for c, making it on first use.
func (s *Clients) Get(c Config) (redis.UniversalClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.open {
		if same(e.cfg, c) {
			return e.rdb, nil
		}
	}
	rdb, err := New(c)
	if err != nil {
		return nil, err
	}
	s.open = append(s.open, entry{cfg: c, rdb: rdb})
	return rdb, nil
}

// same reports whether a and b make the same client: every field counts
// but the Wait ones, which are the Idempotency store's, not the client's.
func same(a, b Config) bool {
	a.WaitReplicas, a.WaitTimeout = 0, 0
	b.WaitReplicas, b.WaitTimeout = 0, 0
	return reflect.DeepEqual(a, b)
}

// Close closes every client the set made.
func (s *Clients) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.open {
		if err := e.rdb.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.open = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redis clients: close: %w", err)
	}
	return nil
}
