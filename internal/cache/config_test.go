package cache

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestKey(t *testing.T) {
	tests := []struct {
		kind Kind
		id   string
		want string
	}{
		{KindUsers, "", "users"},
		{KindEvents, "", "events"},
		{KindUser, "1", "user:1"},
		{KindEvent, "event-3", "event:event-3"},
		{KindUserEvents, "7", "user-events:7"},
	}
	for _, tt := range tests {
		got := Key(tt.kind, tt.id)
		if got != tt.want {
			t.Errorf("Key(%q, %q) = %q, want %q", tt.kind, tt.id, got, tt.want)
		}
		if k := KindOf(got); k != tt.kind {
			t.Errorf("KindOf(%q) = %q, want %q", got, k, tt.kind)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; empty means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero stale", func(c *Config) { c.User.Stale = 0 }, ""},
		{"one shard", func(c *Config) { c.Shards = 1 }, ""},
		{"zero size", func(c *Config) { c.SizeMB = 0 }, "cache.size_mb: 0 must be positive"},
		{"shards not power of two", func(c *Config) { c.Shards = 48 }, "cache.shards: 48 must be a positive power of two"},
		{"zero shards", func(c *Config) { c.Shards = 0 }, "cache.shards: 0 must be"},
		{"negative fresh", func(c *Config) { c.Event.Fresh = -time.Second }, "cache.event.fresh: -1s must be positive"},
		{"zero fresh", func(c *Config) { c.Users.Fresh = 0 }, "cache.users.fresh: 0s must be positive"},
		{"negative stale", func(c *Config) { c.UserEvents.Stale = -time.Minute }, "cache.user_events.stale: -1m0s must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Shards = 3
	cfg.Events.Fresh = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"cache.shards: 3", "cache.events.fresh: 0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, missing %q", err, want)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	doc := `
size_mb: 64
shards: 16
users: {fresh: 5s, stale: 1m}
event:
  fresh: 2h
user_events: {stale: 90s}
`
	got := DefaultConfig()
	if err := yaml.Unmarshal([]byte(doc), &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := DefaultConfig()
	want.SizeMB = 64
	want.Shards = 16
	want.Users = Policy{Fresh: 5 * time.Second, Stale: time.Minute}
	want.Event.Fresh = 2 * time.Hour
	want.UserEvents.Stale = 90 * time.Second
	if got != want {
		t.Fatalf("decoded %+v\nwant    %+v", got, want)
	}
}

func TestLifeWindowIsLongestPolicy(t *testing.T) {
	cfg := DefaultConfig()
	if got, want := cfg.lifeWindow(), 70*time.Minute; got != want {
		t.Fatalf("lifeWindow() = %v, want %v (event: 10m fresh + 1h stale)", got, want)
	}
}
