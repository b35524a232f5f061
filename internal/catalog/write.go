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
	// Unprocessable marks a well-formed request that names something that
	// does not exist (a 422 rather than a 400).
	Unprocessable bool
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

// Created is an event amexd stored upstream: the key it is found by and
// its record, exactly the JSON sent to addEvent (which answers no record of
// its own): {"id": N, "name": ..., "userId": N, "details": ...}.
type Created struct {
	Key    string
	Record []byte
}

// CreateEvent validates ev, checks that its user exists, creates it upstream
// under an id chosen once, and drops every cache entry it made stale, in
// this worker and, through the Invalidator, in the others, before it
// returns.
func (c *Catalog) CreateEvent(ctx context.Context, ev NewEvent) (Created, error) {
	return c.CreateEventAs(ctx, ev, c.NewEventID())
}

// NewEventID returns a fresh event id from the catalog's generator, in
// decimal.
func (c *Catalog) NewEventID() string { return strconv.FormatInt(c.newID(), 10) }

// CreateEventAs is CreateEvent under an id the caller chose (decimal digits
// are sent as a JSON number, anything else as a string): a request retried
// under one Idempotency-Key reuses the id of its first attempt.
//
// The user is checked first: the Event API stores an event for an unknown
// user all the same and answers 500, so such a request must never reach it.
func (c *Catalog) CreateEventAs(ctx context.Context, ev NewEvent, id string) (Created, error) {
	if err := ev.Validate(); err != nil {
		return Created{}, err
	}
	if _, err := c.User(ctx, ev.UserID); err != nil {
		if errors.Is(err, ErrNotFound) {
			inv := invalid("unknown_user", "userId", "user %d does not exist", ev.UserID)
			inv.Unprocessable = true
			return Created{}, inv
		}
		return Created{}, err
	}
	record, err := eventRecord(id, ev)
	if err != nil {
		return Created{}, err
	}
	if err := c.up.AddEvent(ctx, record); err != nil {
		return Created{}, err
	}
	c.settle(ctx, id, ev.UserID, record)
	return Created{Key: id, Record: record}, nil
}

// CreateEventAgain is CreateEventAs for a request that may have reached
// the upstream before under id (an Idempotency-Key whose first attempt did
// not finish). The Event API is not idempotent: a second addEvent would
// list the event under its user twice. So the event is looked up under id
// first, and created only when it is not there.
func (c *Catalog) CreateEventAgain(ctx context.Context, ev NewEvent, id string) (Created, error) {
	if err := ev.Validate(); err != nil {
		return Created{}, err
	}
	r, err := c.EventByKey(ctx, id)
	switch {
	case err == nil:
		c.settle(ctx, id, ev.UserID, r.Body)
		return Created{Key: id, Record: r.Body}, nil
	case !errors.Is(err, ErrNotFound):
		return Created{}, err
	}
	return c.CreateEventAs(ctx, ev, id)
}

// settle drops every cache entry the write of record under id made stale,
// here and, through the Invalidator, in the other workers, and keeps the
// record as the event's entry.
func (c *Catalog) settle(ctx context.Context, id string, userID int, record []byte) {
	user := strconv.Itoa(userID)
	eventKey := cache.Key(cache.KindEvent, id)
	stale := []string{
		cache.Key(cache.KindUsers, ""),
		cache.Key(cache.KindEvents, ""),
		cache.Key(cache.KindUser, user),
		cache.Key(cache.KindUserEvents, user),
		cache.Key(cache.KindMissing, eventKey),
	}
	if err := c.cache.Invalidate(ctx, stale...); err != nil {
		c.log.WarnContext(ctx, "shared cache invalidation failed; its old answers may be served until their fresh window ends",
			"event", id, "err", err)
	}
	c.cache.Set(cache.KindEvent, eventKey, record)
	c.share(eventKey, record) // the siblings will need it for the user's list
	ictx, cancel := context.WithTimeout(ctx, invalidateTimeout)
	defer cancel()
	if err := c.invalidate(ictx, stale); err != nil {
		// The event exists upstream; failing the request now would invite a
		// duplicate. Siblings' entries expire with their fresh TTL.
		c.log.WarnContext(ctx, "cluster invalidation incomplete", "event", id, "err", err)
	}
}

// eventRecord is the record amexd sends to addEvent, with the seeded
// records' field order and types: id and userId numbers, details left out
// when empty.
func eventRecord(id string, ev NewEvent) ([]byte, error) {
	idJSON := json.RawMessage(strconv.Quote(id))
	if _, ok := altKey(id); ok {
		idJSON = json.RawMessage(id)
	}
	b, err := json.Marshal(struct {
		ID      json.RawMessage `json:"id"`
		Name    string          `json:"name"`
		UserID  int             `json:"userId"`
		Details string          `json:"details,omitempty"`
	}{idJSON, ev.Name, ev.UserID, ev.Details})
	if err != nil {
		return nil, fmt.Errorf("encode event record: %w", err)
	}
	return b, nil
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

// maxEventKey bounds an event key in a path.
const maxEventKey = 128

// ParseEventID checks an event path segment, an event's key: "event-1", or
// the id a writer chose, such as 1733071234567. Keys are kept as given:
// printable ASCII without spaces, at most 128 bytes.
func ParseEventID(s string) (string, error) {
	ok := s != "" && len(s) <= maxEventKey
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] < 0x7f
	}
	if !ok {
		return "", invalid("invalid_id", "id", "event id %q must be an event key such as event-1 or 1733071234567 (printable ASCII, at most %d bytes)", truncate(s), maxEventKey)
	}
	return s, nil
}

func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
