package catalog

import (
	"context"
	"testing"

	"github.com/amexd/amexd/internal/cache"
)

// TestWriteDoesNotWaitForeverForTheCluster: a confirmation of the
// invalidation that never comes (a supervisor that lost the request) delays
// the write's answer by a bound, and the write still succeeds.
func TestWriteDoesNotWaitForeverForTheCluster(t *testing.T) {
	c, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bounded := false
	never := func(ctx context.Context, _ []string) error {
		_, bounded = ctx.Deadline()
		<-ctx.Done()
		return ctx.Err()
	}
	cat := New(c, newSeedUpstream(), 4, WithInvalidator(never))
	ev, err := cat.CreateEvent(context.Background(), NewEvent{Name: "x", UserID: 1})
	if err != nil || ev.Key == "" {
		t.Fatalf("CreateEvent with an unconfirmed invalidation: %+v %v, want the created event", ev, err)
	}
	if !bounded {
		t.Error("the invalidation's context had no deadline")
	}
}
