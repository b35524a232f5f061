package idempotency

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// storeOn is a Redis store on a client of its own of the Redis cfg names.
func storeOn(tb testing.TB, cfg redisconn.Config, wait Wait) *Redis {
	tb.Helper()
	rdb, err := redisconn.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rdb.Close() })
	r, err := NewRedis(rdb, "amexd", DefaultConfig(), wait)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// TestClaimSurvivesFailover: a claim that waited for the replica is on
// the promoted replica after kill -9 of the master the moment after it
// was made, so a retry there finds it in flight instead of writing again.
func TestClaimSurvivesFailover(t *testing.T) {
	s := redisha.StartSentinel(t)
	wait := Wait{Replicas: 1, Timeout: time.Second}
	first := storeOn(t, s.Config(), wait)
	ctx := context.Background()
	fp := FingerprintOf([]byte("POST /events"), []byte(`{"name":"x"}`))
	claims := map[string]string{}
	for i := range 20 {
		key := fmt.Sprintf("key-%d", i)
		c, err := first.Begin(ctx, key, fp, "event-"+key)
		if err != nil || c.Outcome != Started {
			t.Fatalf("claim %s: %v %v", key, c.Outcome, err)
		}
		claims[key] = c.Ref
	}
	s.KillMaster()
	s.WaitFailover(t)
	retry := storeOn(t, s.Config(), wait)
	for key := range claims {
		var c Claim
		var err error
		for range 50 { // the new client may meet the failover's tail
			if c, err = retry.Begin(ctx, key, fp, "another-ref"); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // a client's retry pace, bounded by the count
		}
		if err != nil || c.Outcome != InFlight {
			t.Errorf("retry of %s after the failover: %v %v, want in flight (the claim survived)", key, c.Outcome, err)
		}
	}
}

// TestClaimNotReplicatedIsReleased: a claim the replicas do not acknowledge
// in time is refused and released, so that nothing is written under it.
func TestClaimNotReplicatedIsReleased(t *testing.T) {
	s := redisha.StartSentinel(t)
	ctx := context.Background()
	fp := FingerprintOf([]byte("body"))
	greedy := storeOn(t, s.Config(), Wait{Replicas: 2, Timeout: 50 * time.Millisecond})
	if _, err := greedy.Begin(ctx, "k", fp, "ref-1"); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("claim waiting for 2 replicas of 1: %v, want ErrNotReplicated", err)
	}
	plain := storeOn(t, s.Config(), Wait{})
	if c, err := plain.Begin(ctx, "k", fp, "ref-2"); err != nil || c.Outcome != Started || c.Ref != "ref-2" {
		t.Errorf("the key after a refused claim: %v %q %v, want started afresh", c.Outcome, c.Ref, err)
	}
}

// TestClaimLostWaitIsReleased: a claim whose WAIT answer never arrives
// (the connection's read timeout ends first) is released too, not left to
// answer every retry "in flight" until its lease ends.
func TestClaimLostWaitIsReleased(t *testing.T) {
	s := redisha.StartSentinel(t)
	ctx := context.Background()
	fp := FingerprintOf([]byte("body"))
	cfg := s.Config()
	cfg.ReadTimeout = 100 * time.Millisecond
	deaf := storeOn(t, cfg, Wait{Replicas: 2, Timeout: 2 * time.Second})
	if c, err := deaf.Begin(ctx, "k", fp, "ref-1"); err == nil {
		t.Fatalf("claim whose WAIT outlasts the read timeout: %v, want an error", c.Outcome)
	}
	plain := storeOn(t, s.Config(), Wait{})
	if c, err := plain.Begin(ctx, "k", fp, "ref-2"); err != nil || c.Outcome != Started || c.Ref != "ref-2" {
		t.Errorf("the key after a claim that lost its WAIT: %v %q %v, want started afresh", c.Outcome, c.Ref, err)
	}
}

// TestRedisStoreOnRedisCluster: claims, answers and replays work on a
// Redis Cluster, and a WAIT goes to the master that holds the key (this
// cluster has no replica, so it is refused rather than misrouted).
func TestRedisStoreOnRedisCluster(t *testing.T) {
	c := redisha.StartCluster(t, 3)
	ctx := context.Background()
	fp := FingerprintOf([]byte("body"))
	a, b := storeOn(t, c.Config(), Wait{}), storeOn(t, c.Config(), Wait{})
	for i := range 30 {
		key := fmt.Sprintf("k%d", i)
		cl, err := a.Begin(ctx, key, fp, "ref")
		if err != nil || cl.Outcome != Started {
			t.Fatalf("begin %s: %v %v", key, cl.Outcome, err)
		}
		if err := a.Complete(ctx, key, cl, Answer{Status: 201, Body: []byte("ok")}); err != nil {
			t.Fatal(err)
		}
		if r, err := b.Begin(ctx, key, fp, "other"); err != nil || r.Outcome != Replay || string(r.Answer.Body) != "ok" {
			t.Errorf("replay of %s on another machine: %v %q %v", key, r.Outcome, r.Answer.Body, err)
		}
	}
	for i, n := range c.KeysPerNode(t) {
		if n == 0 {
			t.Errorf("master %d holds no key", i)
		}
	}
	waiting := storeOn(t, c.Config(), Wait{Replicas: 1, Timeout: 20 * time.Millisecond})
	if _, err := waiting.Begin(ctx, "w", fp, "ref"); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("claim waiting for a replica on a cluster without any: %v, want ErrNotReplicated", err)
	}
}

// BenchmarkClaimWait prices WAIT: a claim (Begin, then Complete) on a
// master with one replica on loopback, without and with waiting for it.
func BenchmarkClaimWait(b *testing.B) {
	s := redisha.StartSentinel(b)
	for _, wait := range []Wait{{}, {Replicas: 1, Timeout: time.Second}} {
		b.Run(fmt.Sprintf("replicas=%d", wait.Replicas), func(b *testing.B) {
			r := storeOn(b, s.Config(), wait)
			ctx := context.Background()
			fp := FingerprintOf([]byte("body"))
			prefix := fmt.Sprintf("bench-%d-%d", wait.Replicas, time.Now().UnixNano())
			i := 0
			for b.Loop() {
				key := fmt.Sprintf("%s-%d", prefix, i)
				i++
				c, err := r.Begin(ctx, key, fp, "ref")
				if err != nil || c.Outcome != Started {
					b.Fatalf("begin: %v %v", c.Outcome, err)
				}
				if err := r.Complete(ctx, key, c, Answer{Status: 201, Body: []byte("ok")}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
