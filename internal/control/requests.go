package control

import (
	"context"
	"sync"
	"sync/atomic"
)

// Sender sends one message; a *Codec is one.
type Sender interface {
	Send(m Message) error
}

// Requests pairs the requests one side sends with their answers: each
// request gets a fresh ID, and the reader of the channel hands every
// answer to Deliver.
type Requests struct {
	codec  Sender
	nextID atomic.Uint64

	mu     sync.Mutex
	waits  map[uint64]chan Message
	closed bool
}

// NewRequests returns a Requests sending with c.
func NewRequests(c Sender) *Requests {
	return &Requests{codec: c, waits: map[uint64]chan Message{}}
}

// Do sends m under a fresh ID and waits for the answer carrying it. It
// returns ErrClosed when the channel closes first (or had closed), and
// ctx's error when ctx ends first.
func (r *Requests) Do(ctx context.Context, m Message) (Message, error) {
	m.ID = r.nextID.Add(1)
	ch := make(chan Message, 1)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return Message{}, ErrClosed
	}
	r.waits[m.ID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waits, m.ID)
		r.mu.Unlock()
	}()
	if err := r.codec.Send(m); err != nil {
		return Message{}, err
	}
	select {
	case reply, ok := <-ch:
		if !ok {
			return Message{}, ErrClosed
		}
		return reply, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Deliver hands an answer to the request waiting for its ID, if any.
func (r *Requests) Deliver(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch := r.waits[m.ID]; ch != nil {
		ch <- m // buffered for one answer; a duplicate is dropped below
		delete(r.waits, m.ID)
	}
}

// Close fails every waiting and future request with ErrClosed.
func (r *Requests) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, ch := range r.waits {
		close(ch)
		delete(r.waits, id)
	}
}
