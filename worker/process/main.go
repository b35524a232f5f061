// Package process is a worker process under the supervisor: it inherits
// the slot's listener and the control channel (fds 3 to 6), builds the HTTP
// application (package worker) and its dependencies from the configuration
// the supervisor sends, serves until it is told to drain or signalled, and
// answers the control channel (stats, invalidations, breakers, warm start,
// profiles).
package process

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/ratelimit"
)

// The descriptors a worker inherits from the supervisor.
const (
	fdListener    = 3
	fdControl     = 4
	fdShared      = 5
	fdIdempotency = 6
)

// Main runs a worker process under the supervisor and returns its exit
// code. The supervisor passes the slot's listening socket as fd 3, the
// control socketpair as fd 4, for the shared rate-limit store the table as
// fd 5 and, unless Idempotency-Keys live in Redis, the idempotency table as
// fd 6; the configuration arrives as the first control message.
func Main(args []string) int {
	boot := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("pid", os.Getpid())
	fs := flag.NewFlagSet("amexd worker", flag.ContinueOnError)
	slot := fs.Int("slot", -1, "the worker's slot, given by the supervisor")
	if err := fs.Parse(args); err != nil || *slot < 0 {
		boot.Error("amexd worker is started by the amexd supervisor, not by hand", "args", args)
		return 2
	}
	if err := run(*slot, boot.With("slot", *slot)); err != nil {
		boot.Error("worker failed", "slot", *slot, "err", err)
		return 1
	}
	return 0
}

func run(slot int, boot *slog.Logger) error {
	ln, err := net.FileListener(os.NewFile(fdListener, "listener"))
	if err != nil {
		return fmt.Errorf("inherit listener (fd %d): %w", fdListener, err)
	}
	defer ln.Close()
	conn, err := net.FileConn(os.NewFile(fdControl, "control"))
	if err != nil {
		return fmt.Errorf("inherit control channel (fd %d): %w", fdControl, err)
	}
	ctl := control.NewWorker(conn, boot)
	readCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	wc, err := ctl.ReadConfig(readCtx)
	cancel()
	if err != nil {
		return err
	}
	// What a supervisor of an older version does not know keeps this
	// binary's default until the supervisor runs this version too.
	cfg := config.Default()
	if err := json.Unmarshal(wc.Config, &cfg); err != nil {
		return fmt.Errorf("decode configuration from supervisor: %w", err)
	}
	log, err := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	log = log.With("slot", slot, "pid", os.Getpid())
	redis.SetLogger(logging.Printf{L: log.With("component", "go-redis")})
	setMemoryLimit(cfg.Supervisor.MemoryLimit(), log)

	var shared *os.File
	if cfg.RateLimit.UsesTable() {
		shared = os.NewFile(fdShared, "ratelimit-table")
	}
	idem, err := inheritedIdempotency(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	w, err := Build(ctx, cfg, Options{Slot: slot, PID: os.Getpid(), Log: log, AccessOut: os.Stderr, Shared: shared, Idempotency: idem, Control: ctl})
	if err != nil {
		return err
	}
	defer w.Close()

	drain := make(chan struct{})
	var once sync.Once
	h := handler{Worker: w, drain: func() { once.Do(func() { close(drain) }) }}
	ctlDone := make(chan error, 1)
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	defer stopCtl()
	go func() { ctlDone <- ctl.Serve(ctlCtx, h, cfg.Supervisor.HeartbeatInterval) }()
	// The entries of a warm start come before the first connection is
	// accepted, so that the slot's clients find them.
	if wc.Warm {
		w.awaitWarm(ctx, cfg.Supervisor.Warm.Timeout)
	}

	srv := Server(cfg, w.App.Handler(), log)
	conns := trackConns(srv)
	served := make(chan error, 1)
	go func() { served <- serve(srv, ln, cfg.TLS) }()
	if err := ctl.Ready(w.Stats()); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	log.Info("worker ready", "listen", ln.Addr().String(), "generation", wc.Generation)

	select {
	case <-drain:
		log.Info("draining on the supervisor's request")
	case <-ctx.Done():
		log.Info("draining on a signal")
	case err := <-ctlDone:
		log.Warn("control channel closed; draining", "err", err)
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	w.App.Drain()
	shutCtx, cancelShut := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelShut()
	stopServing(shutCtx, srv, ln, served, conns, log)
	if err := w.CloseAccessLog(); err != nil {
		log.Warn("access log lines lost", "err", err)
	}
	log.Info("worker drained", "requests", w.App.Requests())
	// Tell the supervisor now, not when the process is reaped, that this
	// worker will answer no more control requests.
	_ = conn.Close()
	return nil
}

// setMemoryLimit gives the Go runtime the memory limit that
// supervisor.max_memory implies, unless GOMEMLIMIT set one already.
func setMemoryLimit(limit int64, log *slog.Logger) {
	if limit <= 0 {
		return
	}
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		log.Info("GOMEMLIMIT from the environment kept", "GOMEMLIMIT", env, "max_memory_limit", limit)
		return
	}
	debug.SetMemoryLimit(limit)
}

// inheritedIdempotency returns the supervisor's idempotency table, which
// every worker of this machine shares, unless the keys live in Redis. A
// worker must not fall back to a table of its own here: a retry reaching
// a sibling would then write twice.
func inheritedIdempotency(cfg config.Config) (*os.File, error) {
	if cfg.RateLimit.Store == ratelimit.StoreRedis {
		return nil, nil
	}
	f := os.NewFile(fdIdempotency, "idempotency-table")
	if _, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("inherit idempotency table (fd %d): %w", fdIdempotency, err)
	}
	return f, nil
}
