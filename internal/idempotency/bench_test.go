package idempotency

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkTableWrite is one keyed write's cost in the shared table: a
// Begin on a new key and the Complete of its answer (300 bytes, about an
// event's answer), from parallel goroutines on two tables of one file.
func BenchmarkTableWrite(b *testing.B) {
	a, f, err := NewTable(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	defer a.Close()
	other, err := OpenTable(f, DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer other.Close()
	body := make([]byte, 300)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		t := a
		if n.Add(1)%2 == 0 {
			t = other
		}
		ctx := context.Background()
		for pb.Next() {
			key := strconv.FormatInt(n.Add(1), 10)
			c, err := t.Begin(ctx, key, FingerprintOf([]byte(key)), "event-1")
			if err != nil {
				b.Fatal(err)
			}
			if c.Outcome == Started {
				if err := t.Complete(ctx, key, c, Answer{Status: 201, Body: body}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
