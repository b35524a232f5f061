package cache

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkGetHit(b *testing.B) {
	c, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const keys = 1024
	names := make([]string, keys)
	body := bytes.Repeat([]byte("x"), 1024)
	for i := range names {
		names[i] = Key(KindEvent, fmt.Sprint(i))
		c.Set(KindEvent, names[i], body)
	}
	fetch := func(context.Context) ([]byte, error) { return body, nil }
	ctx := context.Background()
	var next atomic.Uint32
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			i++
			if _, st, err := c.Get(ctx, KindEvent, names[i%keys], fetch); err != nil || st != StatusHit {
				b.Fatalf("Get = %s, %v; want HIT", st, err)
			}
		}
	})
}

func BenchmarkGetMiss(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Event.Fresh = time.Nanosecond // every Get finds its entry outdated
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const keys = 1024
	names := make([]string, keys)
	for i := range names {
		names[i] = Key(KindEvent, fmt.Sprint(i))
	}
	body := bytes.Repeat([]byte("x"), 1024)
	fetch := func(context.Context) ([]byte, error) { return body, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, st, err := c.Get(ctx, KindEvent, names[i%keys], fetch); err != nil || st != StatusMiss {
			b.Fatalf("Get = %s, %v; want MISS", st, err)
		}
	}
}
