package bench

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/amexd/amexd/internal/simulator"
)

// Upstream is an Event API simulator served on a fixed 127.0.0.1 port
// that can be stopped and started again on the same port, as an upstream
// that goes away and comes back. Its state lives in Sim and survives a stop.
type Upstream struct {
	// Sim is the simulator behind the server; change its knobs with Update.
	Sim  *simulator.Simulator
	addr string

	mu     sync.Mutex
	srv    *http.Server
	served chan error
}

// StartUpstream starts a simulator with cfg on a free 127.0.0.1 port.
func StartUpstream(cfg simulator.Config) (*Upstream, error) {
	sim, err := simulator.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	u := &Upstream{Sim: sim, addr: ln.Addr().String()}
	u.serve(ln)
	return u, nil
}

// URL is the upstream's base URL; it does not change across restarts.
func (u *Upstream) URL() string { return "http://" + u.addr }

// Start serves again on the same port. Starting a running upstream is an
// error, and so is a port another process took meanwhile.
func (u *Upstream) Start() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		return fmt.Errorf("start upstream %s: already running", u.addr)
	}
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		return fmt.Errorf("start upstream again: %w", err)
	}
	u.serveLocked(ln)
	return nil
}

func (u *Upstream) serve(ln net.Listener) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.serveLocked(ln)
}

func (u *Upstream) serveLocked(ln net.Listener) {
	u.srv = &http.Server{Handler: u.Sim, ReadHeaderTimeout: 5 * time.Second}
	u.served = make(chan error, 1)
	srv, served := u.srv, u.served
	go func() { served <- srv.Serve(ln) }()
}

// Stop closes the listener and every connection at once, requests in
// flight included, like a crashed upstream. Stopping a stopped upstream
// does nothing.
func (u *Upstream) Stop() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv == nil {
		return nil
	}
	err := u.srv.Close()
	if served := <-u.served; !errors.Is(served, http.ErrServerClosed) {
		err = errors.Join(err, served)
	}
	u.srv = nil
	if err != nil {
		return fmt.Errorf("stop upstream: %w", err)
	}
	return nil
}

// Close stops the upstream for good.
func (u *Upstream) Close() error { return u.Stop() }
