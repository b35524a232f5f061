package cache

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// exportAll exports c with lim in batches of batch and returns the batches.
func exportAll(t *testing.T, c *Cache, lim ExportLimits, batch int) [][]Warm {
	t.Helper()
	var out [][]Warm
	_, _, err := c.Export(lim, ExportLimits{Entries: batch}, func(ws []Warm) error {
		out = append(out, slices.Clone(ws))
		return nil
	})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	return out
}

func keysOf(batches [][]Warm) []string {
	var keys []string
	for _, b := range batches {
		for _, w := range b {
			keys = append(keys, w.Key)
		}
	}
	return keys
}

var plenty = ExportLimits{Entries: 1000, Bytes: 1 << 20}

func TestWarmRoundTripKeepsRemainingWindows(t *testing.T) {
	src, srcClock := newCache(t, nil)
	src.Set(KindEvent, "event:event-1", []byte(`{"id":"event-1"}`))
	src.Set(KindUser, "user:1", []byte(`{"id":1}`))
	srcClock.Advance(10 * time.Second) // user: 20s fresh left; event: 9m50s

	dst, dstClock := newCache(t, nil)
	im := dst.BeginImport()
	var st ImportStats
	for _, b := range exportAll(t, src, plenty, 10) {
		im.Add(b, &st)
	}
	if st != (ImportStats{Stored: 2}) {
		t.Fatalf("import stats %+v, want 2 stored", st)
	}
	e, status, ok := dst.Peek("user:1")
	if !ok || status != StatusHit || string(e.Body) != `{"id":1}` {
		t.Fatalf("imported user: %q %s %v", e.Body, status, ok)
	}
	want, _, _ := src.Peek("user:1")
	if e.ETag != want.ETag {
		t.Errorf("ETag %s, want the source's %s", e.ETag, want.ETag)
	}
	if got := dstClock.Now().Sub(e.Stored); got != 10*time.Second {
		t.Errorf("imported entry is %s old, want 10s", got)
	}
	if _, status, _ := dst.Peek("event:event-1"); status != StatusHit {
		t.Errorf("event: %s, want HIT", status)
	}
	dstClock.Advance(20*time.Second - time.Nanosecond)
	if _, status, _ := dst.Peek("user:1"); status != StatusHit {
		t.Errorf("user just before its remaining 20s: %s, want HIT", status)
	}
	dstClock.Advance(time.Nanosecond)
	if _, status, _ := dst.Peek("user:1"); status != StatusStale {
		t.Errorf("user after its remaining 20s: %s, want STALE", status)
	}
	dstClock.Advance(10 * time.Minute)
	if _, _, ok := dst.Peek("user:1"); ok {
		t.Error("user still servable after its stale window")
	}
}

func TestExportOrderAndLimits(t *testing.T) {
	c, clock := newCache(t, nil)
	c.Set(KindUser, "user:old", []byte("1234567890"))
	clock.Advance(time.Second)
	c.Set(KindUser, "user:new", []byte("12345"))
	c.Set(KindEvents, "events", []byte("123"))
	clock.Advance(15 * time.Second) // events (10s fresh) is now only stale
	c.Set(KindUser, "user:newest", []byte("1"))
	clock.Advance(time.Second)
	c.Set(KindEvent, "event:event-9", []byte("12"))
	for _, tc := range []struct {
		name string
		lim  ExportLimits
		want []string
	}{
		{"fresh first, newest first", plenty, []string{"event:event-9", "user:newest", "user:new", "user:old", "events"}},
		{"entry limit", ExportLimits{Entries: 2, Bytes: 1 << 20}, []string{"event:event-9", "user:newest"}},
		{"byte limit skips what does not fit", ExportLimits{Entries: 10, Bytes: 11}, []string{"event:event-9", "user:newest", "user:new", "events"}},
		{"nothing", ExportLimits{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keysOf(exportAll(t, c, tc.lim, 2)); !slices.Equal(got, tc.want) {
				t.Errorf("exported %v, want %v", got, tc.want)
			}
		})
	}
	clock.Advance(30 * time.Minute) // past every stale window but the event's
	if got := keysOf(exportAll(t, c, plenty, 2)); !slices.Equal(got, []string{"event:event-9"}) {
		t.Errorf("half an hour later exported %v, want only the event", got)
	}
}

func TestExportBatchesAndErrors(t *testing.T) {
	c, _ := newCache(t, nil)
	for i := range 5 {
		c.Set(KindUser, fmt.Sprintf("user:%d", i), []byte("x"))
	}
	batches := exportAll(t, c, plenty, 2)
	if got := []int{len(batches[0]), len(batches[1]), len(batches[2])}; len(batches) != 3 || !slices.Equal(got, []int{2, 2, 1}) {
		t.Errorf("batches %v, want sizes 2, 2, 1", batches)
	}
	var sizes []int
	n, bytes, err := c.Export(plenty, ExportLimits{Entries: 10, Bytes: 2}, func(ws []Warm) error {
		sizes = append(sizes, len(ws))
		return nil
	})
	if err != nil || n != 5 || bytes != 5 || !slices.Equal(sizes, []int{2, 2, 1}) {
		t.Errorf("byte-bounded batches %v (%d entries, %d bytes, %v), want sizes 2, 2, 1", sizes, n, bytes, err)
	}

	boom := errors.New("peer gone")
	calls := 0
	n, _, err = c.Export(plenty, ExportLimits{Entries: 2}, func([]Warm) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n != 2 || calls != 2 {
		t.Errorf("Export = %d, %v after %d sends; want 2 sent, the send error, and no send after it", n, err, calls)
	}
}

func TestExportLeavesOutWhatIsInvalidatedMeanwhile(t *testing.T) {
	c, _ := newCache(t, nil)
	c.Set(KindUser, "user:1", []byte("a"))
	c.Set(KindUser, "user:2", []byte("b"))
	c.Set(KindUser, "user:3", []byte("c"))
	var got []string
	_, _, err := c.Export(plenty, ExportLimits{Entries: 1}, func(ws []Warm) error {
		got = append(got, ws[0].Key)
		if len(got) == 1 {
			c.Delete("user:1", "user:2", "user:3") // a write lands after the first batch
		}
		return nil
	})
	if err != nil || len(got) != 1 {
		t.Errorf("exported %v (%v); want only the batch made before the invalidation", got, err)
	}
}

// A write's invalidation that reaches the new cache while the transfer is
// under way must win over the old copy the transfer still carries.
func TestImportInvalidationDuringTransferWins(t *testing.T) {
	src, _ := newCache(t, nil)
	for _, k := range []string{"user:1", "user-events:1", "events", "user:2"} {
		src.Set(KindOf(k), k, []byte("old "+k))
	}
	batches := exportAll(t, src, plenty, 10)

	dst, _ := newCache(t, nil)
	im := dst.BeginImport()
	dst.Delete("user:1", "user-events:1", "events") // the fan-out of a write on a sibling
	var st ImportStats
	for _, b := range batches {
		im.Add(b, &st)
	}
	for _, k := range []string{"user:1", "user-events:1", "events"} {
		if e, _, ok := dst.Peek(k); ok {
			t.Errorf("%s was invalidated during the transfer but holds %q", k, e.Body)
		}
	}
	if st.Superseded < 3 || st.Stored+st.Superseded != 4 {
		t.Errorf("import stats %+v, want the 3 invalidated keys superseded", st)
	}

	dst.Set(KindUser, "user:7", []byte("filled here"))
	im.Add([]Warm{{Key: "user:7", Body: []byte("from the transfer"), FreshFor: time.Minute}}, &st)
	if e, _, _ := dst.Peek("user:7"); string(e.Body) != "filled here" {
		t.Errorf("an import replaced the cache's own answer with %q", e.Body)
	}

	dst.Purge()
	var after ImportStats
	im.Add(batches[0], &after)
	if after.Stored != 0 {
		t.Errorf("%d entries imported after a purge, want none", after.Stored)
	}
}

// However imports and invalidations interleave, a key invalidated after the
// import began is never left holding the transferred copy.
func TestImportRacingInvalidations(t *testing.T) {
	dst, _ := newCache(t, nil)
	im := dst.BeginImport()
	var entries []Warm
	for i := range 500 {
		entries = append(entries, Warm{Key: fmt.Sprintf("user:%d", i), Body: []byte("old"), FreshFor: time.Minute})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		var st ImportStats
		for _, e := range entries {
			im.Add([]Warm{e}, &st)
		}
	})
	wg.Go(func() {
		for i := 0; i < len(entries); i += 2 {
			dst.Delete(entries[i].Key)
		}
	})
	wg.Wait()
	for i := 0; i < len(entries); i += 2 {
		if _, _, ok := dst.Peek(entries[i].Key); ok {
			t.Fatalf("%s holds the transferred copy after its invalidation", entries[i].Key)
		}
	}
}

func TestImportFollowsTheNewPolicy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.User = Policy{Fresh: 5 * time.Second, Stale: 0}
	dst, clock := newCache(t, &cfg)
	im := dst.BeginImport()
	var st ImportStats
	im.Add([]Warm{
		{Key: "user:1", Body: []byte("a"), FreshFor: time.Minute, StaleFor: time.Hour},
		{Key: "user:2", Body: []byte("b"), StaleFor: time.Hour}, // stale only, and the policy serves no stale users
		{Key: "nonsense:1", Body: []byte("c"), FreshFor: time.Minute},
	}, &st)
	if st != (ImportStats{Stored: 1, Refused: 2}) {
		t.Errorf("import stats %+v, want 1 stored, 2 refused", st)
	}
	clock.Advance(5 * time.Second)
	if _, _, ok := dst.Peek("user:1"); ok {
		t.Error("user:1 kept the windows of the old policy")
	}
}
