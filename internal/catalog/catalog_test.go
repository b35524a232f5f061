package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/upstream"
)

// seedUpstream is an Event API holding the original data, records kept as
// raw JSON, plus an event the old backend stored under the number 1 for
// user 2 and a field amexd does not know on user 1. It counts calls.
type seedUpstream struct {
	mu     sync.Mutex
	users  map[string]string
	events map[string]string
	calls  []string // "op key"
	added  []string
}

func newSeedUpstream() *seedUpstream {
	return &seedUpstream{
		users: map[string]string{
			"1": `{"userName":"user1","id":1,"email":"hello@gmail.com","events":["event-1","event-3"],"team":"core"}`,
			"2": `{"userName":"user2","id":2,"email":"hello2@gmail.com","events":["event-2",1]}`,
			"3": `{"userName":"user3","id":2,"email":"hello3@gmail.com","events":["event-4"]}`,
		},
		events: map[string]string{
			"event-1": `{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"}`,
			"event-2": `{"id":1,"name":"Event 2","userId":2,"details":"This is the first event"}`,
			"event-3": `{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"}`,
			"event-4": `{"id":1,"name":"Event 4","userId":3,"details":"This is the first event"}`,
			"1":       `{"id":1,"name":"Old backend's","userId":2}`,
		},
	}
}

func (u *seedUpstream) note(op, key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, op+" "+key)
}

func (u *seedUpstream) count(call string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (u *seedUpstream) Users(context.Context) ([]byte, error) {
	u.note("getUsers", "")
	u.mu.Lock()
	defer u.mu.Unlock()
	return []byte("[" + u.users["1"] + "," + u.users["2"] + "," + u.users["3"] + "]"), nil
}

func (u *seedUpstream) User(_ context.Context, key string) ([]byte, error) {
	u.note("getUserById", key)
	u.mu.Lock()
	defer u.mu.Unlock()
	if r, ok := u.users[key]; ok {
		return []byte(r), nil
	}
	return nil, fmt.Errorf("user %s: %w", key, upstream.ErrNotFound)
}

func (u *seedUpstream) Events(context.Context) ([]byte, error) {
	u.note("getEvents", "")
	return []byte("[]"), nil
}

func (u *seedUpstream) Event(_ context.Context, key string) ([]byte, error) {
	u.note("getEventById", key)
	u.mu.Lock()
	defer u.mu.Unlock()
	if r, ok := u.events[key]; ok {
		return []byte(r), nil
	}
	return nil, fmt.Errorf("event %s: %w", key, upstream.ErrNotFound)
}

func (u *seedUpstream) AddEvent(_ context.Context, record []byte) error {
	var ev eventapi.Event
	if err := json.Unmarshal(record, &ev); err != nil {
		return err
	}
	key, _ := eventapi.KeyOf(ev.ID)
	u.note("addEvent", key)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.events[key] = string(record)
	u.added = append(u.added, string(record))
	user := string(ev.UserID)
	u.users[user] = strings.Replace(u.users[user], `"]`, `",`+string(ev.ID)+`]`, 1)
	return nil
}

func newTestCatalog(t *testing.T, up Upstream, opts ...Option) *Catalog {
	t.Helper()
	c, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return New(c, up, 4, opts...)
}

func TestRecordsAreTheUpstreams(t *testing.T) {
	up := newSeedUpstream()
	cat := newTestCatalog(t, up)
	ctx := context.Background()
	r, err := cat.User(ctx, 1)
	if err != nil || string(r.Body) != up.users["1"] {
		t.Fatalf("User(1) = %s, %v; want the upstream's record, unknown field kept", r.Body, err)
	}
	if r, err := cat.User(ctx, 3); err != nil || !strings.Contains(string(r.Body), `"userName":"user3","id":2`) {
		t.Fatalf("User(3) = %s, %v; want user3's record (which says id 2)", r.Body, err)
	}
	if _, err := cat.User(ctx, 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("User(99) = %v, want ErrNotFound", err)
	}
	users, err := cat.Users(ctx)
	if err != nil || !strings.HasPrefix(string(users.Body), "["+up.users["1"]) {
		t.Fatalf("Users = %s, %v", users.Body, err)
	}
}

func TestEventKeys(t *testing.T) {
	up := newSeedUpstream()
	delete(up.events, "1")
	cat := newTestCatalog(t, up)
	ctx := context.Background()
	for _, id := range []string{"event-1", "1"} {
		r, err := cat.Event(ctx, id)
		if err != nil || string(r.Body) != up.events["event-1"] {
			t.Fatalf("Event(%q) = %s, %v; want event-1's record", id, r.Body, err)
		}
	}
	// "1" is no key here: the second lookup of it trusts the first.
	if _, err := cat.Event(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if n := up.count("getEventById 1"); n != 1 {
		t.Fatalf("getEventById 1 called %d times, want 1 (remembered as missing)", n)
	}
	for _, id := range []string{"77", "event-77", "nope"} {
		if _, err := cat.Event(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Event(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestEventKeyAsGivenWins(t *testing.T) {
	up := newSeedUpstream() // holds both "1" and "event-1"
	cat := newTestCatalog(t, up)
	r, err := cat.Event(context.Background(), "1")
	if err != nil || string(r.Body) != up.events["1"] {
		t.Fatalf(`Event("1") = %s, %v; want the event stored under the number 1`, r.Body, err)
	}
}

func TestUserEventsFollowTheUsersKeys(t *testing.T) {
	up := newSeedUpstream()
	cat := newTestCatalog(t, up)
	r, err := cat.UserEvents(context.Background(), 2)
	want := "[" + up.events["event-2"] + "," + up.events["1"] + "]"
	if err != nil || string(r.Body) != want {
		t.Fatalf("UserEvents(2) = %s, %v; want %s", r.Body, err, want)
	}
	if _, err := cat.UserEvents(context.Background(), 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UserEvents(99) = %v, want ErrNotFound", err)
	}
}

func TestCreateEvent(t *testing.T) {
	up := newSeedUpstream()
	var stale []string
	cat := newTestCatalog(t, up, WithInvalidator(func(_ context.Context, keys []string) error {
		stale = keys
		return nil
	}))
	ctx := context.Background()
	if _, err := cat.UserEvents(ctx, 3); err != nil {
		t.Fatal(err)
	}
	ev, err := cat.CreateEvent(ctx, NewEvent{Name: " hello ", UserID: 3})
	if err != nil {
		t.Fatal(err)
	}
	var rec eventapi.Event
	if err := json.Unmarshal(ev.Record, &rec); err != nil || string(rec.ID) != ev.Key || string(rec.UserID) != "3" || rec.Name != "hello" {
		t.Fatalf("created %s under %q, want a numeric id equal to its key, userId 3, the trimmed name", ev.Record, ev.Key)
	}
	if !slices.Contains(stale, "user-events:3") || !slices.Contains(stale, "user:3") || !slices.Contains(stale, "events") {
		t.Fatalf("invalidated %v, want the user, the user's events and the list", stale)
	}
	r, err := cat.UserEvents(ctx, 3)
	if err != nil || !strings.Contains(string(r.Body), string(ev.Record)) {
		t.Fatalf("UserEvents(3) after the write = %s, %v; want the new event", r.Body, err)
	}
	if r, err := cat.Event(ctx, ev.Key); err != nil || string(r.Body) != string(ev.Record) {
		t.Fatalf("Event(%s) = %s, %v", ev.Key, r.Body, err)
	}
}

func TestCreateEventUnknownUserNeverReachesTheUpstream(t *testing.T) {
	up := newSeedUpstream()
	cat := newTestCatalog(t, up)
	_, err := cat.CreateEvent(context.Background(), NewEvent{Name: "orphan", UserID: 99})
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Code != "unknown_user" || !inv.Unprocessable {
		t.Fatalf("CreateEvent for user 99 = %v, want an unprocessable unknown_user", err)
	}
	if len(up.added) != 0 {
		t.Fatalf("addEvent was called: %v", up.added)
	}
}

func TestCreateEventAgainDoesNotListTwice(t *testing.T) {
	up := newSeedUpstream()
	cat := newTestCatalog(t, up)
	ctx := context.Background()
	first, err := cat.CreateEventAgain(ctx, NewEvent{Name: "retried", UserID: 3}, "4503599627370497")
	if err != nil || len(up.added) != 1 {
		t.Fatalf("first attempt: %v, %d addEvent calls, want 1", err, len(up.added))
	}
	again, err := cat.CreateEventAgain(ctx, NewEvent{Name: "retried", UserID: 3}, "4503599627370497")
	if err != nil || len(up.added) != 1 || string(again.Record) != string(first.Record) {
		t.Fatalf("second attempt: %s, %v, %d addEvent calls; want the stored record and no second call", again.Record, err, len(up.added))
	}
	r, err := cat.UserEvents(ctx, 3)
	if err != nil || strings.Count(string(r.Body), `"id":4503599627370497`) != 1 {
		t.Fatalf("user 3's events = %s, %v; want the event once", r.Body, err)
	}
}
