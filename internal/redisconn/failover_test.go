package redisconn_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// TestFollowsSentinelFailover: the client made for a Sentinel setup keeps
// working after kill -9 of the master, on the promoted replica, with no
// restart and no configuration change.
func TestFollowsSentinelFailover(t *testing.T) {
	s := redisha.StartSentinel(t)
	rdb, err := redisconn.New(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatalf("write before the failover: %v", err)
	}
	killed := s.KillMaster()
	var failed int
	for {
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := rdb.Set(cctx, "after", "1", 0).Err()
		cancel()
		if err == nil {
			break
		}
		failed++
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no write reached a master 30 s after the kill: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // a caller's retry pace, bounded above
	}
	t.Logf("writes again %.1f s after kill -9 of the master (%d failed attempts meanwhile)", time.Since(killed).Seconds(), failed)
	// The old master is dead, so the write landed on the promoted replica,
	// which also kept the key replicated before the kill. (One sentinel may
	// learn of the promotion after the client did.)
	s.WaitFailover(t)
	for _, key := range []string{"before", "after"} {
		if got, err := rdb.Get(ctx, key).Result(); err != nil || got != "1" {
			t.Errorf("%s on the new master: %q %v, want 1", key, got, err)
		}
	}
}

// TestClusterFollowsRedirections: keys written through the cluster client
// land on every master (the client routes by slot and follows MOVED).
func TestClusterFollowsRedirections(t *testing.T) {
	c := redisha.StartCluster(t, 3)
	cfg := c.Config()
	cfg.Cluster.Addrs = cfg.Cluster.Addrs[:1] // one seed: the others are learnt
	rdb, err := redisconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 60 {
		if err := rdb.Set(ctx, fmt.Sprintf("key-%d", i), i, 0).Err(); err != nil {
			t.Fatalf("set key-%d: %v", i, err)
		}
	}
	for i, n := range c.KeysPerNode(t) {
		if n == 0 {
			t.Errorf("node %d holds no key of 60", i)
		}
	}
}
