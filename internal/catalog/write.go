package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/amexd/amexd/internal/cache"
	"github.com/amexd/amexd/internal/eventapi"
)

// Limits on a new event's fields, in characters.
const (
	MaxNameLen    = 200
	MaxDetailsLen = 2000
)

// NewEvent is a client's request to create an event.
type NewEvent struct {
	Name    string `json:"name"`
	UserID  int    `json:"userId"`
	Details string `json:"details,omitempty"`
}

// InvalidError reports a request that cannot be served as it stands; Code is
// a stable machine-readable reason and Field the offending input, if any.
type InvalidError struct {
	Code    string
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(code, field, format string, args ...any) *InvalidError {
	return &InvalidError{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// CheckUTF8 refuses a request body that is not valid UTF-8, or whose JSON
// escapes half of a UTF-16 surrogate pair alone ("\ud800"), naming the
// top-level field that holds it when there is one. Run it before decoding:
// encoding/json silently turns each such byte or escape into U+FFFD,
// storing text the client never sent.
func CheckUTF8(body []byte) error {
	if utf8.Valid(body) && !hasLoneSurrogate(body) {
		return nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		for name, raw := range fields {
			if !utf8.Valid(raw) || hasLoneSurrogate(raw) {
				return invalid("invalid_field", name, "field %q must be valid UTF-8", name)
			}
		}
	}
	return invalid("invalid_field", "", "request body must be valid UTF-8")
}

// hasLoneSurrogate reports whether the JSON text b has a \uXXXX escape of
// a surrogate that is not part of a high-low pair.
func hasLoneSurrogate(b []byte) bool {
	for i := 0; i < len(b)-1; i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := escapedRune(b[i:])
		switch {
		case !ok:
			i++ // \n, \\ and the like: skip the escaped character
		case r >= 0xdc00 && r <= 0xdfff:
			return true
		case r >= 0xd800 && r <= 0xdbff:
			lo, ok := escapedRune(b[i+6:])
			if !ok || lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

// escapedRune decodes a \uXXXX escape at the start of b.
func escapedRune(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[2:6]), 16, 16)
	return rune(n), err == nil
}

// DecodeNewEvent parses a create request strictly: one JSON object, known
// fields only, with the types of NewEvent. The result is not yet validated.
func DecodeNewEvent(body []byte) (NewEvent, error) {
	var ev NewEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return NewEvent{}, invalid("malformed_json", "", "request body must be a JSON object")
		case errors.As(err, &typeErr):
			return NewEvent{}, typeMismatch(typeErr)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return NewEvent{}, invalid("unknown_field", field, "unknown field %q", field)
		default:
			return NewEvent{}, invalid("malformed_json", "", "request body is not a JSON object: %v", err)
		}
	}
	if dec.More() {
		return NewEvent{}, invalid("malformed_json", "", "request body holds more than one JSON value")
	}
	return ev, nil
}

// Validate trims the event's text and checks every field, returning an
// *InvalidError for the first problem.
func (ev *NewEvent) Validate() error {
	ev.Name = strings.TrimSpace(ev.Name)
	ev.Details = strings.TrimSpace(ev.Details)
	switch {
	case ev.Name == "":
		return invalid("invalid_field", "name", "name is required")
	case !utf8.ValidString(ev.Name):
		return invalid("invalid_field", "name", "name must be valid UTF-8")
	case utf8.RuneCountInString(ev.Name) > MaxNameLen:
		return invalid("invalid_field", "name", "name must be at most %d characters", MaxNameLen)
	case utf8.RuneCountInString(ev.Details) > MaxDetailsLen:
		return invalid("invalid_field", "details", "details must be at most %d characters", MaxDetailsLen)
	case ev.UserID <= 0:
		return invalid("invalid_field", "userId", "userId is required and must be a positive integer")
	}
	return nil
}

// CreateEvent validates ev, checks that its user exists, creates it upstream
// under an ID chosen once (so the client's retries cannot duplicate it), and
// drops every cache entry it made stale, in this worker and, through the
// Invalidator, in the others, before it returns.
func (c *Catalog) CreateEvent(ctx context.Context, ev NewEvent) (eventapi.Event, error) {
	return c.CreateEventAs(ctx, ev, c.NewEventID())
}

// NewEventID returns a fresh event ID from the catalog's generator.
func (c *Catalog) NewEventID() string { return c.newID() }

// CreateEventAs is CreateEvent under an ID the caller chose: a request
// retried under one Idempotency-Key reuses the ID of its first attempt, so
// the upstream replays that attempt's event instead of creating another.
func (c *Catalog) CreateEventAs(ctx context.Context, ev NewEvent, id string) (eventapi.Event, error) {
	if err := ev.Validate(); err != nil {
		return eventapi.Event{}, err
	}
	if _, err := c.User(ctx, ev.UserID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return eventapi.Event{}, invalid("unknown_user", "userId", "user %d does not exist", ev.UserID)
		}
		return eventapi.Event{}, err
	}
	created, err := c.up.AddEvent(ctx, eventapi.Event{
		ID:      id,
		Name:    ev.Name,
		UserID:  ev.UserID,
		Details: ev.Details,
	})
	if err != nil {
		return eventapi.Event{}, err
	}
	user := strconv.Itoa(created.UserID)
	stale := []string{
		cache.Key(cache.KindUsers, ""),
		cache.Key(cache.KindEvents, ""),
		cache.Key(cache.KindUser, user),
		cache.Key(cache.KindUserEvents, user),
	}
	if err := c.cache.Invalidate(ctx, stale...); err != nil {
		c.log.WarnContext(ctx, "shared cache invalidation failed; its old answers may be served until their fresh window ends",
			"event", created.ID, "err", err)
	}
	if b, err := json.Marshal(created); err == nil {
		key := cache.Key(cache.KindEvent, created.ID)
		c.cache.Set(cache.KindEvent, key, b)
		c.share(key, b) // the siblings will need it for the user's list
	}
	ictx, cancel := context.WithTimeout(ctx, invalidateTimeout)
	defer cancel()
	if err := c.invalidate(ictx, stale); err != nil {
		// The event exists upstream; failing the request now would invite a
		// duplicate. Siblings' entries expire with their fresh TTL.
		c.log.WarnContext(ctx, "cluster invalidation incomplete", "event", created.ID, "err", err)
	}
	return created, nil
}

// invalidateTimeout bounds how long a write waits for the rest of the
// cluster to confirm its invalidation: a lost confirmation must not hold
// the client's answer.
const invalidateTimeout = 3 * time.Second

// ParseUserID parses a user ID path segment: a positive decimal integer.
func ParseUserID(s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n <= 0 {
		return 0, invalid("invalid_id", "id", "user id %q must be a positive integer", truncate(s))
	}
	return int(n), nil
}

// ParseEventID parses an event ID path segment, "3" or "event-3", and
// returns the canonical form "event-3".
func ParseEventID(s string) (string, error) {
	digits := strings.TrimPrefix(s, "event-")
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != digits {
		return "", invalid("invalid_id", "id", "event id %q must be N or event-N with N a positive integer", truncate(s))
	}
	return "event-" + digits, nil
}

func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
