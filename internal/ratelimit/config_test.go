package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	want := Config{
		Rate: "100-M", Store: "shared", TableSlots: 65536, IPv6Prefix: 64, LogInterval: 10 * time.Second,
		RedisTimeout: 50 * time.Millisecond, OnRedisError: "local", Instances: 1,
	}
	if cfg.Rate != want.Rate || cfg.Store != want.Store || cfg.TableSlots != want.TableSlots ||
		cfg.IPv6Prefix != want.IPv6Prefix || cfg.LogInterval != want.LogInterval ||
		cfg.RedisURL != "" || cfg.RedisTimeout != want.RedisTimeout ||
		cfg.OnRedisError != want.OnRedisError || cfg.Instances != want.Instances ||
		len(cfg.TrustedProxies) != 0 || len(cfg.Routes) != 0 {
		t.Errorf("DefaultConfig() = %+v, want %+v", cfg, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // empty: valid
	}{
		{"bad rate", func(c *Config) { c.Rate = "100/M" }, `ratelimit.rate: "100/M" is not a valid rate (want e.g. 100-M)`},
		{"zero limit", func(c *Config) { c.Rate = "0-M" }, `ratelimit.rate: "0-M" has a limit below 1`},
		{"limit above table", func(c *Config) { c.Rate = "99999999-M" }, `has a limit above the shared table's maximum`},
		{"big limit in redis, allow", func(c *Config) { c.Rate = "99999999-M"; c.Store = "redis"; c.OnRedisError = "allow" }, ""},
		{"big limit in redis, local", func(c *Config) { c.Rate = "99999999-M"; c.Store = "redis" }, `has a limit above the shared table's maximum`},
		{"no slots for redis, local", func(c *Config) { c.TableSlots = 0; c.Store = "redis" }, `ratelimit.table_slots: 0 is out of range`},
		{"ipv6 prefix", func(c *Config) { c.IPv6Prefix = 129 }, `ratelimit.ipv6_prefix: 129 is out of range [1, 128]`},
		{"log interval", func(c *Config) { c.LogInterval = 0 }, `ratelimit.log_interval: 0s must be positive`},
		{"no instances", func(c *Config) { c.Instances = 0 }, `ratelimit.instances: 0 must be at least 1`},
		{"bad store", func(c *Config) { c.Store = "disk" }, `ratelimit.store: "disk" is not a store`},
		{"no slots", func(c *Config) { c.TableSlots = 0 }, `ratelimit.table_slots: 0 is out of range`},
		{"slots unused by memory", func(c *Config) { c.TableSlots = 0; c.Store = "memory" }, ""},
		{"bad redis timeout", func(c *Config) { c.Store = "redis"; c.RedisTimeout = 0 }, `ratelimit.redis_timeout: 0s must be positive`},
		{"bad policy", func(c *Config) { c.OnRedisError = "retry" }, `ratelimit.on_redis_error: "retry" is not a policy`},
		{"good proxies", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "::1/128"} }, ""},
		{"bad proxy", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.1"} }, `ratelimit.trusted_proxies[1]: "10.0.0.1" is not a CIDR`},
		{"good route", func(c *Config) { c.Routes = []Route{{"post", "/events", "10-M"}} }, ""},
		{"route method", func(c *Config) { c.Routes = []Route{{"FETCH", "/events", "10-M"}} }, `ratelimit.routes[0].method: "FETCH" is not an HTTP method`},
		{"route path", func(c *Config) { c.Routes = []Route{{"GET", "events", "10-M"}} }, `ratelimit.routes[0].path: "events" must start with /`},
		{"route rate", func(c *Config) { c.Routes = []Route{{"GET", "/a", "10-M"}, {"GET", "/b", "ten"}} }, `ratelimit.routes[1].rate: "ten" is not a valid rate (want e.g. 10-M)`},
		{"route repeated", func(c *Config) { c.Routes = []Route{{"GET", "/a", "1-S"}, {"get", "/a", "2-S"}} }, `ratelimit.routes[1]: GET /a repeats routes[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rate, cfg.Store = "x", "y"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "ratelimit.rate") || !strings.Contains(err.Error(), "ratelimit.store") {
		t.Errorf("Validate() = %v, want both ratelimit.rate and ratelimit.store named", err)
	}
}

func TestConfigYAML(t *testing.T) {
	doc := `
ratelimit:
  rate: 50-S
  store: redis
  redis_url: redis://127.0.0.1:6390/2
  redis_timeout: 20ms
  on_redis_error: deny
  trusted_proxies: [10.0.0.0/8]
  routes:
    - {method: POST, path: /events, rate: 10-M}
`
	var file struct {
		RateLimit Config `yaml:"ratelimit"`
	}
	file.RateLimit = DefaultConfig()
	if err := yaml.Unmarshal([]byte(doc), &file); err != nil {
		t.Fatal(err)
	}
	got := file.RateLimit
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	if got.Rate != "50-S" || got.Store != StoreRedis || got.TableSlots != 65536 || got.RedisTimeout != 20*time.Millisecond ||
		got.OnRedisError != OnRedisErrorDeny || got.TrustedProxies[0] != "10.0.0.0/8" ||
		got.Routes[0] != (Route{Method: "POST", Path: "/events", Rate: "10-M"}) {
		t.Errorf("decoded %+v", got)
	}
}

func TestParseRate(t *testing.T) {
	r, err := ParseRate("10-M")
	if err != nil || r.Limit != 10 || r.Period != time.Minute {
		t.Errorf(`ParseRate("10-M") = %+v, %v`, r, err)
	}
	if _, err := ParseRate("10/M"); err == nil || !strings.Contains(err.Error(), `"10/M" is not a valid rate`) {
		t.Errorf(`ParseRate("10/M") error = %v`, err)
	}
}

func TestNewStore(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	if _, err := NewStore(ctx, cfg, nil); err == nil || !strings.Contains(err.Error(), "ratelimit.store shared needs the supervisor's table") {
		t.Errorf("NewStore(shared, nil file) error = %v", err)
	}
	_, f := newTestTable(t, 64)
	st, err := NewStore(ctx, cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	tb, ok := st.(*Table)
	if !ok {
		t.Fatalf("NewStore(shared) = %T, want *Table", st)
	}
	tb.Close()

	cfg.Rate = "bad"
	if _, err := NewStore(ctx, cfg, f); err == nil || !strings.Contains(err.Error(), "ratelimit.rate") {
		t.Errorf("NewStore with a bad rate: error = %v", err)
	}
}
