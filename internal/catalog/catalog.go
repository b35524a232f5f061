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
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/upstream"
)

// ErrNotFound reports a user or event the upstream does not know.
var ErrNotFound = errors.New("not found")

// Upstream is the part of the Event API client the catalog uses. Reads
// return the upstream's JSON as it was sent (compacted); by-key reads
// return an error matching upstream.ErrNotFound for an unknown key.
type Upstream interface {
	Users(ctx context.Context) ([]byte, error)
	User(ctx context.Context, key string) ([]byte, error)
	Events(ctx context.Context) ([]byte, error)
	Event(ctx context.Context, key string) ([]byte, error)
	AddEvent(ctx context.Context, record []byte) error
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
	newID      func() int64
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

// WithIDs sets the event id generator (upstream.NewEventID by default).
func WithIDs(next func() int64) Option { return func(c *Catalog) { c.newID = next } }

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

// ServesStale says which fetch failures a stale entry may answer, as the
// cache's WithStaleOn predicate: upstream faults, not answers such as "no
// such user".
func ServesStale(err error) bool {
	var unavailable *upstream.UnavailableError
	return errors.As(err, &unavailable) || errors.Is(err, context.DeadlineExceeded)
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

// Users returns the list of users, the upstream's JSON as it sent it.
func (c *Catalog) Users(ctx context.Context) (Result, error) {
	return read(ctx, c, cache.KindUsers, "", struct{}{}, func(ctx context.Context, c *Catalog, _ struct{}) ([]byte, error) {
		return found(c.up.Users(ctx))
	})
}

// User returns the record of the user stored under key id; ErrNotFound
// when the upstream has none. The record's own "id" may differ from id.
func (c *Catalog) User(ctx context.Context, id int) (Result, error) {
	return read(ctx, c, cache.KindUser, strconv.Itoa(id), id, func(ctx context.Context, c *Catalog, id int) ([]byte, error) {
		return found(c.up.User(ctx, strconv.Itoa(id)))
	})
}

// Events returns every event.
func (c *Catalog) Events(ctx context.Context) (Result, error) {
	return read(ctx, c, cache.KindEvents, "", struct{}{}, func(ctx context.Context, c *Catalog, _ struct{}) ([]byte, error) {
		return found(c.up.Events(ctx))
	})
}

// Event returns the event a client names in /events/{id}: the key as given
// ("event-1", or an id a writer chose), and for a bare number N that is no
// key, the event stored under "event-N". Both keys of a bare number are
// looked up at once, so a miss costs one upstream round trip, not two.
func (c *Catalog) Event(ctx context.Context, id string) (Result, error) {
	alt, ok := altKey(id)
	if !ok {
		return c.EventByKey(ctx, id)
	}
	if r, ok := c.cache.Fresh(cache.Key(cache.KindEvent, id)); ok {
		return Result{Entry: r, Status: cache.StatusHit}, nil
	}
	if c.known(cache.Key(cache.KindMissing, cache.Key(cache.KindEvent, id))) {
		return c.EventByKey(ctx, alt)
	}
	type answer struct {
		r   Result
		err error
	}
	second := make(chan answer, 1)
	go func() {
		r, err := c.EventByKey(ctx, alt)
		second <- answer{r, err}
	}()
	r, err := c.EventByKey(ctx, id)
	if !errors.Is(err, ErrNotFound) {
		return r, err // the key as given wins; the other lookup fills its cache entry
	}
	a := <-second
	return a.r, a.err
}

// altKey returns "event-N" for a bare decimal N, the form the seeded
// events' keys take.
func altKey(id string) (string, bool) {
	if id == "" || strings.TrimLeft(id, "0123456789") != "" {
		return "", false
	}
	return eventKeyPrefix + id, true
}

const eventKeyPrefix = "event-"

// EventByKey returns the event stored under key exactly; ErrNotFound when
// there is none, which is remembered for cache.missing's window.
func (c *Catalog) EventByKey(ctx context.Context, key string) (Result, error) {
	if e, ok := c.cache.Fresh(cache.Key(cache.KindEvent, key)); ok {
		return Result{Entry: e, Status: cache.StatusHit}, nil // the hot path asks nothing else
	}
	missing := cache.Key(cache.KindMissing, cache.Key(cache.KindEvent, key))
	if c.known(missing) {
		return Result{}, fmt.Errorf("event %q: %w", key, ErrNotFound)
	}
	r, err := read(ctx, c, cache.KindEvent, key, key, func(ctx context.Context, c *Catalog, key string) ([]byte, error) {
		b, err := found(c.up.Event(ctx, key))
		if err == nil {
			c.share(cache.Key(cache.KindEvent, key), b)
		}
		return b, err
	})
	if errors.Is(err, ErrNotFound) {
		c.cache.Set(cache.KindMissing, missing, nil)
	}
	return r, err
}

// known reports whether key has a fresh entry.
func (c *Catalog) known(key string) bool {
	_, ok := c.cache.Fresh(key)
	return ok
}

// UserEvents returns a user's events as a JSON array of their records, in
// the order of the user's events list, whose entries are the events' keys
// (strings, or numbers a writer sent). Each event is fetched through its
// own cache entry, at most fanout at once, so a user's hundred events cost
// one round of upstream latency. An event the user lists but the upstream
// does not have is left out.
func (c *Catalog) UserEvents(ctx context.Context, userID int) (Result, error) {
	return read(ctx, c, cache.KindUserEvents, strconv.Itoa(userID), userID, fetchUserEvents)
}

func fetchUserEvents(ctx context.Context, c *Catalog, userID int) ([]byte, error) {
	u, err := c.User(ctx, userID)
	if err != nil {
		return nil, err
	}
	var user struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(u.Body, &user); err != nil {
		return nil, fmt.Errorf("decode cached user %d: %w", userID, err)
	}
	bodies := make([][]byte, len(user.Events))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.fanout)
	for i, raw := range user.Events {
		key, ok := eventapi.KeyOf(raw)
		if !ok {
			c.log.WarnContext(ctx, "user lists an event that is no key", "user", userID, "event", string(raw))
			continue
		}
		g.Go(func() error {
			r, err := c.EventByKey(gctx, key)
			switch {
			case errors.Is(err, ErrNotFound):
				c.log.WarnContext(ctx, "user lists an unknown event", "user", userID, "event", key)
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

// found maps the upstream's "no such record" to ErrNotFound.
func found(b []byte, err error) ([]byte, error) {
	if errors.Is(err, upstream.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return b, err
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
