package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/idempotency"
	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/ratelimit"
)

// ensureTable creates the shared rate-limit table the first time a
// configuration needs it (the shared store, or Redis's local fallback), and
// the idempotency table the first time one keeps Idempotency-Keys on this
// machine; each then lives as long as the supervisor, so counters and keys
// survive reloads.
func (s *Supervisor) ensureTable(cfg config.Config) error {
	if err := s.idem.ensure(cfg); err != nil {
		return err
	}
	if !cfg.RateLimit.UsesTable() || s.tableFile != nil {
		return nil
	}
	table, f, err := ratelimit.CreateTable(cfg.RateLimit.TableSlots)
	if err != nil {
		return fmt.Errorf("create shared rate-limit table: %w", err)
	}
	s.useTable(table, f)
	return nil
}

// useTable keeps the shared rate-limit table, created here or inherited
// across a re-execution, and exports its gauges.
func (s *Supervisor) useTable(table *ratelimit.Table, f *os.File) {
	s.table, s.tableFile = table, f
	slots := table.Stats().Slots
	s.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "amexd_ratelimit_table_slots",
			Help: "Slots of the shared rate-limit table (ratelimit.table_slots).",
		}, func() float64 { return float64(slots) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "amexd_ratelimit_table_used_slots",
			Help: "Slots of the shared rate-limit table holding a live window.",
		}, func() float64 { return float64(table.Stats().Used) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "amexd_ratelimit_table_overflow_total",
			Help: "Requests whose client found no slot in the full shared table and was limited by its overflow sketch.",
		}, func() float64 { return float64(table.Full()) }),
	)
}

// rateLimitStatus describes the shared table, nil when there is none.
func (s *Supervisor) rateLimitStatus() *operator.RateLimitStatus {
	if s.table == nil {
		return nil
	}
	st := s.table.Stats()
	return &operator.RateLimitStatus{TableSlots: st.Slots, TableUsed: st.Used, TableOverflow: st.Full}
}

// idempotencyTable is the memfd of the Idempotency-Key table every worker
// maps as fd 6. The supervisor never reads it: it only keeps the file, so
// that keys outlive workers; an upgrade hands the file to the new binary
// like the rate-limit table's.
type idempotencyTable struct {
	file *os.File
}

func (t *idempotencyTable) ensure(cfg config.Config) error {
	if cfg.RateLimit.Store == ratelimit.StoreRedis || t.file != nil {
		return nil
	}
	table, f, err := idempotency.NewTable(cfg.Idempotency)
	if err != nil {
		return fmt.Errorf("create idempotency table: %w", err)
	}
	_ = table.Close() // the workers map it; the file keeps it alive
	t.file = f
	return nil
}

func (t *idempotencyTable) close() {
	if t.file != nil {
		t.file.Close()
	}
}

// simServer is the embedded Event API simulator, one for the whole cluster.
type simServer struct {
	srv *http.Server
	ln  *net.TCPListener
	url string
}

// startSimulator serves the simulator on ln, or on a fresh loopback port
// when ln is nil.
func startSimulator(cfg eventapi.SimConfig, ln net.Listener) (*simServer, error) {
	sim, err := eventapi.NewSimulator(cfg)
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
