// Package catalog is amexd's business logic for users and events: it answers
// reads from the worker's cache, fills the cache from the upstream Event API,
// fans a user's events out in parallel, and validates and creates events.
// It knows nothing of HTTP; the worker maps its results and errors to answers.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/upstream"
)

// ErrNotFound reports a user or event the upstream does not know.
var ErrNotFound = errors.New("not found")

// Upstream is the part of the Event API client the catalog uses.
type Upstream interface {
	Users(ctx context.Context) ([]eventapi.User, error)
	User(ctx context.Context, id int) (eventapi.User, error)
	Events(ctx context.Context) ([]eventapi.Event, error)
	Event(ctx context.Context, id string) (eventapi.Event, error)
	AddEvent(ctx context.Context, ev eventapi.Event) (eventapi.Event, error)
}

// Invalidator spreads a write's stale cache keys to the rest of the cluster
// and returns once every worker dropped them.
type Invalidator func(ctx context.Context, keys []string) error

// Catalog serves users and events. It is safe for concurrent use.
type Catalog struct {
	cache      *cache.Cache
	up         Upstream
	fanout     int
	invalidate Invalidator
	log        *slog.Logger
	newID      func() string
	share      func(key string, body []byte)
}

// Option configures a Catalog.
type Option func(*Catalog)

// WithInvalidator sets how a write's invalidation reaches other workers.
// Without it only this worker's cache is updated.
func WithInvalidator(inv Invalidator) Option { return func(c *Catalog) { c.invalidate = inv } }

// WithSharer sets where an event fetched from the upstream is offered to
// the other workers; events never change, so every worker may keep it.
func WithSharer(share func(key string, body []byte)) Option {
	return func(c *Catalog) { c.share = share }
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Catalog) { c.log = l } }

// WithIDs sets the event ID generator (upstream.NewEventID by default).
func WithIDs(next func() string) Option { return func(c *Catalog) { c.newID = next } }

// New returns a Catalog reading through c and calling up on misses; fanout
// bounds the parallel event fetches of one user's events.
func New(c *cache.Cache, up Upstream, fanout int, opts ...Option) *Catalog {
	cat := &Catalog{
		cache:      c,
		up:         up,
		fanout:     max(fanout, 1),
		invalidate: func(context.Context, []string) error { return nil },
		log:        slog.Default(),
		newID:      upstream.NewEventID,
		share:      func(string, []byte) {},
	}
	for _, o := range opts {
		o(cat)
	}
	return cat
}

// Result is a cached answer: its JSON bytes, validator and cache status.
type Result struct {
	cache.Entry
	Status cache.Status
}

// read answers from kind's entry for id, filling it with fetch(ctx, c, arg)
// when it is not fresh. fetch takes its argument rather than capturing it,
// so that a hit, the common case, builds no closure.
func read[A any](ctx context.Context, c *Catalog, kind cache.Kind, id string, arg A, fetch func(context.Context, *Catalog, A) ([]byte, error)) (Result, error) {
	key := cache.Key(kind, id)
	if e, ok := c.cache.Fresh(key); ok {
		return Result{Entry: e, Status: cache.StatusHit}, nil
	}
	e, st, err := c.cache.Get(ctx, kind, key, func(ctx context.Context) ([]byte, error) { return fetch(ctx, c, arg) })
	if err != nil {
		return Result{}, err
	}
	return Result{Entry: e, Status: st}, nil
}

// Users returns the list of users.
func (c *Catalog) Users(ctx context.Context) (Result, error) {
	return read(ctx, c, cache.KindUsers, "", struct{}{}, func(ctx context.Context, c *Catalog, _ struct{}) ([]byte, error) {
		return encode(c.up.Users(ctx))
	})
}

// User returns one user; ErrNotFound when the upstream has no such user.
func (c *Catalog) User(ctx context.Context, id int) (Result, error) {
	return read(ctx, c, cache.KindUser, strconv.Itoa(id), id, func(ctx context.Context, c *Catalog, id int) ([]byte, error) {
		return encode(c.up.User(ctx, id))
	})
}

// Events returns every event.
func (c *Catalog) Events(ctx context.Context) (Result, error) {
	return read(ctx, c, cache.KindEvents, "", struct{}{}, func(ctx context.Context, c *Catalog, _ struct{}) ([]byte, error) {
		return encode(c.up.Events(ctx))
	})
}

// Event returns one event by its canonical ID ("event-N", see ParseEventID).
func (c *Catalog) Event(ctx context.Context, id string) (Result, error) {
	return read(ctx, c, cache.KindEvent, id, id, func(ctx context.Context, c *Catalog, id string) ([]byte, error) {
		b, err := encode(c.up.Event(ctx, id))
		if err == nil {
			c.share(cache.Key(cache.KindEvent, id), b)
		}
		return b, err
	})
}

// UserEvents returns a user's events as a JSON array, in the user's order.
// Each event is fetched through its own cache entry, at most fanout at once,
// so a user's hundred events cost one round of upstream latency. An event the
// user lists but the upstream no longer has is left out.
func (c *Catalog) UserEvents(ctx context.Context, userID int) (Result, error) {
	return read(ctx, c, cache.KindUserEvents, strconv.Itoa(userID), userID, fetchUserEvents)
}

func fetchUserEvents(ctx context.Context, c *Catalog, userID int) ([]byte, error) {
	u, err := c.User(ctx, userID)
	if err != nil {
		return nil, err
	}
	var user eventapi.User
	if err := json.Unmarshal(u.Body, &user); err != nil {
		return nil, fmt.Errorf("decode cached user %d: %w", userID, err)
	}
	bodies := make([][]byte, len(user.Events))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.fanout)
	for i, id := range user.Events {
		g.Go(func() error {
			r, err := c.Event(gctx, id)
			switch {
			case errors.Is(err, ErrNotFound):
				c.log.WarnContext(ctx, "user lists an unknown event", "user", userID, "event", id)
				return nil
			case err != nil:
				return err
			}
			bodies[i] = r.Body
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return joinArray(bodies), nil
}

// joinArray writes the already-encoded elements as one JSON array, skipping
// nil ones, without decoding them again.
func joinArray(elems [][]byte) []byte {
	n := 2
	for _, e := range elems {
		n += len(e) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, n))
	buf.WriteByte('[')
	first := true
	for _, e := range elems {
		if e == nil {
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		buf.Write(e)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

func encode[T any](v T, err error) ([]byte, error) {
	if errors.Is(err, upstream.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode upstream answer: %w", err)
	}
	return b, nil
}

// Purge drops every cached entry of this worker.
func (c *Catalog) Purge() { c.cache.Purge() }

// Keep stores an event a sibling worker fetched. Keys of other kinds are
// ignored: only events are immutable, so only they can be taken from a
// sibling without racing an invalidation.
func (c *Catalog) Keep(key string, body []byte) {
	if cache.KindOf(key) == cache.KindEvent {
		c.cache.Set(cache.KindEvent, key, body)
	}
}

// Forget drops keys from this worker's cache; other workers call it when a
// sibling's write made them stale.
func (c *Catalog) Forget(keys []string) { c.cache.Delete(keys...) }

// CacheStats reports the worker cache's counters.
func (c *Catalog) CacheStats() cache.Stats { return c.cache.Stats() }
