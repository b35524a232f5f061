// Package eventapi describes the upstream Event API that amexd fronts (its
// paths and wire types) and provides a simulator of it that reproduces the
// original mock's latency and failure modes.
package eventapi

// Paths of the upstream Event API. ID-taking paths end with the ID.
const (
	PathUsers     = "/getUsers"
	PathUserByID  = "/getUserById/"
	PathEvents    = "/getEvents"
	PathEventByID = "/getEventById/"
	PathAddEvent  = "/addEvent"
	PathStats     = "/stats"
)

// User is a user as the Event API returns it. Events lists the IDs of the
// user's events, oldest first.
type User struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	Email  string   `json:"email"`
	Events []string `json:"events"`
}

// Event is an event as the Event API returns and accepts it. IDs have the
// form "event-N" with N a positive integer.
type Event struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	UserID  int    `json:"userId"`
	Details string `json:"details,omitempty"`
}

// Created is addEvent's answer: the original mock's {"success": true}
// and the event as stored.
type Created struct {
	Success bool `json:"success"`
	Event
}

// Error is the body the Event API sends with a non-2xx status.
type Error struct {
	Error string `json:"error"`
}
