package process

import (
	"context"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// warmConfig keeps user-events fresh for the whole test.
func warmConfig() config.Config {
	cfg := testConfig()
	cfg.Cache.UserEvents.Fresh = 10 * time.Minute
	return cfg
}

// transfer moves src's hot entries into dst as the control channel would.
func transfer(t *testing.T, src, dst *Worker) control.Transfer {
	t.Helper()
	n, bytes, err := src.Export(control.ExportRequest{MaxEntries: 1000, MaxBytes: 1 << 20},
		control.ExportRequest{MaxEntries: 7, MaxBytes: 1 << 10}, func(entries []control.CacheEntry) error {
			dst.Import(entries)
			return nil
		})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	return control.Transfer{Entries: n, Bytes: bytes}
}

func TestWarmStartServesFromTheTransferredEntries(t *testing.T) {
	old := newEnv(t, warmConfig())
	if a := old.do(t, "GET", "/events/user/1", ""); a.status != 200 {
		t.Fatalf("GET /events/user/1 = %d %s", a.status, a.body)
	}
	fresh := newEnv(t, warmConfig())
	tr := transfer(t, old.app, fresh.app)
	if tr.Entries < 2 {
		t.Fatalf("transferred %d entries, want the user, its events and the list", tr.Entries)
	}
	fresh.app.Warmed(tr, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fresh.app.awaitWarm(ctx, time.Hour) // returns at once: Warmed was called
	if ctx.Err() != nil {
		t.Fatal("awaitWarm did not return after Warmed")
	}

	a := fresh.do(t, "GET", "/events/user/1", "")
	want := old.do(t, "GET", "/events/user/1", "")
	if a.status != 200 || a.header.Get("X-Cache") != "HIT" || string(a.body) != string(want.body) {
		t.Errorf("new worker answered %d %s %s, want the old worker's answer as a HIT", a.status, a.header.Get("X-Cache"), a.body)
	}
	if calls := fresh.sim.Stats().Calls; calls.GetEventByID+calls.GetUserByID != 0 {
		t.Errorf("the warm worker called its upstream: %+v", calls)
	}
}

func TestWarmStartLosesToAnInvalidation(t *testing.T) {
	old := newEnv(t, warmConfig())
	old.do(t, "GET", "/events/user/1", "")
	fresh := newEnv(t, warmConfig())
	// A write on a sibling reaches the new worker before the transfer does.
	fresh.app.Invalidate([]string{"user-events:1", "user:1"})
	transfer(t, old.app, fresh.app)
	if a := fresh.do(t, "GET", "/events/user/1", ""); a.header.Get("X-Cache") != "MISS" {
		t.Errorf("after an invalidation the new worker answered %s, want MISS", a.header.Get("X-Cache"))
	}
}

func TestAwaitWarmGivesUp(t *testing.T) {
	e := newEnv(t, testConfig())
	done := make(chan struct{})
	go func() {
		e.app.awaitWarm(context.Background(), time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("awaitWarm waited past its timeout")
	}
}
