package redisconn

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestNew(t *testing.T) {
	rdb, err := New(Config{URL: "redis://127.0.0.1:1/3", NoRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	// go-redis reads MaxRetries -1 as no retry and keeps it as 0.
	opts := rdb.(*redis.Client).Options()
	if opts.Addr != "127.0.0.1:1" || opts.DB != 3 || opts.MaxRetries != 0 || !opts.ContextTimeoutEnabled {
		t.Errorf("options = addr %q db %d retries %d context timeouts %v; want 127.0.0.1:1, 3, 0, true",
			opts.Addr, opts.DB, opts.MaxRetries, opts.ContextTimeoutEnabled)
	}
	retrying, err := New(Config{URL: "redis://127.0.0.1:1/3"})
	if err != nil {
		t.Fatal(err)
	}
	defer retrying.Close()
	if n := retrying.(*redis.Client).Options().MaxRetries; n <= 0 {
		t.Errorf("without NoRetry, %d retries; want go-redis's default", n)
	}
	if _, err := New(Config{URL: "http://127.0.0.1"}); err == nil || !strings.HasPrefix(err.Error(), "redis client: ") {
		t.Errorf("New with an http URL = %v, want a redis client error", err)
	}
}
