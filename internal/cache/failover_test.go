package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// redisMachine is one cache with its own shared-tier client of the Redis
// cfg names, as one machine would have.
func redisMachine(t *testing.T, cfg redisconn.Config) *Cache {
	t.Helper()
	rdb, err := redisconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := NewShared(rdb, 100*time.Millisecond, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newCache(t, nil, WithShared(s))
	return c
}

// TestSharedTierAcrossSentinelFailover: while the master is killed and a
// replica promoted, every read is answered (the tier is skipped), and once
// the failover is done one machine's fill serves the other again.
func TestSharedTierAcrossSentinelFailover(t *testing.T) {
	s := redisha.StartSentinel(t)
	a, b := redisMachine(t, s.Config()), redisMachine(t, s.Config())
	ctx := context.Background()
	fetch, calls := counting(`"one"`)
	for _, m := range []*Cache{a, b} {
		if _, _, err := m.Get(ctx, KindUser, "user:1", fetch); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("%d upstream calls for one key on two machines before the failover, want 1", calls.Load())
	}
	killed := s.KillMaster()
	var reads, failed int
	var shared time.Duration
	for i := 0; shared == 0; i++ {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("the shared tier did not serve across machines again 30 s after the kill")
		}
		key := fmt.Sprintf("user:%d", 100+i)
		fetch, calls := counting(`"x"`)
		for _, m := range []*Cache{a, b} {
			reads++
			if _, _, err := m.Get(ctx, KindUser, key, fetch); err != nil {
				failed++
			}
		}
		if calls.Load() == 1 {
			shared = time.Since(killed)
		}
		time.Sleep(20 * time.Millisecond) // a steady read load, not a synchronisation
	}
	t.Logf("reads during the failover: %d, failed: %d; one fill serves both machines again %.1f s after kill -9 of the master",
		reads, failed, shared.Seconds())
	if failed != 0 {
		t.Errorf("%d of %d reads failed across the failover, want 0", failed, reads)
	}
}

// TestSharedTierOnRedisCluster: on a three-master Redis Cluster, one fill
// serves every machine, an invalidation and a purge reach it, and the
// keys spread over the masters (each key's parts share a slot).
func TestSharedTierOnRedisCluster(t *testing.T) {
	c := redisha.StartCluster(t, 3)
	a, b := redisMachine(t, c.Config()), redisMachine(t, c.Config())
	ctx := context.Background()
	fetch, calls := counting(`"v"`)
	for i := range 30 {
		key := fmt.Sprintf("user:%d", i)
		for _, m := range []*Cache{a, b} {
			if _, _, err := m.Get(ctx, KindUser, key, fetch); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
		}
	}
	if calls.Load() != 30 {
		t.Errorf("%d upstream calls for 30 keys on two machines, want 30", calls.Load())
	}
	for i, n := range c.KeysPerNode(t) {
		if n == 0 {
			t.Errorf("master %d holds none of the tier's keys", i)
		}
	}
	if err := a.Invalidate(ctx, "user:1", "user:2"); err != nil {
		t.Fatalf("invalidate on the cluster: %v", err)
	}
	third := redisMachine(t, c.Config())
	for _, key := range []string{"user:1", "user:3"} {
		if _, _, err := third.Get(ctx, KindUser, key, fetch); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 31 {
		t.Errorf("%d upstream calls after invalidating user:1 and reading it and user:3 anew, want 31", calls.Load())
	}
	if err := a.shared.Purge(ctx, time.Now()); err != nil {
		t.Fatalf("purge on the cluster: %v", err)
	}
	fourth := redisMachine(t, c.Config())
	if _, _, err := fourth.Get(ctx, KindUser, "user:3", fetch); err != nil || calls.Load() != 32 {
		t.Errorf("read after a purge: %v, %d calls; want the upstream asked again (32)", err, calls.Load())
	}
}
