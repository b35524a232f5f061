// Package config defines amexd's configuration: one typed struct, loaded once
// from built-in defaults, an optional YAML file, AMEXD_* environment variables
// and command-line flags (in that order), and validated before use.
//
// Every leaf of the struct has a dotted key made of its YAML names, such as
// "ratelimit.rate". The environment variable for a key is AMEXD_ followed by
// the key upper-cased with dots replaced by underscores (AMEXD_RATELIMIT_RATE),
// and the flag is the key itself (-ratelimit.rate).
package config

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/upstream"
)

// Config is the whole configuration of an amexd daemon and its workers.
type Config struct {
	// Listen is the public address every worker serves.
	Listen string `yaml:"listen"`
	// Workers is the number of worker processes; 0 means one per CPU.
	Workers int `yaml:"workers"`
	// ShutdownTimeout bounds how long a worker drains in-flight requests.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MetricsAddr, when set, is a TCP address serving the aggregated metrics.
	MetricsAddr string `yaml:"metrics_addr"`
	// Fanout bounds the parallel upstream calls of one user-events request.
	Fanout int `yaml:"fanout"`

	Log        Log                    `yaml:"log"`
	HTTP       HTTP                   `yaml:"http"`
	TLS        TLS                    `yaml:"tls"`
	CORS       CORS                   `yaml:"cors"`
	Auth       auth.Config            `yaml:"auth"`
	Control    Control                `yaml:"control"`
	Supervisor Supervisor             `yaml:"supervisor"`
	Upstream   upstream.Config        `yaml:"upstream"`
	Breaker    upstream.BreakerConfig `yaml:"breaker"`
	Cache      cache.Config           `yaml:"cache"`
	RateLimit  ratelimit.Config       `yaml:"ratelimit"`
	// Idempotency keeps the answers of writes sent with an Idempotency-Key,
	// in the shared table on one machine or, with ratelimit.store redis, in
	// Redis across machines.
	Idempotency idempotency.Config `yaml:"idempotency"`
	Simulator   simulator.Config   `yaml:"simulator"`
	// Redis is the one Redis setup (a node, a Sentinel master or a Redis
	// Cluster) that every shared tier uses: ratelimit.store redis, the
	// Idempotency-Keys that go with it, cache.shared redis and the bridge
	// between machines.
	Redis redisconn.Config `yaml:"redis"`
}

// Log selects the log handler and level.
type Log struct {
	// Format is "auto" (tint on a terminal, JSON otherwise), "text" or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `yaml:"level"`
	// Access writes one line per answered request.
	Access bool `yaml:"access"`
	// AccessFlush is how often buffered access lines are written out; a
	// worker killed with SIGKILL loses at most this much of them.
	AccessFlush time.Duration `yaml:"access_flush"`
	// AccessFile, when set, is the file access lines go to instead of
	// stderr, reopened when logrotate moves it away.
	AccessFile string `yaml:"access_file"`
}

// TLS makes every worker serve HTTPS when both files are set.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// HTTP holds the public server's limits.
type HTTP struct {
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
}

// CORS is the cross-origin policy. An empty AllowOrigins disables CORS.
type CORS struct {
	AllowOrigins     []string `yaml:"allow_origins"`
	AllowMethods     []string `yaml:"allow_methods"`
	AllowHeaders     []string `yaml:"allow_headers"`
	AllowCredentials bool     `yaml:"allow_credentials"`
	MaxAge           int      `yaml:"max_age"`
}

// Control configures the operator socket.
type Control struct {
	// Socket is the operator socket's path; empty picks a default (see
	// DefaultSocketPath).
	Socket string `yaml:"socket"`
	// Group, when set, is a group whose members may use the operator socket
	// besides root and the daemon's own user.
	Group string `yaml:"group"`
}

// Supervisor tunes worker supervision.
type Supervisor struct {
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	HeartbeatTimeout  time.Duration `yaml:"heartbeat_timeout"`
	ReadyTimeout      time.Duration `yaml:"ready_timeout"`
	RestartMin        time.Duration `yaml:"restart_min"`
	RestartMax        time.Duration `yaml:"restart_max"`
	// HealthyAfter is how long a worker must live before its slot's restart
	// backoff starts again from RestartMin.
	HealthyAfter time.Duration `yaml:"healthy_after"`
	// DegradedAfter is how many crashes within HealthyAfter mark a slot degraded.
	DegradedAfter int `yaml:"degraded_after"`
	// OutageLimit is how long the supervisor tolerates no serving slot at all
	// before it exits 1 so that systemd restarts it.
	OutageLimit time.Duration `yaml:"outage_limit"`
	// MaxRequests recycles a worker once it answered this many requests,
	// plus a random part of MaxRequestsJitter drawn per worker so that
	// slots do not recycle together; 0 never recycles on requests.
	MaxRequests       int `yaml:"max_requests"`
	MaxRequestsJitter int `yaml:"max_requests_jitter"`
	// MaxMemory recycles a worker whose resident memory exceeds it; 0 never
	// does. Workers also run with a Go memory limit (GOMEMLIMIT) of 90% of
	// it, so that the garbage collector works harder before that happens.
	MaxMemory Bytes `yaml:"max_memory"`
	// Canary is how long a reload or upgrade watches the first slot it
	// replaced before it replaces the others; 0 replaces them all at once
	// in turn without watching.
	Canary time.Duration `yaml:"canary"`
	// Warm bounds the cache entries a new worker is given before it serves.
	Warm Warm `yaml:"warm"`
}

// Warm bounds the transfer of hot cache entries from a running worker to
// one that replaces it or joins the fleet.
type Warm struct {
	// MaxEntries bounds the entries transferred; 0 turns warm starts off.
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes bounds the bodies transferred.
	MaxBytes Bytes `yaml:"max_bytes"`
	// Timeout bounds how long a new worker waits for the entries before it
	// serves with what it has.
	Timeout time.Duration `yaml:"timeout"`
}

// MemoryLimit is the Go memory limit a worker sets for MaxMemory, or 0 when
// MaxMemory is off.
func (s Supervisor) MemoryLimit() int64 { return int64(s.MaxMemory) / 10 * 9 }

// Default returns the built-in configuration, the same as configs/amexd.yaml.
func Default() Config {
	return Config{
		Listen:          ":3000",
		Workers:         0,
		ShutdownTimeout: 15 * time.Second,
		Fanout:          128,
		Log:             Log{Format: "auto", Level: "info", Access: true, AccessFlush: 200 * time.Millisecond},
		HTTP: HTTP{
			MaxBodyBytes:      64 << 10,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    16 << 10,
		},
		CORS: CORS{
			AllowOrigins: []string{"http://localhost:3000", "http://127.0.0.1:3000"},
			AllowMethods: []string{"GET", "POST", "OPTIONS"},
			AllowHeaders: []string{"Content-Type", "Authorization", "X-Request-ID", "If-None-Match", "Idempotency-Key"},
			MaxAge:       600,
		},
		Auth: auth.DefaultConfig(),
		Supervisor: Supervisor{
			HeartbeatInterval: time.Second,
			HeartbeatTimeout:  10 * time.Second,
			ReadyTimeout:      15 * time.Second,
			RestartMin:        100 * time.Millisecond,
			RestartMax:        30 * time.Second,
			HealthyAfter:      time.Minute,
			DegradedAfter:     5,
			OutageLimit:       30 * time.Second,
			Canary:            5 * time.Second,
			Warm:              Warm{MaxEntries: 10000, MaxBytes: 64 << 20, Timeout: 2 * time.Second},
		},
		Upstream:    upstream.DefaultConfig(),
		Breaker:     upstream.DefaultBreakerConfig(),
		Cache:       cache.DefaultConfig(),
		RateLimit:   ratelimit.DefaultConfig(),
		Idempotency: idempotency.DefaultConfig(),
		Simulator:   simulator.DefaultConfig(),
		Redis:       redisconn.DefaultConfig(),
	}
}

// adoptLegacyRedis takes ratelimit.redis_url, the Redis URL of earlier
// releases, as redis.url when the redis section names no server.
func (c *Config) adoptLegacyRedis() {
	r := &c.Redis
	if c.RateLimit.RedisURL != "" && r.URL == "" && r.Mode() == "url" {
		r.URL = c.RateLimit.RedisURL
	}
}

// Warnings lists what the configuration still accepts but should not say:
// deprecated keys, each with its replacement.
func (c Config) Warnings() []string {
	if c.RateLimit.RedisURL != "" {
		return []string{"ratelimit.redis_url is deprecated and will be removed in the next release: use redis.url (or redis.sentinel.*, redis.cluster.addrs)"}
	}
	return nil
}

// CacheRedis is the Redis of the shared cache tier: the redis section, or
// the one node cache.redis_url names, with the section's timeouts.
func (c Config) CacheRedis() redisconn.Config {
	if c.Cache.RedisURL == "" {
		return c.Redis
	}
	r := c.Redis
	r.URL, r.Sentinel, r.Cluster, r.Password = c.Cache.RedisURL, redisconn.Sentinel{}, redisconn.Cluster{}, ""
	return r
}

// WorkerCount is the number of worker processes to run: Workers, or one per
// CPU when Workers is 0.
func (c Config) WorkerCount() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return runtime.NumCPU()
}

// Validate reports every invalid field, each error naming the field's key
// and the bad value.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, value any, why string) {
		errs = append(errs, fmt.Errorf("%s: %v %s", key, value, why))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", quote(c.Listen), "is not a host:port address")
	}
	if c.Workers < 0 || c.Workers > 1024 {
		bad("workers", c.Workers, "must be between 0 (one per CPU) and 1024")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", c.ShutdownTimeout, "must be positive")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("metrics_addr", quote(c.MetricsAddr), "is not a host:port address")
		}
	}
	if c.Fanout < 1 {
		bad("fanout", c.Fanout, "must be at least 1")
	}
	if !slices.Contains([]string{"auto", "text", "json"}, c.Log.Format) {
		bad("log.format", quote(c.Log.Format), "must be auto, text or json")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", quote(c.Log.Level), "must be debug, info, warn or error")
	}
	positive := []struct {
		key string
		d   time.Duration
	}{
		{"log.access_flush", c.Log.AccessFlush},
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout},
		{"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout},
		{"http.idle_timeout", c.HTTP.IdleTimeout},
		{"supervisor.heartbeat_interval", c.Supervisor.HeartbeatInterval},
		{"supervisor.heartbeat_timeout", c.Supervisor.HeartbeatTimeout},
		{"supervisor.ready_timeout", c.Supervisor.ReadyTimeout},
		{"supervisor.restart_min", c.Supervisor.RestartMin},
		{"supervisor.restart_max", c.Supervisor.RestartMax},
		{"supervisor.healthy_after", c.Supervisor.HealthyAfter},
		{"supervisor.outage_limit", c.Supervisor.OutageLimit},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.key, p.d, "must be positive")
		}
	}
	if c.HTTP.MaxBodyBytes < 1 {
		bad("http.max_body_bytes", c.HTTP.MaxBodyBytes, "must be at least 1")
	}
	if c.HTTP.MaxHeaderBytes < 1024 {
		bad("http.max_header_bytes", c.HTTP.MaxHeaderBytes, "must be at least 1024")
	}
	if c.Supervisor.HeartbeatTimeout <= c.Supervisor.HeartbeatInterval {
		bad("supervisor.heartbeat_timeout", c.Supervisor.HeartbeatTimeout, "must exceed supervisor.heartbeat_interval")
	}
	if c.Supervisor.RestartMax < c.Supervisor.RestartMin {
		bad("supervisor.restart_max", c.Supervisor.RestartMax, "must not be below supervisor.restart_min")
	}
	if c.Supervisor.DegradedAfter < 1 {
		bad("supervisor.degraded_after", c.Supervisor.DegradedAfter, "must be at least 1")
	}
	errs = append(errs, c.Supervisor.validateRecycling(c.Cache.SizeMB)...)
	for _, o := range c.CORS.AllowOrigins {
		if o == "*" && c.CORS.AllowCredentials {
			bad("cors.allow_origins", quote(o), "cannot be a wildcard when cors.allow_credentials is true")
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file", quote(c.TLS.CertFile), "and tls.key_file must be set together")
	}
	if c.CORS.MaxAge < 0 {
		bad("cors.max_age", c.CORS.MaxAge, "must not be negative")
	}
	if err := c.Redis.Validate("redis."); err != nil {
		errs = append(errs, err)
	}
	if c.RateLimit.RedisURL != "" && c.RateLimit.RedisURL != c.Redis.URL {
		bad("ratelimit.redis_url", quote(c.RateLimit.RedisURL), "is deprecated and differs from the redis section; keep only redis.*")
	}
	for _, v := range []interface{ Validate() error }{c.Auth, c.Upstream, c.Breaker, c.Cache, c.RateLimit, c.Idempotency, c.Simulator} {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// memoryHeadroom is what a worker needs besides its cache's entries.
const memoryHeadroom = 16 << 20

// validateRecycling checks the keys of recycling, canaries and warm starts;
// cacheMB is cache.size_mb, which supervisor.max_memory must leave room for.
func (s Supervisor) validateRecycling(cacheMB int) []error {
	var errs []error
	bad := func(key string, value any, why string) {
		errs = append(errs, fmt.Errorf("%s: %v %s", key, value, why))
	}
	if s.MaxRequests < 0 {
		bad("supervisor.max_requests", s.MaxRequests, "must not be negative (0 turns it off)")
	}
	switch {
	case s.MaxRequestsJitter < 0:
		bad("supervisor.max_requests_jitter", s.MaxRequestsJitter, "must not be negative")
	case s.MaxRequestsJitter > 0 && s.MaxRequests == 0:
		bad("supervisor.max_requests_jitter", s.MaxRequestsJitter, "needs supervisor.max_requests")
	}
	if s.MaxMemory < 0 {
		bad("supervisor.max_memory", int64(s.MaxMemory), "must not be negative (0 turns it off)")
	}
	if floor := Bytes(int64(cacheMB)<<20 + memoryHeadroom); s.MaxMemory > 0 && s.MaxMemory < floor {
		bad("supervisor.max_memory", s.MaxMemory, fmt.Sprintf("is below cache.size_mb (%d MB) plus %s for the rest of a worker; use at least %s", cacheMB, Bytes(memoryHeadroom), floor))
	}
	if s.Canary < 0 {
		bad("supervisor.canary", s.Canary, "must not be negative (0 turns it off)")
	}
	if s.Warm.MaxEntries < 0 {
		bad("supervisor.warm.max_entries", s.Warm.MaxEntries, "must not be negative (0 turns warm starts off)")
	}
	if s.Warm.MaxEntries > 0 {
		if s.Warm.MaxBytes <= 0 {
			bad("supervisor.warm.max_bytes", int64(s.Warm.MaxBytes), "must be positive")
		}
		switch {
		case s.Warm.Timeout <= 0:
			bad("supervisor.warm.timeout", s.Warm.Timeout, "must be positive")
		case s.Warm.Timeout >= s.ReadyTimeout:
			bad("supervisor.warm.timeout", s.Warm.Timeout, "must be below supervisor.ready_timeout")
		}
	}
	return errs
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// Summary is the short description of a configuration that the operator
// socket reports; it never includes secrets.
func (c Config) Summary() map[string]any {
	upstreamURL := c.Upstream.URL
	if upstreamURL == "" {
		upstreamURL = "embedded simulator"
	}
	return map[string]any{
		"listen":          c.Listen,
		"workers":         c.WorkerCount(),
		"upstream":        upstreamURL,
		"ratelimit":       c.RateLimit.Rate,
		"ratelimit_store": c.RateLimit.Store,
		"log":             strings.Join([]string{c.Log.Format, c.Log.Level}, "/"),
		"auth":            c.Auth.Enabled,
		"tls":             c.TLS.Enabled(),
	}
}
