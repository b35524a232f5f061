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
	took := s.WaitFailover().Sub(killed)
	t.Logf("sentinel failover after kill -9 of the master: %.1f s", took.Seconds())
	if took < DownAfter {
		t.Errorf("failover in %v, before down-after-milliseconds %v: the kill was not seen", took, DownAfter)
	}
}

func TestClusterServesEverySlot(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := client(t, c.Nodes[0].Addr)
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
