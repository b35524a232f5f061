package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/ratelimit"
)

// ensureTable creates the shared rate-limit table the first time a
// configuration asks for the shared store; it then lives as long as the
// supervisor, so counters survive reloads.
func (s *Supervisor) ensureTable(cfg config.Config) error {
	if cfg.RateLimit.Store != ratelimit.StoreShared || s.tableFile != nil {
		return nil
	}
	table, f, err := ratelimit.CreateTable(cfg.RateLimit.TableSlots)
	if err != nil {
		return fmt.Errorf("create shared rate-limit table: %w", err)
	}
	s.table, s.tableFile = table, f
	return nil
}

// simServer is the embedded Event API simulator, one for the whole cluster.
type simServer struct {
	srv *http.Server
	url string
}

func startSimulator(cfg eventapi.SimConfig) (*simServer, error) {
	sim, err := eventapi.NewSimulator(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded simulator: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedded simulator: %w", err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &simServer{srv: srv, url: "http://" + ln.Addr().String()}, nil
}

func (s *simServer) close() { _ = s.srv.Close() }
