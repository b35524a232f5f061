package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/simulator"
)

// resolveUpstream points an empty upstream URL at the embedded simulator,
// starting it on first use.
func (o *owner) resolveUpstream(cfg config.Config) (config.Config, error) {
	if cfg.Upstream.URL != "" {
		return cfg, nil
	}
	if o.sim == nil {
		sim, err := startSimulator(cfg.Simulator, nil)
		if err != nil {
			return cfg, err
		}
		o.sim = sim
		o.log.Info("supervisor: embedded simulator started", "url", sim.url)
	}
	cfg.Upstream.URL = o.sim.url
	return cfg, nil
}

// simServer is the embedded Event API simulator, one for the whole cluster.
type simServer struct {
	srv *http.Server
	ln  *net.TCPListener
	url string
}

// startSimulator serves the simulator on ln, or on a fresh loopback port
// when ln is nil.
func startSimulator(cfg simulator.Config, ln net.Listener) (*simServer, error) {
	sim, err := simulator.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded simulator: %w", err)
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("embedded simulator: %w", err)
		}
	}
	tln, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("embedded simulator: %T is not a TCP listener", ln)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &simServer{srv: srv, ln: tln, url: "http://" + ln.Addr().String()}, nil
}

func (s *simServer) close() { _ = s.srv.Close() }
