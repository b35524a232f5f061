package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"

	"github.com/amexd/amexd/internal/testkit/redistest"
)

// BenchmarkIncrement measures one Increment per operation from parallel
// goroutines, each cycling over its own clients among 4096 in all.
func BenchmarkIncrement(b *testing.B) {
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	rate := limiter.Rate{Limit: 1 << 20, Period: time.Minute}
	run := func(b *testing.B, st limiter.Store) {
		var next atomic.Int64
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(997))
			for pb.Next() {
				if _, err := st.Increment(ctx, keys[i%len(keys)], 1, rate); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	}

	b.Run("shared", func(b *testing.B) {
		tb, _ := newTestTable(b, 65536)
		run(b, tb)
	})
	b.Run("memory", func(b *testing.B) {
		cfg := DefaultConfig()
		cfg.Store = StoreMemory
		st, err := NewStore(context.Background(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, st)
	})
	b.Run("redis", func(b *testing.B) {
		st := newTestRedisStore(b, redistest.Start(b).URL, OnRedisErrorDeny, time.Second)
		run(b, st)
		if n := st.RedisFailures(); n != 0 {
			b.Errorf("%d Redis failures during the benchmark", n)
		}
	})
}
