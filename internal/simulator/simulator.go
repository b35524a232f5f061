// Package simulator is an in-memory Event API (internal/eventapi) that
// reproduces the original mock's records, latency and failure modes, with
// every knob configurable: cmd/eventapi serves it alone and the supervisor
// embeds it when no upstream URL is set.
package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
)

// Paths the simulator serves besides the Event API's own.
const (
	PathStats       = "/stats"
	PathStatsReset  = "/stats/reset"
	PathAdminConfig = "/admin/config"
)

// maxBodyBytes bounds request bodies of addEvent and /admin/config.
const maxBodyBytes = 1 << 20

// seedUsers and seedEvents are the original mock's data, keys and records
// alike: every seeded event says "id": 1, and user 3 says "id": 2.
var (
	seedUsers = []struct {
		key    string
		record string
	}{
		{"1", `{"userName":"user1","id":1,"email":"hello@gmail.com","events":["event-1","event-3"]}`},
		{"2", `{"userName":"user2","id":2,"email":"hello2@gmail.com","events":["event-2"]}`},
		{"3", `{"userName":"user3","id":2,"email":"hello3@gmail.com","events":["event-4"]}`},
	}
	seedEvents = []struct {
		key    string
		record string
	}{
		{"event-1", `{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"}`},
		{"event-2", `{"id":1,"name":"Event 2","userId":2,"details":"This is the first event"}`},
		{"event-3", `{"id":1,"name":"Event 1","userId":1,"details":"This is the first event"}`},
		{"event-4", `{"id":1,"name":"Event 4","userId":3,"details":"This is the first event"}`},
	}
)

// Simulator is an in-memory Event API that answers as the original mock
// does: records with its field names, an empty 200 for an unknown user or
// event, addEvent storing whatever body it is given under the body's id,
// with configurable latency and faults. It is an http.Handler serving the
// Event API's paths plus GET /stats, POST /stats/reset and GET/POST
// /admin/config. One Simulator holds one shared state and is safe for
// concurrent use.
//
// Statuses: 200 for every Event API answer but these: 503 for a simulated
// addEvent failure (and a request cancelled while it waits), 500 for an
// addEvent body that is not a JSON object or names no known user (the
// original then stores the event all the same, and so does this), 404 and
// 405 for a path or method the API does not have.
type Simulator struct {
	mux *http.ServeMux

	// mu guards the fault knobs and the state that drives them.
	mu    sync.Mutex
	cfg   Config
	rng   *rand.Rand
	cycle int64 // addEvent calls since the failure cycle (re)started

	// data guards users and events; readers only take it for reading.
	data     sync.RWMutex
	userKeys []string // in key order, as the original lists them
	users    map[string]*eventapi.User
	events   []storedEvent  // in creation order
	byKey    map[string]int // event key -> index in events

	counter counters
}

// storedEvent is an event record, kept as the JSON its writer sent.
type storedEvent struct {
	key    string
	record []byte
}

// New validates cfg and returns a simulator holding the seed data
// plus cfg's preloaded events.
func New(cfg Config) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulator: new: %w", err)
	}
	s := &Simulator{
		cfg:   cfg,
		rng:   newRand(cfg.Seed),
		users: make(map[string]*eventapi.User),
		byKey: make(map[string]int),
	}
	for _, u := range seedUsers {
		var rec eventapi.User
		if err := json.Unmarshal([]byte(u.record), &rec); err != nil {
			return nil, fmt.Errorf("simulator: seed user %s: %w", u.key, err)
		}
		s.userKeys = append(s.userKeys, u.key)
		s.users[u.key] = &rec
	}
	for _, e := range seedEvents {
		s.store(e.key, []byte(e.record))
	}
	preloadUser := strconv.Itoa(cfg.PreloadUser)
	for i := range cfg.PreloadEvents {
		n := len(seedEvents) + i + 1
		key := "event-" + strconv.Itoa(n)
		rec := fmt.Sprintf(`{"id":%d,"name":"Preloaded event %d","userId":%d,"details":"Preloaded at start"}`, n, i+1, cfg.PreloadUser)
		s.store(key, []byte(rec))
		u := s.users[preloadUser]
		u.Events = append(u.Events, json.RawMessage(strconv.Quote(key)))
	}
	s.mux = s.routes()
	return s, nil
}
func newRand(seed int64) *rand.Rand {
	if seed == 0 {
		return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return rand.New(rand.NewPCG(uint64(seed), uint64(seed)))
}

// ServeHTTP answers one request.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Config returns the knobs in force.
func (s *Simulator) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Update changes the knobs at run time: fn edits a copy of the current
// configuration, which replaces it if valid. A new Seed reseeds the random
// source; a change to AddOK or AddFail restarts the failure cycle.
// PreloadUser and PreloadEvents are fixed at start and may not change.
func (s *Simulator) Update(fn func(*Config)) error {
	return s.update(func(c *Config) error { fn(c); return nil }, false)
}

// update is Update with an edit that may fail, and a reseed even when the
// seed is unchanged.
func (s *Simulator) update(edit func(*Config) error, reseed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cfg
	if err := edit(&next); err != nil {
		return fmt.Errorf("simulator: update config: %w", err)
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("simulator: update config: %w", err)
	}
	if next.PreloadUser != s.cfg.PreloadUser || next.PreloadEvents != s.cfg.PreloadEvents {
		return errors.New("simulator: update config: simulator.preload_user and simulator.preload_events are fixed at start")
	}
	if reseed || next.Seed != s.cfg.Seed {
		s.rng = newRand(next.Seed)
	}
	if next.AddOK != s.cfg.AddOK || next.AddFail != s.cfg.AddFail {
		s.cycle = 0
	}
	s.cfg = next
	return nil
}

// ResetStats zeroes every counter and restarts the addEvent failure cycle,
// so a run that begins with a reset sees the same sequence of failures.
func (s *Simulator) ResetStats() {
	s.counter.reset()
	s.mu.Lock()
	s.cycle = 0
	s.mu.Unlock()
}

func (s *Simulator) routes() *http.ServeMux {
	mux := http.NewServeMux()
	routes := []struct {
		method, path string
		handler      http.HandlerFunc
	}{
		{http.MethodGet, eventapi.PathUsers, s.getUsers},
		{http.MethodGet, eventapi.PathUserByID + "{id}", s.getUserByID},
		{http.MethodGet, eventapi.PathEvents, s.getEvents},
		{http.MethodGet, eventapi.PathEventByID + "{id}", s.getEventByID},
		{http.MethodPost, eventapi.PathAddEvent, s.addEvent},
		{http.MethodGet, PathStats, s.getStats},
		{http.MethodPost, PathStatsReset, s.resetStats},
		{http.MethodGet, PathAdminConfig, s.getConfig},
		{http.MethodPost, PathAdminConfig, s.postConfig},
	}
	allowed := make(map[string][]string)
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, rt.handler)
		if rt.method == http.MethodGet {
			allowed[rt.path] = append(allowed[rt.path], http.MethodHead)
		}
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	// A method-less pattern loses to the method one for the allowed methods
	// and so catches the rest, letting 405 and 404 carry JSON bodies too.
	for path, methods := range allowed {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path: %s", r.URL.Path)
	})
	return mux
}

func (s *Simulator) getUsers(w http.ResponseWriter, r *http.Request) {
	s.counter.getUsers.Add(1)
	if s.drop(w) {
		return
	}
	s.data.RLock()
	list := make([]*eventapi.User, len(s.userKeys))
	for i, k := range s.userKeys {
		list[i] = s.users[k]
	}
	body, err := json.Marshal(list)
	s.data.RUnlock()
	writeBody(w, http.StatusOK, body, err)
}

// getUserByID answers the user stored under the key, or an empty 200.
func (s *Simulator) getUserByID(w http.ResponseWriter, r *http.Request) {
	s.counter.getUserByID.Add(1)
	s.data.RLock()
	u, found := s.users[r.PathValue("id")]
	var (
		body []byte
		err  error
	)
	if found {
		body, err = json.Marshal(u)
	}
	s.data.RUnlock()
	if !found {
		writeEmpty(w)
		return
	}
	writeBody(w, http.StatusOK, body, err)
}

func (s *Simulator) getEvents(w http.ResponseWriter, r *http.Request) {
	s.counter.getEvents.Add(1)
	if s.drop(w) {
		return
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	s.data.RLock()
	for i, e := range s.events {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(e.record)
	}
	s.data.RUnlock()
	buf.WriteByte(']')
	writeBody(w, http.StatusOK, buf.Bytes(), nil)
}

// getEventByID waits event_delay, then answers the event stored under the
// key, or an empty 200.
func (s *Simulator) getEventByID(w http.ResponseWriter, r *http.Request) {
	s.counter.getEventByID.Add(1)
	if !wait(r.Context(), s.Config().EventDelay) {
		writeError(w, http.StatusServiceUnavailable, "request cancelled while waiting: %v", context.Cause(r.Context()))
		return
	}
	s.data.RLock()
	var rec []byte
	if i, found := s.byKey[r.PathValue("id")]; found {
		rec = s.events[i].record
	}
	s.data.RUnlock()
	if rec == nil {
		writeEmpty(w)
		return
	}
	writeBody(w, http.StatusOK, rec, nil)
}

// addEvent decides failure before reading the body, so a failing call
// stores nothing whatever it carries. A success stores the body under its
// id, replacing an event stored under the same key, and appends the id to
// its user's events, as the original does; it answers {"success": true}.
func (s *Simulator) addEvent(w http.ResponseWriter, r *http.Request) {
	s.counter.addEvent.Add(1)
	if fail, delay := s.addEventFails(); fail {
		s.counter.failed.Add(1)
		if !wait(r.Context(), delay) {
			writeError(w, http.StatusServiceUnavailable, "request cancelled while waiting: %v", context.Cause(r.Context()))
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, eventapi.Outcome{
			Error:   "Service temporarily unavailable",
			Message: "Event API is experiencing high load",
		})
		return
	}
	var body map[string]json.RawMessage
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err == nil {
		err = json.Unmarshal(raw, &body)
	}
	if err == nil && body == nil {
		err = errors.New("body is null")
	}
	if err != nil {
		s.counter.rejected.Add(1)
		writeError(w, http.StatusInternalServerError, "invalid event body: %v", err)
		return
	}
	var rec bytes.Buffer
	if err := json.Compact(&rec, raw); err != nil {
		s.counter.rejected.Add(1)
		writeError(w, http.StatusInternalServerError, "invalid event body: %v", err)
		return
	}
	key, ok := eventapi.KeyOf(body["id"])
	if !ok {
		key = "undefined" // as the original's store names a missing id
	}
	userKey, ok := eventapi.KeyOf(body["userId"])
	if !ok {
		userKey = "undefined"
	}
	id := body["id"]
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	s.data.Lock()
	replaced := s.store(key, rec.Bytes())
	u, known := s.users[userKey]
	if known {
		u.Events = append(u.Events, id)
	}
	s.data.Unlock()
	switch {
	case !known:
		s.counter.rejected.Add(1)
		writeError(w, http.StatusInternalServerError, "TypeError: Cannot read properties of undefined (reading 'events')")
		return
	case replaced:
		s.counter.replayed.Add(1)
	default:
		s.counter.created.Add(1)
	}
	writeJSON(w, http.StatusOK, eventapi.Outcome{Success: true})
}

// store puts record under key, replacing an event stored there, and
// reports whether it did. The caller holds data for writing (or owns s
// exclusively).
func (s *Simulator) store(key string, record []byte) bool {
	if i, ok := s.byKey[key]; ok {
		s.events[i].record = record
		return true
	}
	s.byKey[key] = len(s.events)
	s.events = append(s.events, storedEvent{key: key, record: record})
	return false
}

// drop hijacks and closes the connection with probability list_error_rate,
// reporting whether it did.
func (s *Simulator) drop(w http.ResponseWriter) bool {
	s.mu.Lock()
	rate := s.cfg.ListErrorRate
	hit := rate >= 1 || (rate > 0 && s.rng.Float64() < rate)
	s.mu.Unlock()
	if !hit {
		return false
	}
	s.counter.dropped.Add(1)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): aborting still sends no response.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
	return true
}

// addEventFails advances the failure cycle by one call and reports whether
// this call fails and how long it waits first.
func (s *Simulator) addEventFails() (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pos := s.cycle
	s.cycle++
	if s.cfg.AddFail == 0 {
		return false, 0
	}
	return pos%int64(s.cfg.AddOK+s.cfg.AddFail) >= int64(s.cfg.AddOK), s.cfg.AddFailDelay
}

func (s *Simulator) getStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Simulator) resetStats(w http.ResponseWriter, r *http.Request) {
	s.ResetStats()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Simulator) getConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, toConfigJSON(s.Config()))
}

// postConfig applies a partial configuration. A seed in the body always
// reseeds, even when unchanged, so a test can replay a drop sequence.
func (s *Simulator) postConfig(w http.ResponseWriter, r *http.Request) {
	var patch configJSON
	if status, err := decodeBody(w, r, &patch); err != nil {
		writeError(w, status, "invalid config: %v", err)
		return
	}
	if err := s.update(patch.apply, patch.Seed != nil); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, toConfigJSON(s.Config()))
}

// wait sleeps for d and reports false if ctx ends first.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// decodeBody reads one JSON value into v. Unknown fields are an error only
// for configuration, where a typo must not pass silently.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if _, strict := v.(*configJSON); strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return http.StatusRequestEntityTooLarge, err
		}
		return http.StatusBadRequest, err
	}
	return 0, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	writeBody(w, status, body, err)
}

// writeBody sends an already encoded body, or a 500 if encoding failed.
func writeBody(w http.ResponseWriter, status int, body []byte, err error) {
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(eventapi.Error{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// writeEmpty is the original's answer for an unknown user or event: a 200
// whose body is empty.
func writeEmpty(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, eventapi.Error{Error: fmt.Sprintf(format, args...)})
}
