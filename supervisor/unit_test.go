package supervisor

import (
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
)

func TestNextBackoff(t *testing.T) {
	const lo, hi, healthy = 100 * time.Millisecond, 30 * time.Second, time.Minute
	cases := []struct {
		prev, lived, want time.Duration
	}{
		{0, 0, lo},
		{lo, time.Second, 200 * time.Millisecond},
		{20 * time.Second, time.Second, hi},
		{hi, time.Second, hi},
		{hi, healthy, lo},
	}
	for _, c := range cases {
		if got := nextBackoff(c.prev, c.lived, lo, hi, healthy); got != c.want {
			t.Errorf("nextBackoff(%s, lived %s) = %s, want %s", c.prev, c.lived, got, c.want)
		}
	}
}

func TestReloadable(t *testing.T) {
	cur := config.Default()
	cur.Workers = 2
	next := cur
	next.Fanout = 3
	if err := reloadable(cur, next); err != nil {
		t.Errorf("fanout change refused: %v", err)
	}
	next.Workers = 3
	if err := reloadable(cur, next); err != nil {
		t.Errorf("worker count change refused (a reload scales): %v", err)
	}
	next.Listen = ":4000"
	if err := reloadable(cur, next); err == nil {
		t.Error("listen change accepted")
	}
}
