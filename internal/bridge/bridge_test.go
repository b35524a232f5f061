package bridge

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// machine is one supervisor's bridge on a client of its own; it counts the
// invalidations it applies and its resyncs.
type machine struct {
	b                *Bridge
	applied, resyncs atomic.Int64
}

func startMachine(t *testing.T, cfg redisconn.Config) *machine {
	t.Helper()
	rdb, err := redisconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{}
	b, err := Start(rdb, slog.New(slog.DiscardHandler),
		func(context.Context, []string) { m.applied.Add(1) },
		func(string, string) {},
		func() { m.resyncs.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	m.b = b
	t.Cleanup(func() { b.Close(); rdb.Close() })
	return m
}

// flows reports whether an invalidation from a is confirmed by b now.
func flows(a, b *machine) bool {
	before := b.applied.Load()
	ctx, cancel := context.WithTimeout(context.Background(), bridgeTimeout)
	defer cancel()
	return a.b.Invalidate(ctx, []string{"user:1"}) == nil && b.applied.Load() > before
}

// TestBridgeResubscribesAfterFailover: after kill -9 of the master the
// bridges subscribe again on the promoted replica, each resyncs once for
// what it may have missed, and invalidations flow again.
func TestBridgeResubscribesAfterFailover(t *testing.T) {
	s := redisha.StartSentinel(t)
	a, b := startMachine(t, s.Config()), startMachine(t, s.Config())
	deadline := time.Now().Add(30 * time.Second)
	for !flows(a, b) {
		if time.Now().After(deadline) {
			t.Fatal("no invalidation flowed before the failover")
		}
		time.Sleep(20 * time.Millisecond) // the subscriptions are being made
	}
	killed := s.KillMaster()
	for a.resyncs.Load() == 0 || b.resyncs.Load() == 0 || !flows(a, b) {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("30 s after the kill: resyncs %d and %d, subscriptions %d and %d; invalidations not flowing",
				a.resyncs.Load(), b.resyncs.Load(), a.b.Subscribed(), b.b.Subscribed())
		}
		time.Sleep(20 * time.Millisecond) // polling for the failover's end, bounded above
	}
	t.Logf("invalidations flow again %.1f s after kill -9 of the master (resyncs %d and %d)",
		time.Since(killed).Seconds(), a.resyncs.Load(), b.resyncs.Load())
}

// TestBridgeOnRedisCluster: invalidations flow between machines whose
// bridges reach different masters of a Redis Cluster, and each write waits
// for the other machine, whichever node its publish reaches.
func TestBridgeOnRedisCluster(t *testing.T) {
	c := redisha.StartCluster(t, 3)
	cfg := c.Config()
	other := cfg
	other.Cluster.Addrs = []string{cfg.Cluster.Addrs[2], cfg.Cluster.Addrs[1]}
	a, b := startMachine(t, cfg), startMachine(t, other)
	deadline := time.Now().Add(30 * time.Second)
	for !flows(a, b) || !flows(b, a) {
		if time.Now().After(deadline) {
			t.Fatal("invalidations did not flow both ways on the cluster")
		}
		time.Sleep(20 * time.Millisecond) // the subscriptions are being made
	}
	for i := range 30 {
		if !flows(a, b) || !flows(b, a) {
			t.Fatalf("invalidation %d returned before the other machine had applied it", i)
		}
	}
}
