// Command eventapi runs the upstream Event API simulator on its own, for
// benchmarks and fault tests against a separate process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/simulator"
)

// shutdownTimeout bounds how long in-flight requests (a slow getEventById
// among them) may take to finish after a signal.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "eventapi:", err)
		os.Exit(2)
	}
}

// run serves the simulator until ctx ends. It prints "listening on ADDR"
// to stdout once the listener is open, and logs JSON lines to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eventapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: eventapi [flags]\n\n"+
			"Serves the Event API simulator: /getUsers, /getUserById/{id}, /getEvents,\n"+
			"/getEventById/{id}, /addEvent, plus /stats, /stats/reset and /admin/config.\n"+
			"Durations are Go durations (500ms, 1s).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cfg := simulator.DefaultConfig()
	listen := fs.String("listen", "127.0.0.1:4000", "address to listen on (port 0 picks a free one)")
	fs.DurationVar(&cfg.EventDelay, "event-delay", cfg.EventDelay, "how long getEventById waits before answering")
	fs.IntVar(&cfg.AddOK, "add-ok", cfg.AddOK, "addEvent calls that succeed in each failure cycle")
	fs.IntVar(&cfg.AddFail, "add-fail", cfg.AddFail, "addEvent calls that then answer 503 in each cycle (0: never fail)")
	fs.DurationVar(&cfg.AddFailDelay, "add-fail-delay", cfg.AddFailDelay, "how long a failing addEvent waits before its 503")
	fs.Float64Var(&cfg.ListErrorRate, "list-error-rate", cfg.ListErrorRate, "probability in [0,1] that getUsers/getEvents drop the connection")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed for dropped connections (0: random)")
	fs.IntVar(&cfg.PreloadUser, "preload-user", cfg.PreloadUser, "seed user (1..3) given extra events at start (0: none)")
	fs.IntVar(&cfg.PreloadEvents, "preload-events", cfg.PreloadEvents, "number of extra events for -preload-user")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil))
	sim, err := simulator.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	log.Info("eventapi started", "addr", ln.Addr().String(), "pid", os.Getpid(),
		"event_delay", cfg.EventDelay.String(), "add_ok", cfg.AddOK, "add_fail", cfg.AddFail,
		"add_fail_delay", cfg.AddFailDelay.String(), "list_error_rate", cfg.ListErrorRate,
		"seed", cfg.Seed, "preload_user", cfg.PreloadUser, "preload_events", cfg.PreloadEvents)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests still running past the timeout are cut off.
		srv.Close()
		log.Warn("eventapi stopped", "addr", ln.Addr().String(), "err", err)
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("eventapi stopped", "addr", ln.Addr().String())
	return nil
}
