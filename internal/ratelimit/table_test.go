package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/tests"
	"golang.org/x/sys/unix"
)

// fakeClock is a settable clock for window expiry tests.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newTestTable(t testing.TB, slots int) (*Table, *os.File) {
	t.Helper()
	tb, f, err := CreateTable(slots)
	if err != nil {
		t.Fatalf("CreateTable(%d): %v", slots, err)
	}
	t.Cleanup(func() {
		tb.Close()
		f.Close()
	})
	return tb, f
}

func TestTableULuleSuite(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		tb, _ := newTestTable(t, 1024)
		tests.TestStoreSequentialAccess(t, tb)
	})
	t.Run("concurrent", func(t *testing.T) {
		tb, _ := newTestTable(t, 1024)
		// The suite's window is 10 s; its 250,000 Gets can take longer than
		// that on a loaded machine with the race detector. The clock stands
		// still so that the count is about concurrency, not speed.
		frozen := time.Now()
		tb.now = func() time.Time { return frozen }
		tests.TestStoreConcurrentAccess(t, tb)
		got, err := tb.Peek(context.Background(), "foo", limiter.Rate{Limit: 1 << 20, Period: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if n := 1<<20 - got.Remaining; n != 500*500 {
			t.Errorf("count after 500×500 concurrent Gets = %d, want %d", n, 500*500)
		}
	})
}

func TestMemoryStoreULuleSuite(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Store = StoreMemory
	st, err := NewStore(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests.TestStoreSequentialAccess(t, st)
	tests.TestStoreConcurrentAccess(t, st)
}

func TestTableWindow(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 64)
	clk := newFakeClock()
	tb.now = clk.Now
	rate := limiter.Rate{Limit: 3, Period: time.Minute}
	start := clk.Now()

	type step struct {
		advance   time.Duration
		op        string
		remaining int64
		reached   bool
		resetAt   time.Duration // Reset, relative to start
	}
	steps := []step{
		{op: "peek", remaining: 3, resetAt: time.Minute},
		{op: "get", remaining: 2, resetAt: time.Minute},
		{advance: 10 * time.Second, op: "get", remaining: 1, resetAt: time.Minute},
		{op: "peek", remaining: 1, resetAt: time.Minute},
		{op: "get", remaining: 0, resetAt: time.Minute},
		{op: "get", remaining: 0, reached: true, resetAt: time.Minute},
		{advance: 50 * time.Second, op: "peek", remaining: 3, resetAt: 2 * time.Minute},
		{op: "get", remaining: 2, resetAt: 2 * time.Minute},
		{advance: 5 * time.Second, op: "reset", remaining: 3, resetAt: 65*time.Second + time.Minute},
		{op: "peek", remaining: 3, resetAt: 65*time.Second + time.Minute},
		{op: "get", remaining: 2, resetAt: 65*time.Second + time.Minute},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		var got limiter.Context
		var err error
		switch s.op {
		case "get":
			got, err = tb.Get(ctx, "client", rate)
		case "peek":
			got, err = tb.Peek(ctx, "client", rate)
		case "reset":
			got, err = tb.Reset(ctx, "client", rate)
		}
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, s.op, err)
		}
		want := limiter.Context{Limit: 3, Remaining: s.remaining, Reached: s.reached, Reset: start.Add(s.resetAt).Unix()}
		if got != want {
			t.Errorf("step %d (%s at +%v): got %+v, want %+v", i, s.op, clk.Now().Sub(start), got, want)
		}
	}
}

func TestTableIncrementCount(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 64)
	rate := limiter.Rate{Limit: 10, Period: time.Minute}
	for i, tc := range []struct {
		count     int64
		remaining int64
		reached   bool
	}{
		{count: 0, remaining: 10},
		{count: 4, remaining: 6},
		{count: 6, remaining: 0},
		{count: 1, remaining: 0, reached: true},
	} {
		got, err := tb.Increment(ctx, "k", tc.count, rate)
		if err != nil {
			t.Fatal(err)
		}
		if got.Remaining != tc.remaining || got.Reached != tc.reached {
			t.Errorf("Increment #%d by %d: got remaining %d reached %v, want %d %v",
				i, tc.count, got.Remaining, got.Reached, tc.remaining, tc.reached)
		}
	}
}

func TestTableRejectsUnrepresentableArgs(t *testing.T) {
	tb, _ := newTestTable(t, 8)
	minute := time.Minute
	for _, tc := range []struct {
		name  string
		count int64
		rate  limiter.Rate
		want  string
	}{
		{"negative count", -1, limiter.Rate{Limit: 1, Period: minute}, "negative count"},
		{"zero period", 1, limiter.Rate{Limit: 1}, "period 0s"},
		{"huge period", 1, limiter.Rate{Limit: 1, Period: 31 * 24 * time.Hour}, "out of range"},
		{"huge limit", 1, limiter.Rate{Limit: MaxTableLimit + 1, Period: minute}, "above the shared table's maximum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tb.Increment(context.Background(), "k", tc.count, tc.rate)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Increment error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestTableCountSaturatesAboveLimit(t *testing.T) {
	tb, _ := newTestTable(t, 8)
	rate := limiter.Rate{Limit: MaxTableLimit, Period: time.Minute}
	ctx := context.Background()
	got, err := tb.Increment(ctx, "k", MaxTableLimit, rate)
	if err != nil || got.Reached || got.Remaining != 0 {
		t.Fatalf("Increment to the limit = %+v, %v; want not reached, 0 remaining", got, err)
	}
	for range 3 {
		if got, err = tb.Increment(ctx, "k", 1<<30, rate); err != nil || !got.Reached {
			t.Fatalf("Increment past the limit = %+v, %v; want reached", got, err)
		}
	}
}

func TestTableFull(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 4) // probe range = whole table
	clk := newFakeClock()
	tb.now = clk.Now
	rate := limiter.Rate{Limit: 1, Period: time.Minute}
	for i := range 4 {
		if _, err := tb.Get(ctx, fmt.Sprint("key", i), rate); err != nil {
			t.Fatal(err)
		}
	}
	if st := tb.Stats(); st != (TableStats{Slots: 4, Used: 4}) {
		t.Fatalf("Stats after filling = %+v", st)
	}

	// A full table still limits: the newcomer is counted in the overflow
	// sketch, alone there, so exactly at its rate.
	for i := range 3 {
		got, err := tb.Get(ctx, "newcomer", rate)
		if err != nil {
			t.Fatal(err)
		}
		if want := i > 0; got.Reached != want || got.Remaining != 0 {
			t.Errorf("Get %d on a full table = %+v, want reached=%v and 0 remaining", i, got, want)
		}
		if n := tb.Full(); n != uint64(i+1) {
			t.Errorf("Full() = %d after %d requests without a slot", n, i+1)
		}
	}
	if got, err := tb.Peek(ctx, "newcomer", rate); err != nil || !got.Reached {
		t.Errorf("Peek of the newcomer on a full table = %+v, %v; want reached", got, err)
	}

	// Known keys keep counting while the table is full.
	if got, _ := tb.Get(ctx, "key0", rate); !got.Reached {
		t.Errorf("second Get of key0 (limit 1) = %+v, want reached", got)
	}

	// Expired windows free their slots for new keys.
	clk.Advance(time.Minute)
	got, err := tb.Get(ctx, "newcomer", rate)
	if err != nil || got.Reached || got.Remaining != 0 {
		t.Errorf("Get after windows expired = %+v, %v; want counted (0 remaining)", got, err)
	}
	if got, _ = tb.Get(ctx, "newcomer", rate); !got.Reached {
		t.Errorf("second Get of newcomer = %+v, want reached", got)
	}
	if st := tb.Stats(); st.Used != 1 || st.Full != 3 {
		t.Errorf("Stats after reclaim = %+v, want 1 used, 3 full", st)
	}
}

// A process killed in the middle of a reclaim leaves a reservation; the slot
// must come back once the reservation is stale.
func TestTableStaleReservation(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 1)
	clk := newFakeClock()
	tb.now = clk.Now
	rate := limiter.Rate{Limit: 5, Period: time.Second}
	if _, err := tb.Get(ctx, "dead", rate); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	atomic.StoreUint64(&tb.slots[0].state, pack(tb.nowMs(), reservedCount))

	if _, err := tb.Get(ctx, "alive", rate); err != nil || tb.Full() != 1 {
		t.Fatalf("Get with the only slot freshly reserved: err %v, Full %d; want no error, Full 1", err, tb.Full())
	}
	clk.Advance(staleReservationMs * time.Millisecond)
	for want := int64(4); want >= 3; want-- {
		got, err := tb.Get(ctx, "alive", rate)
		if err != nil || got.Remaining != want {
			t.Fatalf("Get after the reservation went stale = %+v, %v; want remaining %d", got, err, want)
		}
	}
	if tb.Full() != 1 {
		t.Errorf("Full() = %d, want 1", tb.Full())
	}
}

// Many goroutines on many keys, with slots reclaimed as windows expire under
// them: every window must count exactly.
func TestTableConcurrentKeys(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 256)
	clk := newFakeClock()
	tb.now = clk.Now
	rate := limiter.Rate{Limit: 1 << 20, Period: time.Second}
	const (
		goroutines = 8
		keys       = 64
		hits       = 50
		rounds     = 4
	)
	for round := range rounds {
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range keys * hits {
					key := fmt.Sprintf("r%d-k%d", round, (i+g)%keys)
					if _, err := tb.Get(ctx, key, rate); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		for k := range keys {
			got, err := tb.Peek(ctx, fmt.Sprintf("r%d-k%d", round, k), rate)
			if err != nil {
				t.Fatal(err)
			}
			if n := rate.Limit - got.Remaining; n != goroutines*hits {
				t.Errorf("round %d key %d counted %d, want %d", round, k, n, goroutines*hits)
			}
		}
		if st := tb.Stats(); st.Used != keys || st.Full != 0 {
			t.Errorf("round %d: Stats = %+v, want %d used, none full", round, st, keys)
		}
		clk.Advance(rate.Period)
	}
}

func TestTableSharedBetweenMappings(t *testing.T) {
	ctx := context.Background()
	first, f := newTestTable(t, 128)
	rate := limiter.Rate{Limit: 10, Period: time.Minute}
	for range 3 {
		first.Get(ctx, "client", rate)
	}
	second, err := OpenTable(f)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := second.Get(ctx, "client", rate)
	if err != nil || got.Remaining != 6 {
		t.Errorf("Get through a second mapping = %+v, %v; want remaining 6", got, err)
	}
}

func TestCreateTableFile(t *testing.T) {
	_, f := newTestTable(t, 100)
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(headerBytes + 100*SlotBytes + overflowRows*minOverflowWidth*cellBytes); st.Size() != want || TableBytes(100) != want {
		t.Errorf("table file is %d bytes, want %d", st.Size(), want)
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("table file flags %#x (%v), want FD_CLOEXEC", flags, err)
	}
	if err := f.Truncate(0); err == nil {
		t.Error("shrinking the sealed table file succeeded")
	}

	for _, n := range []int{0, -1, MaxTableSlots + 1} {
		if _, _, err := CreateTable(n); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("CreateTable(%d) error = %v, want out of range", n, err)
		}
	}
}

func TestOpenTableRejectsBadFiles(t *testing.T) {
	good, f := newTestTable(t, 16)
	image := make([]byte, len(good.mem))
	if _, err := f.ReadAt(image, 0); err != nil {
		t.Fatal(err)
	}
	patched := func(off int, v byte) []byte {
		b := append([]byte(nil), image...)
		b[off] = v
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too small"},
		{"header only", image[:headerBytes], "too small"},
		{"zeros", make([]byte, len(image)), "bad magic"},
		{"other version", patched(8, 9), "table version 9"},
		{"truncated", image[:len(image)-SlotBytes], "header says 16 slots and overflow width 1024 but the file is 33136 bytes"},
		{"grown", append(append([]byte(nil), image...), make([]byte, SlotBytes)...), "header says 16 slots"},
		{"zero probe", patched(24, 0), "probe length 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/table"
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			bad, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			tb, err := OpenTable(bad)
			if err == nil {
				tb.Close()
				t.Fatalf("OpenTable succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenTable error = %q, want it to contain %q", err, tc.want)
			}
		})
	}

	t.Run("copy of a good table", func(t *testing.T) {
		path := t.TempDir() + "/table"
		if err := os.WriteFile(path, image, 0o600); err != nil {
			t.Fatal(err)
		}
		cp, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer cp.Close()
		tb, err := OpenTable(cp)
		if err != nil {
			t.Fatalf("OpenTable of an intact copy: %v", err)
		}
		tb.Close()
	})
}

// The table-full case of a hostile client: with every slot held by a live
// window and more clients than slots, a brand-new client is still limited at
// its rate, and no client is ever allowed past it.
func TestTableOverflowStillLimits(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 16)
	rate := limiter.Rate{Limit: 3, Period: time.Minute}
	for i := range 51 {
		if _, err := tb.Get(ctx, fmt.Sprintf("global|127.0.1.%d", i+1), rate); err != nil {
			t.Fatal(err)
		}
	}
	if st := tb.Stats(); st.Used != 16 || st.Full != 51-16 {
		t.Fatalf("Stats after 51 clients = %+v, want 16 used and 35 overflowed", st)
	}
	var got []bool
	for range 6 {
		lc, err := tb.Get(ctx, "global|127.0.2.1", rate)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, lc.Reached)
	}
	if want := []bool{false, false, false, true, true, true}; !slices.Equal(got, want) {
		t.Errorf("a new client's 6 requests on a full table: reached %v, want %v", got, want)
	}

	// Many more clients than the sketch has cells: collisions make the
	// overflow stricter, never looser.
	for i := range 5000 {
		allowed := 0
		for range 5 {
			lc, err := tb.Get(ctx, fmt.Sprint("flood-", i), rate)
			if err != nil {
				t.Fatal(err)
			}
			if !lc.Reached {
				allowed++
			}
		}
		if allowed > int(rate.Limit) {
			t.Fatalf("client %d got %d of 5 requests through on an overflowing table, limit %d", i, allowed, rate.Limit)
		}
	}
}

// The overflow sketch's windows expire like the slots'.
func TestTableOverflowWindowExpires(t *testing.T) {
	ctx := context.Background()
	tb, _ := newTestTable(t, 1)
	clk := newFakeClock()
	tb.now = clk.Now
	rate := limiter.Rate{Limit: 2, Period: time.Second}
	tb.Get(ctx, "holder", rate)
	for i := range 3 {
		if lc, _ := tb.Get(ctx, "other", rate); lc.Reached != (i == 2) {
			t.Fatalf("overflowed Get %d = %+v", i, lc)
		}
	}
	clk.Advance(rate.Period)
	tb.Get(ctx, "holder", rate) // a new window in the only slot
	lc, _ := tb.Get(ctx, "other", rate)
	if lc.Reached || lc.Remaining != 1 || tb.Full() != 4 {
		t.Errorf("a period later: %+v, Full %d; want a fresh overflow window (1 remaining) and Full 4", lc, tb.Full())
	}
}

// Every process sharing a table logs its pressure, but the line appears at
// most once per interval for all of them together, with what overflowed since
// the last one.
func TestTablePressureLoggedOncePerInterval(t *testing.T) {
	ctx := context.Background()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	first, f, err := CreateTable(1, WithLogger(log), WithLogInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer first.Close()
	second, err := OpenTable(f, WithLogger(log), WithLogInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	clk := newFakeClock()
	first.now, second.now = clk.Now, clk.Now
	rate := limiter.Rate{Limit: 100, Period: time.Hour}

	const line = "ratelimit: shared table full"
	first.Get(ctx, "holder", rate)
	if n := logs.count(line); n != 0 {
		t.Fatalf("%d pressure lines before the table was full", n)
	}
	for i := range 10 {
		tb := []*Table{first, second}[i%2]
		tb.Get(ctx, fmt.Sprint("client-", i), rate)
	}
	if n := logs.count(line); n != 1 {
		t.Errorf("10 overflows from two mappings within the interval logged %d lines, want 1", n)
	}
	clk.Advance(time.Minute)
	second.Get(ctx, "late", rate)
	if n := logs.count(line); n != 2 {
		t.Errorf("an overflow after the interval: %d lines in all, want 2", n)
	}
	if n := logs.count("overflowed=11 since_last_line=10"); n != 1 {
		t.Errorf("second line should count 11 overflows, 10 since the first; log:\n%s", logs.buf.String())
	}
}
