package eventapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths the simulator serves besides the Event API's own.
const (
	PathStatsReset  = "/stats/reset"
	PathAdminConfig = "/admin/config"
)

// maxBodyBytes bounds request bodies of addEvent and /admin/config.
const maxBodyBytes = 1 << 20

const eventIDPrefix = "event-"

// seedUsers and seedEvents are the data every simulator starts with. Event
// IDs are event-1..event-N in order, so users' Events lists follow from
// seedEvents.
var (
	seedUsers = []User{
		{ID: 1, Name: "Alice Martin", Email: "alice@example.com"},
		{ID: 2, Name: "Bob Chen", Email: "bob@example.com"},
		{ID: 3, Name: "Carla Diaz", Email: "carla@example.com"},
	}
	seedEvents = []Event{
		{Name: "Kick-off meeting", UserID: 1, Details: "Project kick-off with the team"},
		{Name: "Design review", UserID: 1, Details: "Review of the architecture"},
		{Name: "Quarterly planning", UserID: 1},
		{Name: "Conference talk", UserID: 2, Details: "Talk on resilient services"},
		{Name: "Team lunch", UserID: 2},
		{Name: "Customer workshop", UserID: 3, Details: "On-site workshop"},
		{Name: "Release party", UserID: 3},
	}
)

// Simulator is an in-memory Event API with configurable latency and faults.
// It is an http.Handler serving the Event API's paths plus GET /stats,
// POST /stats/reset and GET/POST /admin/config. One Simulator holds one
// shared state and is safe for concurrent use.
//
// Statuses: 400 for a malformed ID or body (or a missing name or userId),
// 404 for an unknown user or event (addEvent too answers 404 when userId
// names no user), 405 for a wrong method, 409 when addEvent is given an
// existing ID with different content, 503 for a simulated addEvent failure
// and for a request cancelled while it waits. Error bodies are Error.
type Simulator struct {
	mux *http.ServeMux

	// mu guards the fault knobs and the state that drives them.
	mu    sync.Mutex
	cfg   SimConfig
	rng   *rand.Rand
	cycle int64 // addEvent calls since the failure cycle (re)started

	// data guards users and events; readers only take it for reading.
	data   sync.RWMutex
	users  []User        // users[i].ID == i+1
	events []Event       // in creation order
	byNum  map[int64]int // event number -> index in events
	maxNum int64         // highest event number seen, supplied ones included

	counter counters
}

// NewSimulator validates cfg and returns a simulator holding the seed data
// plus cfg's preloaded events.
func NewSimulator(cfg SimConfig) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("eventapi: new simulator: %w", err)
	}
	s := &Simulator{
		cfg:   cfg,
		rng:   newRand(cfg.Seed),
		byNum: make(map[int64]int),
	}
	for _, u := range seedUsers {
		u.Events = []string{}
		s.users = append(s.users, u)
	}
	for _, e := range seedEvents {
		s.insert(e)
	}
	for i := range cfg.PreloadEvents {
		s.insert(Event{Name: fmt.Sprintf("Preloaded event %d", i+1), UserID: cfg.PreloadUser})
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
func (s *Simulator) Config() SimConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Update changes the knobs at run time: fn edits a copy of the current
// configuration, which replaces it if valid. A new Seed reseeds the random
// source; a change to AddOK or AddFail restarts the failure cycle.
// PreloadUser and PreloadEvents are fixed at start and may not change.
func (s *Simulator) Update(fn func(*SimConfig)) error {
	return s.update(func(c *SimConfig) error { fn(c); return nil }, false)
}

// update is Update with an edit that may fail, and a reseed even when the
// seed is unchanged.
func (s *Simulator) update(edit func(*SimConfig) error, reseed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cfg
	if err := edit(&next); err != nil {
		return fmt.Errorf("eventapi: update config: %w", err)
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("eventapi: update config: %w", err)
	}
	if next.PreloadUser != s.cfg.PreloadUser || next.PreloadEvents != s.cfg.PreloadEvents {
		return errors.New("eventapi: update config: simulator.preload_user and simulator.preload_events are fixed at start")
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
		{http.MethodGet, PathUsers, s.getUsers},
		{http.MethodGet, PathUserByID + "{id}", s.getUserByID},
		{http.MethodGet, PathEvents, s.getEvents},
		{http.MethodGet, PathEventByID + "{id}", s.getEventByID},
		{http.MethodPost, PathAddEvent, s.addEvent},
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
	body, err := json.Marshal(s.users)
	s.data.RUnlock()
	writeBody(w, http.StatusOK, body, err)
}

func (s *Simulator) getUserByID(w http.ResponseWriter, r *http.Request) {
	s.counter.getUserByID.Add(1)
	id, ok := parsePositive(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid user id %q", r.PathValue("id"))
		return
	}
	s.data.RLock()
	var (
		body  []byte
		err   error
		found = id <= int64(len(s.users))
	)
	if found {
		body, err = json.Marshal(s.users[id-1])
	}
	s.data.RUnlock()
	if !found {
		writeError(w, http.StatusNotFound, "user %d not found", id)
		return
	}
	writeBody(w, http.StatusOK, body, err)
}

func (s *Simulator) getEvents(w http.ResponseWriter, r *http.Request) {
	s.counter.getEvents.Add(1)
	if s.drop(w) {
		return
	}
	s.data.RLock()
	body, err := json.Marshal(s.events)
	s.data.RUnlock()
	writeBody(w, http.StatusOK, body, err)
}

// getEventByID waits event_delay before answering anything, a bad ID
// included, as the original mock did.
func (s *Simulator) getEventByID(w http.ResponseWriter, r *http.Request) {
	s.counter.getEventByID.Add(1)
	if !wait(r.Context(), s.Config().EventDelay) {
		writeError(w, http.StatusServiceUnavailable, "request cancelled while waiting: %v", context.Cause(r.Context()))
		return
	}
	raw := r.PathValue("id")
	num, ok := parseEventNumber(raw, true)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid event id %q", raw)
		return
	}
	s.data.RLock()
	i, found := s.byNum[num]
	var ev Event
	if found {
		ev = s.events[i]
	}
	s.data.RUnlock()
	if !found {
		writeError(w, http.StatusNotFound, "event %s%d not found", eventIDPrefix, num)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

// addEvent decides failure before reading the body, so a failing call
// creates nothing whatever it carries.
func (s *Simulator) addEvent(w http.ResponseWriter, r *http.Request) {
	s.counter.addEvent.Add(1)
	if fail, delay := s.addEventFails(); fail {
		s.counter.failed.Add(1)
		if !wait(r.Context(), delay) {
			writeError(w, http.StatusServiceUnavailable, "request cancelled while waiting: %v", context.Cause(r.Context()))
			return
		}
		writeError(w, http.StatusServiceUnavailable, "event API temporarily unavailable")
		return
	}
	var body addEventBody
	if status, err := decodeBody(w, r, &body); err != nil {
		s.counter.rejected.Add(1)
		writeError(w, status, "invalid event: %v", err)
		return
	}
	in, err := body.event()
	if err != nil {
		s.counter.rejected.Add(1)
		writeError(w, http.StatusBadRequest, "invalid event: %v", err)
		return
	}
	status, ev, err := s.create(in)
	switch {
	case err != nil:
		s.counter.rejected.Add(1)
		writeError(w, status, "%v", err)
	case status == http.StatusOK:
		s.counter.replayed.Add(1)
		writeJSON(w, status, Created{Success: true, Event: ev})
	default:
		s.counter.created.Add(1)
		writeJSON(w, status, Created{Success: true, Event: ev})
	}
}

// create stores in and answers 201, or answers 200 with the stored event
// when in replays an existing ID with the same user and name.
func (s *Simulator) create(in Event) (int, Event, error) {
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" {
		return http.StatusBadRequest, Event{}, errors.New("name is required")
	}
	if in.UserID <= 0 {
		return http.StatusBadRequest, Event{}, fmt.Errorf("userId must be a positive integer, got %d", in.UserID)
	}
	var num int64
	if in.ID != "" {
		n, ok := parseEventNumber(in.ID, false)
		if !ok {
			return http.StatusBadRequest, Event{}, fmt.Errorf("id %q is not of the form %sN", in.ID, eventIDPrefix)
		}
		num = n
	}
	s.data.Lock()
	defer s.data.Unlock()
	if in.UserID > len(s.users) {
		return http.StatusNotFound, Event{}, fmt.Errorf("user %d not found", in.UserID)
	}
	if num != 0 {
		if i, ok := s.byNum[num]; ok {
			old := s.events[i]
			if old.UserID != in.UserID || old.Name != in.Name {
				return http.StatusConflict, Event{}, fmt.Errorf("event %s exists with different content", old.ID)
			}
			return http.StatusOK, old, nil
		}
	} else if s.maxNum == math.MaxInt64 {
		return http.StatusConflict, Event{}, errors.New("no free event id left")
	}
	return http.StatusCreated, s.insert(in), nil
}

// insert stores e, assigning the next free ID when e has none. The caller
// holds data for writing (or owns s exclusively) and has checked e.
func (s *Simulator) insert(e Event) Event {
	num, ok := parseEventNumber(e.ID, false)
	if !ok {
		num = s.maxNum + 1
		e.ID = eventIDPrefix + strconv.FormatInt(num, 10)
	}
	s.maxNum = max(s.maxNum, num)
	s.byNum[num] = len(s.events)
	s.events = append(s.events, e)
	u := &s.users[e.UserID-1]
	u.Events = append(u.Events, e.ID)
	return e
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

// parsePositive parses a canonical positive decimal: no sign, no leading zero.
func parsePositive(s string) (int64, bool) {
	if s == "" || s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// parseEventNumber returns N from "event-N", or from a bare "N" when bare
// is true.
func parseEventNumber(s string, bare bool) (int64, bool) {
	digits, prefixed := strings.CutPrefix(s, eventIDPrefix)
	if !prefixed && !bare {
		return 0, false
	}
	return parsePositive(digits)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	writeBody(w, status, body, err)
}

// writeBody sends an already encoded body, or a 500 if encoding failed.
func writeBody(w http.ResponseWriter, status int, body []byte, err error) {
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(Error{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, Error{Error: fmt.Sprintf(format, args...)})
}
