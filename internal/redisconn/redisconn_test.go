package redisconn

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNewOneNode(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URL, cfg.PoolSize, cfg.ReadTimeout = "redis://127.0.0.1:1/3?dial_timeout=7s", 5, 2*time.Second
	rdb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	opts := rdb.(*redis.Client).Options()
	// The URL's own dial_timeout wins; the section sets what it leaves out.
	if opts.Addr != "127.0.0.1:1" || opts.DB != 3 || !opts.ContextTimeoutEnabled || opts.DialTimeout != 7*time.Second ||
		opts.ReadTimeout != 2*time.Second || opts.PoolSize != 5 || opts.MaxRetries <= 0 {
		t.Errorf("options = addr %q db %d context timeouts %v dial %v read %v pool %d retries %d; want 127.0.0.1:1, 3, true, 7s, 2s, 5, go-redis's default",
			opts.Addr, opts.DB, opts.ContextTimeoutEnabled, opts.DialTimeout, opts.ReadTimeout, opts.PoolSize, opts.MaxRetries)
	}
	def, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if addr := def.(*redis.Client).Options().Addr; addr != "127.0.0.1:6379" {
		t.Errorf("no server named: addr %q, want DefaultURL's", addr)
	}
	if _, err := New(Config{URL: "http://127.0.0.1"}); err == nil || !strings.HasPrefix(err.Error(), "redis client: ") {
		t.Errorf("New with an http URL = %v, want a redis client error", err)
	}
}

func TestNewSentinelAndCluster(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sentinel = Sentinel{Master: "amexd", Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}
	rdb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	// A FailoverClient is a Client whose dialer asks the sentinels.
	if _, ok := rdb.(*redis.Client); !ok || cfg.Mode() != "sentinel" {
		t.Errorf("sentinel: %T, mode %s; want a *redis.Client, sentinel", rdb, cfg.Mode())
	}
	cfg = DefaultConfig()
	cfg.Cluster.Addrs = []string{"127.0.0.1:1"}
	cc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, ok := cc.(*redis.ClusterClient); !ok || cfg.Mode() != "cluster" {
		t.Errorf("cluster: %T, mode %s; want a *redis.ClusterClient, cluster", cc, cfg.Mode())
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string // "" for valid
	}{
		{func(*Config) {}, ""},
		{func(c *Config) { c.URL = "unix:///run/redis.sock?db=1" }, ""},
		{func(c *Config) { c.Sentinel = Sentinel{Master: "m", Addrs: []string{"10.0.0.1:26379"}} }, ""},
		{func(c *Config) { c.Cluster.Addrs = []string{"10.0.0.1:7000", "10.0.0.2:7000"} }, ""},
		{func(c *Config) { c.URL = "http://x" }, `redis.url: "http://x" is not a Redis URL`},
		{func(c *Config) { c.URL, c.Cluster.Addrs = "redis://x:1", []string{"a:1"} }, "redis.url and redis.cluster: set only one of"},
		{func(c *Config) {
			c.Sentinel, c.Cluster.Addrs = Sentinel{Master: "m", Addrs: []string{"a:1"}}, []string{"a:1"}
		}, "redis.sentinel and redis.cluster: set only one of"},
		{func(c *Config) { c.Sentinel.Master = "m" }, "redis.sentinel.master"},
		{func(c *Config) { c.Sentinel = Sentinel{Master: "m", Addrs: []string{"nohost"}} }, "redis.sentinel.addrs[0]"},
		{func(c *Config) { c.Cluster.Addrs = []string{"a:1", "b"} }, "redis.cluster.addrs[1]"},
		{func(c *Config) { c.ReadTimeout = 0 }, "redis.read_timeout"},
		{func(c *Config) { c.PoolSize = -1 }, "redis.pool_size"},
		{func(c *Config) { c.WaitReplicas = -1 }, "redis.wait_replicas"},
		{func(c *Config) { c.WaitReplicas, c.WaitTimeout = 1, 0 }, "redis.wait_timeout"},
		{func(c *Config) { c.WaitReplicas, c.WaitTimeout = 1, 500*time.Microsecond }, "redis.wait_timeout"},
		{func(c *Config) { c.WaitReplicas, c.WaitTimeout = 1, c.ReadTimeout }, "redis.wait_timeout"},
		{func(c *Config) { c.WaitReplicas = 1 }, ""},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate("redis.")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error naming %s", cfg, err, tc.want)
		}
	}
}

func TestClientsSharePerServer(t *testing.T) {
	var set Clients
	a := DefaultConfig()
	a.URL = "redis://127.0.0.1:1/0"
	b := a
	b.WaitReplicas = 1 // the same server, for a store that waits for a replica
	c := a
	c.URL = "redis://127.0.0.1:2/0"
	ra, err := set.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := set.Get(b)
	rc, _ := set.Get(c)
	if ra != rb || ra == rc {
		t.Errorf("same server: same client %v, other server: other client %v; want true, true", ra == rb, ra != rc)
	}
	if err := set.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ra.Ping(t.Context()).Err(); err == nil {
		t.Error("a client still answers after Clients.Close")
	}
}
