package worker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/logging"
)

// The descriptors a worker inherits from the supervisor.
const (
	fdListener = 3
	fdControl  = 4
	fdShared   = 5
)

// Main runs a worker process under the supervisor and returns its exit
// code. The supervisor passes the slot's listening socket as fd 3, the
// control socketpair as fd 4 and, for the shared rate-limit store, the
// table as fd 5; the configuration arrives as the first control message.
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
	var cfg config.Config
	if err := json.Unmarshal(wc.Config, &cfg); err != nil {
		return fmt.Errorf("decode configuration from supervisor: %w", err)
	}
	log, err := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	log = log.With("slot", slot, "pid", os.Getpid())
	redis.SetLogger(logging.Printf{L: log.With("component", "go-redis")})

	var shared *os.File
	if cfg.RateLimit.Store == "shared" {
		shared = os.NewFile(fdShared, "ratelimit-table")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	w, err := Build(ctx, cfg, Options{Slot: slot, PID: os.Getpid(), Log: log, Shared: shared, Control: ctl})
	if err != nil {
		return err
	}
	defer w.Close()

	srv := Server(cfg, w.App.Handler(), log)
	conns := trackConns(srv)
	served := make(chan error, 1)
	go func() { served <- serve(srv, ln, cfg.TLS) }()

	drain := make(chan struct{})
	var once sync.Once
	h := handler{Worker: w, drain: func() { once.Do(func() { close(drain) }) }}
	ctlDone := make(chan error, 1)
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	defer stopCtl()
	go func() { ctlDone <- ctl.Serve(ctlCtx, h, cfg.Supervisor.HeartbeatInterval) }()
	if err := ctl.Ready(); err != nil {
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
	// http.Server.Shutdown drops a request it reads after shutdown began,
	// which is the first request of a connection accepted just before the
	// drain. So stop accepting first, answer what every open connection
	// sends with "Connection: close", and shut down once they are gone.
	// Serve returning means every connection it accepted is counted, so
	// none can slip in between the count reaching zero and Shutdown.
	_ = ln.Close()
	select {
	case <-served:
	case <-shutCtx.Done():
	}
	srv.SetKeepAlivesEnabled(false)
	conns.waitIdle(shutCtx)
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("shutdown timed out; in-flight requests cut", "err", err)
		return nil
	}
	log.Info("worker drained", "requests", w.App.Requests())
	return nil
}

func serve(srv *http.Server, ln net.Listener, tls config.TLS) error {
	var err error
	if tls.Enabled() {
		err = srv.ServeTLS(ln, tls.CertFile, tls.KeyFile)
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// connCount tracks a server's open connections, so a draining worker can
// wait for the HTTP/1 ones. HTTP/2 connections are left to Shutdown, which
// ends them gracefully with GOAWAY; they would otherwise stay open for as
// long as the client keeps them.
type connCount struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func trackConns(srv *http.Server) *connCount {
	cc := &connCount{conns: map[net.Conn]struct{}{}}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		switch st {
		case http.StateNew:
			cc.conns[c] = struct{}{}
		case http.StateClosed, http.StateHijacked:
			delete(cc.conns, c)
		}
	}
	return cc
}

// http1 counts the open connections that are not HTTP/2.
func (cc *connCount) http1() int {
	cc.mu.Lock()
	conns := make([]net.Conn, 0, len(cc.conns))
	for c := range cc.conns {
		conns = append(conns, c)
	}
	cc.mu.Unlock()
	n := 0
	for _, c := range conns {
		if tc, ok := c.(*tls.Conn); !ok || tc.ConnectionState().NegotiatedProtocol != "h2" {
			n++
		}
	}
	return n
}

// waitIdle returns once no HTTP/1 connection is open, or when ctx ends.
// HTTP/1 connections end on their own: keep-alives are off by then, so each
// closes after its response, and one that sends nothing is cut by the
// header timeout.
func (cc *connCount) waitIdle(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for cc.http1() > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// handler is the worker's side of the control channel.
type handler struct {
	*Worker
	drain func()
}

func (h handler) Drain() { h.drain() }
