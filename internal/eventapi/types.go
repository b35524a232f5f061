// Package eventapi describes the upstream Event API that amexd fronts: its
// paths and wire types. Its simulator is internal/simulator.
package eventapi

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Paths of the upstream Event API. ID-taking paths end with the ID.
const (
	PathUsers     = "/getUsers"
	PathUserByID  = "/getUserById/"
	PathEvents    = "/getEvents"
	PathEventByID = "/getEventById/"
	PathAddEvent  = "/addEvent"
)

// User is a user record as the Event API stores it. A user is found by its
// key (the path segment of getUserById), which need not equal ID: the
// original data has user 3 say "id": 2. Events lists the keys of the user's
// events in the order they were added, each a JSON string ("event-1") or
// whatever a writer sent as the event's id (the original backend sent
// numbers). amexd itself relays records as raw JSON; this type is for
// reading the fields it needs and for tests.
type User struct {
	UserName string            `json:"userName"`
	ID       json.RawMessage   `json:"id"`
	Email    string            `json:"email"`
	Events   []json.RawMessage `json:"events"`
}

// Event is an event record as the Event API stores it: the body its writer
// sent to addEvent, stored under that body's id. ID is whatever the writer
// chose (every seeded event says 1) and is not the key the seeded events are
// found by ("event-1"...). UserID names the user, as a number or a string.
type Event struct {
	ID      json.RawMessage `json:"id"`
	Name    string          `json:"name"`
	UserID  json.RawMessage `json:"userId"`
	Details string          `json:"details,omitempty"`
}

// Outcome is addEvent's answer body: {"success": true} when the event was
// stored, {"success": false, "error": ..., "message": ...} with a 503 when
// the API is overloaded. A success carries no record.
type Outcome struct {
	Success bool   `json:"success"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// Error is the body the simulator sends with its own 4xx answers (a bad
// path or method, a bad /admin/config).
type Error struct {
	Error string `json:"error"`
}

// KeyOf returns the key a JSON value names an event or a user by, as the
// Event API's store turns it into a property name: a string's content, or
// a number's text. Anything else (null, an object...) is no key.
func KeyOf(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	case c == '-' || c >= '0' && c <= '9':
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		if i, err := n.Int64(); err == nil {
			return strconv.FormatInt(i, 10), true
		}
		return n.String(), true
	}
	return "", false
}
