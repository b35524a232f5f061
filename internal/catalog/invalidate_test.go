package catalog

import (
	"context"
	"testing"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/eventapi"
)

// oneUser is an upstream with user 1 whose addEvent always succeeds.
type oneUser struct{}

func (oneUser) Users(context.Context) ([]eventapi.User, error) { return []eventapi.User{{ID: 1}}, nil }
func (oneUser) User(context.Context, int) (eventapi.User, error) {
	return eventapi.User{ID: 1}, nil
}
func (oneUser) Events(context.Context) ([]eventapi.Event, error) { return nil, nil }
func (oneUser) Event(_ context.Context, id string) (eventapi.Event, error) {
	return eventapi.Event{ID: id}, nil
}
func (oneUser) AddEvent(_ context.Context, ev eventapi.Event) (eventapi.Event, error) { return ev, nil }

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
	cat := New(c, oneUser{}, 4, WithInvalidator(never))
	ev, err := cat.CreateEvent(context.Background(), NewEvent{Name: "x", UserID: 1})
	if err != nil || ev.ID == "" {
		t.Fatalf("CreateEvent with an unconfirmed invalidation: %+v %v, want the created event", ev, err)
	}
	if !bounded {
		t.Error("the invalidation's context had no deadline")
	}
}
