package control

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestRequests(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	reqs := NewRequests(NewCodec(a))
	peer := NewCodec(b)

	// Answered: the reply with the request's ID comes back.
	done := make(chan Message, 1)
	go func() {
		m, err := reqs.Do(context.Background(), Message{Type: TypeSnapshot})
		if err != nil {
			t.Error(err)
		}
		done <- m
	}()
	m, err := peer.Receive()
	if err != nil || m.Type != TypeSnapshot || m.ID == 0 {
		t.Fatalf("peer got %+v, %v", m, err)
	}
	reqs.Deliver(Message{Type: TypeStats, ID: m.ID + 100}) // nobody waits for this one
	reqs.Deliver(Message{Type: TypeStats, ID: m.ID})
	if got := <-done; got.Type != TypeStats || got.ID != m.ID {
		t.Errorf("answer %+v, want stats with ID %d", got, m.ID)
	}

	// Context ends first.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := reqs.Do(ctx, Message{Type: TypeSnapshot}); errc <- err }()
	if _, err := peer.Receive(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v, want context.Canceled", err)
	}

	// Closed while waiting, and afterwards.
	go func() { _, err := reqs.Do(context.Background(), Message{Type: TypeSnapshot}); errc <- err }()
	if _, err := peer.Receive(); err != nil {
		t.Fatal(err)
	}
	reqs.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("waiting request after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the waiting request")
	}
	if _, err := reqs.Do(context.Background(), Message{Type: TypeSnapshot}); !errors.Is(err, ErrClosed) {
		t.Errorf("request after Close: %v, want ErrClosed", err)
	}
}
