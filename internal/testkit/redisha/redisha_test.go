package redisha

import (
	"context"
	"testing"
	"time"
)

func TestSentinelFailsOver(t *testing.T) {
	s := StartSentinel(t)
	if addr, err := s.MasterAddr(); err != nil || addr != s.Master.Addr {
		t.Fatalf("master before the kill: %q %v, want %s", addr, err, s.Master.Addr)
	}
	killed := s.KillMaster()
	took := s.WaitFailover(t).Sub(killed)
	t.Logf("sentinel failover after kill -9 of the master: %.1f s", took.Seconds())
	if took < DownAfter {
		t.Errorf("failover in %v, before down-after-milliseconds %v: the kill was not seen", took, DownAfter)
	}
	// Brought back, the old master replicates the new one: a write there
	// is acknowledged by one replica again.
	if err := s.Rejoin(); err != nil {
		t.Fatal(err)
	}
	rdb, err := client(s.Replica.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pipe := rdb.Pipeline()
	pipe.Set(ctx, "after-rejoin", "1", time.Minute)
	acked := pipe.Do(ctx, "wait", 1, 5000)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := acked.Int64(); n != 1 {
		t.Errorf("WAIT 1 on the new master after the old one rejoined: %d replicas acknowledged, want 1", n)
	}
}

func TestClusterServesEverySlot(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := client(c.Nodes[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	covered := 0
	for _, s := range slots {
		covered += s.End - s.Start + 1
	}
	if len(slots) != 3 || covered != 16384 {
		t.Errorf("%d slot ranges covering %d slots, want 3 covering 16384", len(slots), covered)
	}
}

// TestNodeOnATakenPort: a node whose port another server took between
// choosing and binding is not taken for ready, although PING there is
// answered.
func TestNodeOnATakenPort(t *testing.T) {
	binaries(t, "redis-server")
	bins, _ := Binaries("redis-server")
	dir := t.TempDir()
	first, err := start("127.0.0.1", dir, bins[0])
	if err != nil {
		t.Fatal(err)
	}
	defer first.Kill()
	late := &Node{Addr: first.Addr, bin: bins[0], dir: dir}
	if err := late.run(); err != nil {
		t.Fatal(err)
	}
	defer late.Kill()
	if err := late.waitPing(); err == nil {
		t.Errorf("a node that could not bind %s was taken for ready: the server there is another's", first.Addr)
	}
}
