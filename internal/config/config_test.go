package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestShippedDefaultsMatchBuiltIn(t *testing.T) {
	got, err := DecodeFile("../../configs/amexd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gotYAML, _ := yaml.Marshal(got)
	wantYAML, _ := yaml.Marshal(Default())
	if string(gotYAML) != string(wantYAML) {
		t.Errorf("configs/amexd.yaml differs from Default():\n got %s\nwant %s", gotYAML, wantYAML)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("defaults are invalid: %v", err)
	}
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "amexd.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:4001\nworkers: 3\nratelimit:\n  rate: 10-M\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"AMEXD_CONFIG=" + file, "AMEXD_WORKERS=5", "AMEXD_CACHE_USER_EVENTS_FRESH=3s", "AMEXD_CORS_ALLOW_ORIGINS=https://a.example, https://b.example"}
	cfg, src, err := Load([]string{"-workers", "7", "-breaker.propagate=false"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if src.File != file {
		t.Errorf("source file %q, want %q", src.File, file)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen from file", cfg.Listen, "127.0.0.1:4001"},
		{"rate from file", cfg.RateLimit.Rate, "10-M"},
		{"workers: flag beats env beats file", cfg.Workers, 7},
		{"nested key from env", cfg.Cache.UserEvents.Fresh, 3 * time.Second},
		{"list from env", cfg.CORS.AllowOrigins, []string{"https://a.example", "https://b.example"}},
		{"bool flag", cfg.Breaker.Propagate, false},
		{"untouched default", cfg.Breaker.Failures, 3},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:4002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := src.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if again.Listen != "127.0.0.1:4002" || again.Workers != 7 {
		t.Errorf("reload: listen %q workers %d, want the new file and the same flags", again.Listen, again.Workers)
	}
}

func TestLoadErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		file string
		want string
	}{
		{"bad duration flag", []string{"-shutdown_timeout", "soon"}, nil, "", "shutdown_timeout"},
		{"bad int env", nil, []string{"AMEXD_WORKERS=many"}, "", "AMEXD_WORKERS"},
		{"negative workers", []string{"-workers", "-2"}, nil, "", "workers: -2"},
		{"bad rate", nil, []string{"AMEXD_RATELIMIT_RATE=100/M"}, "", "ratelimit.rate"},
		{"bad log format", []string{"-log.format", "xml"}, nil, "", `log.format: "xml"`},
		{"bad listen", []string{"-listen", "3000"}, nil, "", `listen: "3000"`},
		{"unknown file key", nil, nil, "listne: :3000\n", "listne"},
		{"wrong file type", nil, nil, "workers: lots\n", "line 1: cannot unmarshal !!str `lots`"},
		{"half TLS", []string{"-tls.cert_file", "c.pem"}, nil, "", "tls.cert_file"},
		{"wildcard with credentials", []string{"-cors.allow_origins", "*", "-cors.allow_credentials"}, nil, "", "cors.allow_origins"},
		{"stray argument", []string{"serve"}, nil, "", "unexpected argument"},
		{"unknown flag", []string{"-nope", "1"}, nil, "", "nope"},
		{"bad size env", nil, []string{"AMEXD_SUPERVISOR_MAX_MEMORY=lots"}, "", "AMEXD_SUPERVISOR_MAX_MEMORY"},
		{"bad size in file", nil, nil, "supervisor:\n  max_memory: 12 parsecs\n", "line 2"},
		{"max_memory below the cache", []string{"-supervisor.max_memory", "260MiB"}, nil, "", "supervisor.max_memory: 260MiB is below cache.size_mb"},
		{"negative max_requests", []string{"-supervisor.max_requests", "-1"}, nil, "", "supervisor.max_requests: -1"},
		{"jitter alone", []string{"-supervisor.max_requests_jitter", "10"}, nil, "", "supervisor.max_requests_jitter: 10 needs supervisor.max_requests"},
		{"negative canary", []string{"-supervisor.canary", "-1s"}, nil, "", "supervisor.canary: -1s"},
		{"warm timeout past ready", []string{"-supervisor.warm.timeout", "1m"}, nil, "", "supervisor.warm.timeout: 1m0s must be below supervisor.ready_timeout"},
		{"warm without bytes", []string{"-supervisor.warm.max_bytes", "0"}, nil, "", "supervisor.warm.max_bytes: 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			if tc.file != "" {
				path := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				env = append(env, "AMEXD_CONFIG="+path)
			}
			_, _, err := Load(tc.args, env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, _, err := Load([]string{"-h"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"-ratelimit.rate", "AMEXD_RATELIMIT_RATE", "-upstream.url", "-config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestWorkerCount(t *testing.T) {
	c := Default()
	if c.WorkerCount() < 1 {
		t.Errorf("auto worker count %d", c.WorkerCount())
	}
	c.Workers = 3
	if c.WorkerCount() != 3 {
		t.Errorf("worker count %d, want 3", c.WorkerCount())
	}
}

func TestProductionConfig(t *testing.T) {
	cfg, err := DecodeFile("../../configs/production.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"auth on", cfg.Auth.Enabled, true},
		{"secret file", cfg.Auth.HS256SecretFile, "/etc/amexd/jwt.secret"},
		{"json logs", cfg.Log.Format, "json"},
		{"shared limiter", cfg.RateLimit.Store, "shared"},
		{"default socket", cfg.Control.Socket, ""},
		{"no CORS origins", len(cfg.CORS.AllowOrigins), 0},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestHelpPrintsEveryKeyOnceWithItsDoc(t *testing.T) {
	var out strings.Builder
	_, _, err := Load([]string{"-h"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load(-h) = %v, want flag.ErrHelp", err)
	}
	help := out.String()
	if n := strings.Count(help, "Usage:"); n != 1 {
		t.Fatalf("the usage is printed %d times, want once:\n%s", n, help)
	}
	for _, f := range keys() {
		if n := len(regexp.MustCompile(`(?m)^  -`+regexp.QuoteMeta(f.Key)+`( |$)`).FindAllString(help, -1)); n != 1 {
			t.Errorf("-%s is listed %d times, want once", f.Key, n)
		}
	}
	// The meaning and the default come from configs/amexd.yaml.
	for _, want := range []string{
		"-ratelimit.rate string\n    \tper client IP: N-S, N-M, N-H or N-D (default 100-M; env AMEXD_RATELIMIT_RATE)",
		"-workers int\n    \tworker processes; 0 = one per CPU (default 0; env AMEXD_WORKERS)",
		"-cors.allow_methods list\n    \t",
		"(default GET,POST,OPTIONS; env AMEXD_CORS_ALLOW_METHODS)",
		"-http.idle_timeout duration\n",
		"(default 2m; env AMEXD_HTTP_IDLE_TIMEOUT)",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

func TestEveryKeyIsDocumented(t *testing.T) {
	docs, err := keyDocs()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range keys() {
		d, ok := docs[f.Key]
		if !ok || d.meaning == "" {
			t.Errorf("%s has no comment in configs/amexd.yaml (its own or its section's)", f.Key)
		}
	}
}

// TestReadmeKeysExist keeps the README's key table to keys that exist.
func TestReadmeKeysExist(t *testing.T) {
	readme, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range keys() {
		known[f.Key] = true
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_.]+)`")
	rows := row.FindAllStringSubmatch(string(readme), -1)
	if len(rows) < 5 {
		t.Fatalf("found %d key rows in the README, want its configuration table", len(rows))
	}
	for _, m := range rows {
		if !known[m[1]] {
			t.Errorf("the README documents %q, which is not a key", m[1])
		}
	}
}

func TestLoadRefusesAnAccessFileItCannotWrite(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "access.log")
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string // empty: loads
	}{
		{"directory missing", []string{"-log.access", "-log.access_file", missing}, nil,
			"log.access_file: " + missing + ": directory does not exist or is not writable"},
		{"a directory", []string{"-log.access", "-log.access_file", dir}, nil, "log.access_file: " + dir + ": is a directory"},
		{"access log off", []string{"-log.access=false", "-log.access_file", missing}, nil, ""},
		{"writable", []string{"-log.access", "-log.access_file", filepath.Join(dir, "access.log")}, nil, ""},
		// A container's environment sends the access log to stderr,
		// whatever the mounted file says.
		{"emptied by the environment", []string{"-log.access"}, []string{"AMEXD_LOG_ACCESS_FILE=" + missing, "AMEXD_LOG_ACCESS_FILE="}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Source{Args: tc.args, Env: tc.env}.Reload()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("load: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "access.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checking the access file created it: %v", err)
	}
}

func TestRedisSection(t *testing.T) {
	env := []string{"AMEXD_REDIS_SENTINEL_ADDRS=10.0.0.1:26379,10.0.0.2:26379"}
	cfg, _, err := Load([]string{"-redis.sentinel.master", "amexd", "-redis.wait_replicas", "1"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Mode() != "sentinel" || len(cfg.Redis.Sentinel.Addrs) != 2 || cfg.Redis.WaitReplicas != 1 || len(cfg.Warnings()) != 0 {
		t.Errorf("redis = %+v, warnings %q; want sentinel amexd on two sentinels, wait for 1, no warning", cfg.Redis, cfg.Warnings())
	}
	// The cache tier shares the section unless it names a node of its own.
	if got := cfg.CacheRedis(); got.Sentinel.Master != "amexd" {
		t.Errorf("CacheRedis() = %+v, want the redis section", got)
	}
	cfg.Cache.RedisURL = "redis://10.0.0.9:6379/0"
	if got := cfg.CacheRedis(); got.URL != cfg.Cache.RedisURL || got.Mode() != "url" || got.ReadTimeout != cfg.Redis.ReadTimeout {
		t.Errorf("CacheRedis() with cache.redis_url = %+v, want that node with the section's timeouts", got)
	}

	// The old key still works, with a warning, when the section names no server.
	cfg, _, err = Load([]string{"-ratelimit.redis_url", "redis://10.0.0.3:6379/1"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.URL != "redis://10.0.0.3:6379/1" || len(cfg.Warnings()) != 1 || !strings.Contains(cfg.Warnings()[0], "redis.url") {
		t.Errorf("legacy ratelimit.redis_url: redis.url %q, warnings %q; want it adopted with a warning naming redis.url", cfg.Redis.URL, cfg.Warnings())
	}
	_, _, err = Load([]string{"-ratelimit.redis_url", "redis://10.0.0.3:6379/1", "-redis.cluster.addrs", "10.0.0.4:7000"}, nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "ratelimit.redis_url") {
		t.Errorf("legacy key beside a cluster: %v, want an error naming ratelimit.redis_url", err)
	}
}
