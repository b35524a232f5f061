package simulator

import "sync/atomic"

// Stats counts what a Simulator has served since it started or was last
// reset. Each counter is read atomically, the set as a whole is not a
// single snapshot. GET /stats answers it as JSON.
type Stats struct {
	// Calls counts every request per Event API path, failed and dropped
	// ones included.
	Calls CallCounts `json:"calls"`
	// AddEvent splits the addEvent calls by outcome.
	AddEvent AddEventCounts `json:"addEvent"`
	// Dropped counts getUsers and getEvents calls whose connection was
	// closed without a response.
	Dropped int64 `json:"dropped"`
	// Users and Events are the current numbers of users and events; a reset
	// does not change them.
	Users  int `json:"users"`
	Events int `json:"events"`
}

// CallCounts counts requests per Event API path.
type CallCounts struct {
	GetUsers     int64 `json:"getUsers"`
	GetUserByID  int64 `json:"getUserById"`
	GetEvents    int64 `json:"getEvents"`
	GetEventByID int64 `json:"getEventById"`
	AddEvent     int64 `json:"addEvent"`
}

// AddEventCounts splits addEvent calls: Created stored a new event,
// Replayed replaced the event stored under the same key (the body's id sent
// again), Failed was a simulated 503, Rejected a 500 (a body that is not a
// JSON object, or a user that does not exist).
type AddEventCounts struct {
	Created  int64 `json:"created"`
	Replayed int64 `json:"replayed"`
	Failed   int64 `json:"failed"`
	Rejected int64 `json:"rejected"`
}

type counters struct {
	getUsers, getUserByID, getEvents, getEventByID, addEvent atomic.Int64
	created, replayed, failed, rejected                      atomic.Int64
	dropped                                                  atomic.Int64
}

func (c *counters) reset() {
	for _, n := range []*atomic.Int64{
		&c.getUsers, &c.getUserByID, &c.getEvents, &c.getEventByID, &c.addEvent,
		&c.created, &c.replayed, &c.failed, &c.rejected, &c.dropped,
	} {
		n.Store(0)
	}
}

// Stats returns the counters and the current data sizes.
func (s *Simulator) Stats() Stats {
	c := &s.counter
	st := Stats{
		Calls: CallCounts{
			GetUsers:     c.getUsers.Load(),
			GetUserByID:  c.getUserByID.Load(),
			GetEvents:    c.getEvents.Load(),
			GetEventByID: c.getEventByID.Load(),
			AddEvent:     c.addEvent.Load(),
		},
		AddEvent: AddEventCounts{
			Created:  c.created.Load(),
			Replayed: c.replayed.Load(),
			Failed:   c.failed.Load(),
			Rejected: c.rejected.Load(),
		},
		Dropped: c.dropped.Load(),
	}
	s.data.RLock()
	st.Users, st.Events = len(s.users), len(s.events)
	s.data.RUnlock()
	return st
}
