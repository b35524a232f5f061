package operator

import "testing"

func TestPeerPolicy(t *testing.T) {
	p := PeerPolicy{UID: 1000, Group: 50}
	cases := []struct {
		uid, gid int
		groups   []int
		want     bool
	}{
		{0, 0, nil, true},
		{1000, 1000, nil, true},
		{1001, 50, nil, true},
		{1001, 1001, []int{7, 50}, true},
		{1001, 1001, []int{7}, false},
	}
	for _, c := range cases {
		if got := p.Allows(c.uid, c.gid, c.groups); got != c.want {
			t.Errorf("Allows(uid %d, gid %d, %v) = %v, want %v", c.uid, c.gid, c.groups, got, c.want)
		}
	}
	if (PeerPolicy{UID: 1000, Group: -1}).Allows(1001, -1, []int{-1}) {
		t.Error("without a group, another uid is allowed")
	}
}
