package supervisor

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	dto "github.com/prometheus/client_model/go"

	"github.com/amexd/amexd/internal/bridge"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/reuseport"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// Supervisor runs the worker processes of one daemon. Its fields are set
// at start; the slots and processes, and the table and simulator a reload
// may add, belong to the owner loop (owner.go).
type Supervisor struct {
	log     *slog.Logger
	src     config.Source
	started time.Time
	notify  notifier
	metrics *supervisorMetrics
	agg     *slotmetrics.Aggregator
	start   startFunc

	listeners []*reuseport.Listener
	table     *ratelimit.Table
	tableFile *os.File
	idem      idempotencyTable
	sim       *simServer
	bridge    *bridge.Bridge // relays to other machines when Redis is the shared store
	op        *opServer
	// ownOffset holds what this process's own counters counted before it
	// re-executed itself for an upgrade.
	ownOffset map[string]*dto.MetricFamily

	// The owner loop's inputs, and done, closed once it has returned.
	exits chan exit
	msgs  chan procMsg
	cmds  chan func(*owner)
	done  chan struct{}
	jobs  sync.WaitGroup
	// fanOuts counts invalidations being applied, whose acks a hand-over
	// must send before it re-executes.
	fanOuts sync.WaitGroup
}

// Run supervises the daemon's workers until SIGTERM or SIGINT (or ctx's
// end), after which it drains them and returns nil. SIGHUP reloads the
// configuration from src. It returns an error when it cannot start (sockets,
// shared table, simulator) or when no slot could serve for
// cfg.Supervisor.OutageLimit; the workers are killed then.
func Run(ctx context.Context, src config.Source, cfg config.Config, log *slog.Logger) error {
	return run(ctx, src, cfg, log, execStart)
}

func run(ctx context.Context, src config.Source, cfg config.Config, log *slog.Logger, start startFunc) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	s := &Supervisor{
		log:     log,
		src:     src,
		started: time.Now(),
		notify:  notifier{log: log},
		metrics: newSupervisorMetrics(),
		agg:     slotmetrics.New(),
		start:   start,
		exits:   make(chan exit),
		msgs:    make(chan procMsg, 256),
		cmds:    make(chan func(*owner)),
		done:    make(chan struct{}),
	}
	defer s.closeResources()
	o, err := s.openOrAdopt(cfg)
	if err != nil {
		return err
	}
	err = o.loop(ctx, sigs)
	close(s.done)
	s.jobs.Wait()
	return err
}

// openOrAdopt creates everything the workers inherit or use and the owner
// with its slots; after a re-execution it takes them over instead.
func (s *Supervisor) openOrAdopt(cfg config.Config) (*owner, error) {
	hs, err := takeHandover()
	if err != nil {
		return nil, err
	}
	if hs != nil {
		return s.adopt(hs, cfg)
	}
	n := cfg.WorkerCount()
	if s.listeners, err = reuseport.Open(cfg.Listen, n); err != nil {
		return nil, err
	}
	if err := s.ensureTable(cfg); err != nil {
		return nil, err
	}
	if cfg, err = s.resolveUpstream(cfg); err != nil {
		return nil, err
	}
	o := s.newOwner(cfg, 1, n)
	if err := s.startServing(cfg, nil, nil); err != nil {
		return nil, err
	}
	return o, nil
}

func (s *Supervisor) newOwner(cfg config.Config, gen, slots int) *owner {
	o := &owner{Supervisor: s, cfg: cfg, gen: gen, procs: map[*proc]struct{}{}, transfers: map[uint64]*transfer{}}
	o.every = clamp(cfg.Supervisor.HeartbeatInterval/4, 20*time.Millisecond, time.Second)
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		o.watchdog = wd
		o.every = min(o.every, wd/4)
	}
	for i := range slots {
		o.slots = append(o.slots, &slot{index: i, cfg: cfg, gen: gen})
		// A slot's restart counter exists from the start at 0, so that
		// rate() and increase() see its first restart.
		s.metrics.restarts.WithLabelValues(strconv.Itoa(i))
	}
	return o
}

// startServing starts the cluster bridge and the operator socket (on ln
// and mln when inherited).
func (s *Supervisor) startServing(cfg config.Config, ln, mln net.Listener) error {
	var err error
	if cfg.RateLimit.Store == "redis" {
		forced := func(name, state string) { s.tell(func(o *owner) { o.forceBreaker(nil, name, state) }) }
		if s.bridge, err = bridge.Start(cfg.RateLimit.RedisURL, s.log, s.invalidateLocal, forced); err != nil {
			return err
		}
	}
	if s.op, err = startOperator(s, cfg, ln, mln); err != nil {
		return err
	}
	s.log.Info("supervisor: started", "pid", os.Getpid(), "workers", len(s.listeners), "listen", s.listeners[0].Addr,
		"socket", s.op.api.Path(), "upstream", cfg.Upstream.URL)
	return nil
}

func (s *Supervisor) closeResources() {
	if s.op != nil {
		s.op.close()
	}
	if s.bridge != nil {
		s.bridge.Close()
	}
	if s.sim != nil {
		s.sim.close()
	}
	for _, ln := range s.listeners {
		ln.File.Close()
	}
	if s.table != nil {
		s.table.Close()
	}
	if s.tableFile != nil {
		s.tableFile.Close()
	}
	s.idem.close()
}
