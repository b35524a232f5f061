package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/testkit/redistest"
)

// clock is a settable time for the stores' now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.TTL, cfg.Lease, cfg.MaxKeys, cfg.MaxBytes = time.Hour, 10*time.Second, 64, minTableBytes
	return cfg
}

// newTables returns two tables on one file, as two workers map it.
func newTables(t *testing.T, cfg Config, clk *clock) (*Table, *Table) {
	t.Helper()
	a, f, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenTable(f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.now, b.now = clk.now, clk.now
	t.Cleanup(func() { a.Close(); b.Close(); f.Close() })
	return a, b
}

// newRedisPair returns two Redis stores on one server, as two machines.
func newRedisPair(t *testing.T, cfg Config, clk *clock) (*Redis, *Redis) {
	t.Helper()
	rds := redistest.Start(t)
	prefix := fmt.Sprintf("amexd-test-%d-%s", time.Now().UnixNano(), strings.ReplaceAll(t.Name(), "/", "-"))
	var out [2]*Redis
	for i := range out {
		rdb, err := redisconn.New(redisconn.Config{URL: rds.URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		r, err := NewRedis(rdb, prefix, cfg, Wait{})
		if err != nil {
			t.Fatal(err)
		}
		r.now = clk.now
		out[i] = r
	}
	return out[0], out[1]
}

type pair func(t *testing.T, cfg Config, clk *clock) (Store, Store)

func backends() map[string]pair {
	return map[string]pair{
		"table": func(t *testing.T, cfg Config, clk *clock) (Store, Store) { return newTables(t, cfg, clk) },
		"redis": func(t *testing.T, cfg Config, clk *clock) (Store, Store) { return newRedisPair(t, cfg, clk) },
	}
}

// TestSemantics walks one key through its life on two stores sharing
// state (two workers, or two machines): each step's outcome is what the
// other side must see.
func TestSemantics(t *testing.T) {
	for name, newPair := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clk := &clock{t: time.Unix(1_800_000_000, 0)}
			cfg := testConfig()
			a, b := newPair(t, cfg, clk)
			fp, other := FingerprintOf([]byte("POST"), []byte(`{"name":"x"}`)), FingerprintOf([]byte("POST"), []byte(`{"name":"y"}`))

			first, err := a.Begin(ctx, "k", fp, "event-1")
			if err != nil || first.Outcome != Started || first.Ref != "event-1" {
				t.Fatalf("first Begin = %+v, %v; want started with event-1", first, err)
			}
			if c, _ := b.Begin(ctx, "k", fp, "event-2"); c.Outcome != InFlight {
				t.Errorf("retry while in flight: %v, want in flight", c.Outcome)
			}
			if c, _ := b.Begin(ctx, "k", other, "event-2"); c.Outcome != Mismatch {
				t.Errorf("other body while in flight: %v, want mismatch", c.Outcome)
			}
			// The first attempt fails upstream: a retry runs again under
			// the same reference.
			if err := a.Abandon(ctx, "k", first, true); err != nil {
				t.Fatal(err)
			}
			second, err := b.Begin(ctx, "k", fp, "event-3")
			if err != nil || second.Outcome != Started || second.Ref != "event-1" {
				t.Fatalf("retry after a failure = %+v, %v; want started with event-1", second, err)
			}
			if err := a.Complete(ctx, "k", first, Answer{Status: 201, Body: []byte("stale owner")}); !errors.Is(err, ErrNotOwner) {
				t.Errorf("Complete by the abandoned claim: %v, want ErrNotOwner", err)
			}
			if err := b.Complete(ctx, "k", second, Answer{Status: 201, Body: []byte(`{"id":"event-1"}`)}); err != nil {
				t.Fatal(err)
			}
			for _, s := range []Store{a, b} {
				c, err := s.Begin(ctx, "k", fp, "event-4")
				if err != nil || c.Outcome != Replay || c.Answer.Status != 201 || string(c.Answer.Body) != `{"id":"event-1"}` || c.Ref != "event-1" {
					t.Errorf("retry after the answer = %+v, %v; want the first answer", c, err)
				}
			}
			if c, _ := a.Begin(ctx, "k", other, "event-4"); c.Outcome != Mismatch {
				t.Errorf("other body after the answer: %v, want mismatch", c.Outcome)
			}

			// A key whose request was refused before any write is forgotten.
			refused, _ := a.Begin(ctx, "bad", fp, "event-5")
			if err := a.Abandon(ctx, "bad", refused, false); err != nil {
				t.Fatal(err)
			}
			if c, _ := b.Begin(ctx, "bad", other, "event-6"); c.Outcome != Started || c.Ref != "event-6" {
				t.Errorf("key reused after a refusal: %+v, want started afresh", c)
			}

			// A worker that dies in flight holds its key for the lease only.
			dead, _ := a.Begin(ctx, "dead", fp, "event-7")
			clk.add(cfg.Lease + time.Second)
			if c, _ := b.Begin(ctx, "dead", fp, "event-8"); c.Outcome != Started || c.Ref != "event-7" {
				t.Errorf("retry past the lease: %+v, want started with event-7", c)
			}
			if err := a.Complete(ctx, "dead", dead, Answer{Status: 201}); !errors.Is(err, ErrNotOwner) {
				t.Errorf("Complete past the lease after a takeover: %v, want ErrNotOwner", err)
			}

			// Past the TTL the key is new again (Redis expires it itself).
			if r, ok := a.(*Redis); ok {
				if ttl := r.rdb.PTTL(ctx, r.redisKey("k")).Val(); ttl <= cfg.TTL-time.Minute || ttl > cfg.TTL {
					t.Errorf("Redis keeps the key for %v, want about %v", ttl, cfg.TTL)
				}
				return
			}
			clk.add(cfg.TTL)
			if c, _ := b.Begin(ctx, "k", other, "event-9"); c.Outcome != Started || c.Ref != "event-9" {
				t.Errorf("after the TTL: %+v, want started afresh", c)
			}
		})
	}
}

// TestOneWinner: many requests with one key, on two stores at once, get
// exactly one Started; the others see it in flight or replay its answer.
func TestOneWinner(t *testing.T) {
	for name, newPair := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clk := &clock{t: time.Now()}
			a, b := newPair(t, testConfig(), clk)
			fp := FingerprintOf([]byte("body"))
			var mu sync.Mutex
			counts := map[Outcome]int{}
			var wg sync.WaitGroup
			for i := range 40 {
				s := a
				if i%2 == 1 {
					s = b
				}
				wg.Go(func() {
					c, err := s.Begin(ctx, "race", fp, fmt.Sprintf("event-%d", i+1))
					if err != nil {
						t.Error(err)
						return
					}
					if c.Outcome == Started {
						if err := s.Complete(ctx, "race", c, Answer{Status: 201, Body: []byte("answer")}); err != nil {
							t.Error(err)
						}
					}
					mu.Lock()
					counts[c.Outcome]++
					mu.Unlock()
				})
			}
			wg.Wait()
			if counts[Started] != 1 || counts[InFlight]+counts[Replay] != 39 {
				t.Errorf("outcomes %v, want one started and 39 in flight or replayed", counts)
			}
		})
	}
}

// TestTableBounds: a full bucket drops the entry that expires first (and
// counts it), and an answer the ring overwrote makes its retry run again
// under the same reference rather than replay something else.
func TestTableBounds(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	cfg := testConfig()
	cfg.MaxKeys = bucketSize // one bucket
	a, _ := newTables(t, cfg, clk)
	fp := FingerprintOf([]byte("x"))
	for i := range bucketSize {
		c, err := a.Begin(ctx, fmt.Sprint("key-", i), fp, "event-1")
		if err != nil {
			t.Fatal(err)
		}
		clk.add(time.Second)
		if err := a.Complete(ctx, fmt.Sprint("key-", i), c, Answer{Status: 201, Body: []byte(strings.Repeat("b", 1000))}); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := a.Stats(ctx)
	if st.Keys != bucketSize {
		t.Fatalf("stats %+v, want a full bucket", st)
	}
	// Every entry is done; a new key takes the one that expires first.
	if c, err := a.Begin(ctx, "newcomer", fp, "event-2"); err != nil || c.Outcome != Started {
		t.Fatalf("Begin in a full bucket: %+v %v", c, err)
	}
	if st, _ := a.Stats(ctx); st.Evicted != 1 || st.Keys != bucketSize {
		t.Errorf("stats %+v: want one eviction and a full bucket", st)
	}
	if c, _ := a.Begin(ctx, "key-0", fp, "event-3"); c.Outcome != Started || c.Ref != "event-3" {
		t.Errorf("the oldest key after its eviction: %+v, want started afresh", c)
	}
	if c, _ := a.Begin(ctx, "key-7", fp, "event-3"); c.Outcome != Replay {
		t.Errorf("the newest key: %+v, want its answer replayed", c)
	}
	// With every entry in flight there is no room at all.
	c, f := bucketFullOfFlights(t, cfg, clk)
	if _, err := c.Begin(ctx, "one more", fp, "event-4"); !errors.Is(err, ErrFull) {
		t.Errorf("Begin with every entry in flight: %v, want ErrFull", err)
	}
	_ = f

	// Fill the ring past its size: the first answers are overwritten.
	cfg.MaxKeys = 64
	b, _ := newTables(t, cfg, clk)
	big := []byte(strings.Repeat("r", int(cfg.MaxBytes/8)))
	first, _ := b.Begin(ctx, "first", fp, "event-10")
	if err := b.Complete(ctx, "first", first, Answer{Status: 201, Body: big}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		c, _ := b.Begin(ctx, fmt.Sprint("filler-", i), FingerprintOf([]byte(fmt.Sprint(i))), "event-11")
		if c.Outcome != Started {
			continue
		}
		if err := b.Complete(ctx, fmt.Sprint("filler-", i), c, Answer{Status: 201, Body: big}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := b.Begin(ctx, "first", fp, "event-12"); c.Outcome != Started || c.Ref != "event-10" {
		t.Errorf("retry of an overwritten answer: %+v, want started with event-10", c)
	}
	// An answer over a quarter of the ring is not kept, the reference is.
	huge, _ := b.Begin(ctx, "huge", fp, "event-20")
	if err := b.Complete(ctx, "huge", huge, Answer{Status: 201, Body: make([]byte, cfg.MaxBytes/2)}); err != nil {
		t.Fatal(err)
	}
	if c, _ := b.Begin(ctx, "huge", fp, "event-21"); c.Outcome != Started || c.Ref != "event-20" {
		t.Errorf("retry of an answer too large to keep: %+v, want started with event-20", c)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := Config{TTL: time.Millisecond, Lease: 0, MaxKeys: 1, MaxBytes: 1}
	err := bad.Validate()
	for _, key := range []string{"idempotency.ttl", "idempotency.lease", "idempotency.max_keys", "idempotency.max_bytes"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate(%+v) = %v, want it to name %s", bad, err, key)
		}
	}
}

func bucketFullOfFlights(t *testing.T, cfg Config, clk *clock) (*Table, *Table) {
	t.Helper()
	a, b := newTables(t, cfg, clk)
	for i := range bucketSize {
		if c, err := a.Begin(context.Background(), fmt.Sprint("flight-", i), FingerprintOf(nil), "event-1"); err != nil || c.Outcome != Started {
			t.Fatalf("Begin %d: %+v %v", i, c, err)
		}
	}
	return a, b
}
