package reuseport

import (
	"net"
	"testing"
)

// Steered to the first two sockets, a group of three leaves the third one's
// queue empty however many connections arrive; unsteered, it gets its share.
func TestSteerLeavesTheLastSocketAlone(t *testing.T) {
	lns, err := Open("127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range lns {
			l.File.Close()
		}
	}()
	if err := SteerTo(lns[0].File, 2); err != nil {
		t.Fatal(err)
	}
	dial := func(n int) {
		for range n {
			c, err := net.Dial("tcp", lns[0].Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
	}
	dial(60)
	depth := func(i int) uint32 {
		d, _, err := lns[i].Queue()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := depth(2); d != 0 {
		t.Fatalf("the steered-away socket queued %d connections", d)
	}
	if d := depth(0) + depth(1); d != 60 {
		t.Errorf("the other sockets queued %d connections, want 60", d)
	}
	if err := Unsteer(lns[0].File); err != nil {
		t.Fatal(err)
	}
	dial(60)
	if depth(2) == 0 {
		t.Error("unsteered, the third socket got none of 60 connections") // 1 in 3^60 by chance
	}
}
