package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// storeOn is a Redis store with the local policy for two machines on a
// client of the Redis cfg names.
func storeOn(t *testing.T, cfg redisconn.Config) *RedisStore {
	t.Helper()
	rdb, err := redisconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	c := DefaultConfig()
	c.Store, c.Instances = StoreRedis, 2
	st, err := NewStore(context.Background(), c, nil, WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	rs := st.(*RedisStore)
	t.Cleanup(func() { rs.Close() })
	return rs
}

// TestRedisStoreAcrossSentinelFailover: while the master is killed and a
// replica promoted, no call fails and each machine limits to its share;
// then the store is back on Redis, whose count the replica kept.
func TestRedisStoreAcrossSentinelFailover(t *testing.T) {
	s := redisha.StartSentinel(t)
	st := storeOn(t, s.Config())
	ctx := context.Background()
	rate := limiter.Rate{Period: time.Hour, Limit: 10}
	for range 4 {
		if _, err := st.Get(ctx, "client", rate); err != nil {
			t.Fatal(err)
		}
	}
	if st.Degraded() {
		t.Fatal("degraded before the failover")
	}
	killed := s.KillMaster()
	var limits = map[int64]int{}
	var back time.Duration
	for back == 0 {
		if time.Since(killed) > 30*time.Second {
			t.Fatal("the store was not back on Redis 30 s after the kill")
		}
		lc, err := st.Peek(ctx, "other", rate)
		if err != nil {
			t.Fatalf("Peek during the failover: %v", err)
		}
		limits[lc.Limit]++
		if !st.Degraded() && time.Since(killed) > redisha.DownAfter {
			back = time.Since(killed)
		}
		time.Sleep(20 * time.Millisecond) // a steady load, not a synchronisation
	}
	lc, err := st.Get(ctx, "client", rate)
	t.Logf("limits answered during the failover: %v; exact again (on Redis) %.1f s after kill -9 of the master", limits, back.Seconds())
	if err != nil || lc.Remaining != 5 {
		t.Errorf("fifth call after the failover: remaining %d %v, want 5: the replica kept the count", lc.Remaining, err)
	}
	if limits[5] == 0 {
		t.Errorf("no answer with this machine's share (5 of 10) during the failover: %v", limits)
	}
}

// TestRedisStoreOnRedisCluster: the limit is exact across two machines on
// a three-master Redis Cluster, and clients spread over the masters.
func TestRedisStoreOnRedisCluster(t *testing.T) {
	c := redisha.StartCluster(t, 3)
	a, b := storeOn(t, c.Config()), storeOn(t, c.Config())
	ctx := context.Background()
	rate := limiter.Rate{Period: time.Hour, Limit: 10}
	admitted := 0
	for i := range 30 {
		st := a
		if i%2 == 1 {
			st = b
		}
		lc, err := st.Get(ctx, "client", rate)
		if err != nil {
			t.Fatal(err)
		}
		if !lc.Reached {
			admitted++
		}
	}
	if admitted != 10 || a.Degraded() || b.Degraded() {
		t.Errorf("30 calls over two machines admitted %d (degraded %v %v), want exactly 10 on Redis", admitted, a.Degraded(), b.Degraded())
	}
	for i := range 60 {
		if _, err := a.Get(ctx, fmt.Sprintf("client-%d", i), rate); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range c.KeysPerNode(t) {
		if n == 0 {
			t.Errorf("master %d holds no client's window", i)
		}
	}
}
