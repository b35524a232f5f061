package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/amexd/amexd/internal/bridge"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/reuseport"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// Supervisor is the supervisor as the goroutines around the owner loop see
// it: operator requests, jobs (reload, upgrade, rollback, scale, recycle),
// invalidation fan-outs and the cluster bridge. Its fields are set before
// the loop starts and are safe for concurrent use. The slots, the processes
// and what a reload or a scaling changes are the owner's (owner.go): this
// side reaches them only with ask and tell.
type Supervisor struct {
	log     *slog.Logger
	src     config.Source
	metrics *supervisorMetrics
	agg     *slotmetrics.Aggregator
	bridge  *bridge.Bridge // relays to other machines when Redis is the shared store
	redis   redisconn.Clients
	op      *opServer
	in      inbox
}

// inbox is the owner loop's input: how every other goroutine reaches it.
type inbox struct {
	exits chan exit
	msgs  chan procMsg
	cmds  chan func(*owner)
	done  chan struct{} // closed once the loop has returned
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
		metrics: newSupervisorMetrics(),
		agg:     slotmetrics.New(),
		in: inbox{
			exits: make(chan exit),
			msgs:  make(chan procMsg, 256),
			cmds:  make(chan func(*owner)),
			done:  make(chan struct{}),
		},
	}
	o := &owner{
		log: log, notify: notifier{log: log}, metrics: s.metrics, agg: s.agg, start: start, in: s.in, off: s,
		started: time.Now(), procs: map[*proc]struct{}{}, transfers: map[uint64]*transfer{},
	}
	defer o.closeResources()
	defer s.stopServing()
	hs, err := takeHandover()
	if err != nil {
		return err
	}
	var ln, mln net.Listener // the operator's, when inherited
	if hs != nil {
		ln, mln, err = o.adopt(hs, cfg)
	} else {
		err = o.open(cfg)
	}
	if err != nil {
		return err
	}
	if err := s.startServing(o.cfg, ln, mln); err != nil {
		return err
	}
	o.bridge, o.op = s.bridge, s.op
	log.Info("supervisor: started", "pid", os.Getpid(), "workers", len(o.listeners), "listen", o.listeners[0].Addr,
		"socket", s.op.api.Path(), "upstream", o.cfg.Upstream.URL)
	if hs != nil {
		log.Info("supervisor: took over after re-executing", "pid", os.Getpid(), "version", version(), "generation", o.gen, "workers", len(hs.Workers))
	}
	err = o.loop(ctx, sigs)
	close(s.in.done)
	o.jobs.Wait()
	return err
}

// open creates everything the workers inherit or use, and the slots.
func (o *owner) open(cfg config.Config) error {
	n := cfg.WorkerCount()
	var err error
	if o.listeners, err = reuseport.Open(cfg.Listen, n); err != nil {
		return err
	}
	if err := o.ensureTable(cfg); err != nil {
		return err
	}
	if cfg, err = o.resolveUpstream(cfg); err != nil {
		return err
	}
	o.setUp(cfg, 1, n)
	return nil
}

// setUp gives the owner its configuration, generation and slots.
func (o *owner) setUp(cfg config.Config, gen, slots int) {
	o.cfg, o.gen = cfg, gen
	o.every = clamp(cfg.Supervisor.HeartbeatInterval/4, 20*time.Millisecond, time.Second)
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		o.watchdog = wd
		o.every = min(o.every, wd/4)
	}
	for i := range slots {
		o.openSlot(cfg, gen)
		// A slot's restart counter exists from the start at 0, so that
		// rate() and increase() see its first restart.
		o.metrics.restarts.WithLabelValues(strconv.Itoa(i))
	}
}

// startServing starts the cluster bridge and the operator socket (on ln
// and mln when inherited).
func (s *Supervisor) startServing(cfg config.Config, ln, mln net.Listener) error {
	var err error
	for _, w := range cfg.Warnings() {
		s.log.Warn("supervisor: configuration: " + w)
	}
	if cfg.RateLimit.Store == ratelimit.StoreRedis {
		forced := func(name, state string) { s.in.tell(func(o *owner) { o.forceBreaker(nil, name, state) }) }
		resync := func() { s.in.tell(func(o *owner) { o.purge() }) }
		rdb, err := s.redis.Get(cfg.Redis)
		if err != nil {
			return fmt.Errorf("cluster bridge: %w", err)
		}
		if s.bridge, err = bridge.Start(rdb, s.log, s.invalidateLocal, forced, resync); err != nil {
			return err
		}
	}
	s.op, err = startOperator(s, cfg, ln, mln)
	return err
}

// stopServing closes what startServing started.
func (s *Supervisor) stopServing() {
	if s.op != nil {
		s.op.close()
	}
	if s.bridge != nil {
		s.bridge.Close()
	}
	_ = s.redis.Close()
}

// closeResources closes what the workers inherited or used, once the loop
// and its jobs have ended.
func (o *owner) closeResources() {
	if o.sim != nil {
		o.sim.close()
	}
	for _, ln := range o.listeners {
		ln.File.Close()
	}
	if o.table != nil {
		o.table.Close()
	}
	if o.tableFile != nil {
		o.tableFile.Close()
	}
	o.idem.close()
}
