package process

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/amexd/amexd/internal/config"
)

// Server returns an http.Server for h with cfg's limits.
func Server(cfg config.Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// idleGrace is how long a draining worker keeps idle keep-alive
// connections open, so that a client about to reuse one gets its answer
// with "Connection: close" instead of a reset.
const idleGrace = time.Second

// stopServing stops srv without dropping a request. http.Server.Shutdown drops a
// request it reads after shutdown began, which is the first request of a
// connection accepted just before the drain, and closing idle keep-alive
// connections races clients sending on them. So: stop accepting and wait
// for Serve to return (every accepted connection is then counted); let the
// open connections finish (the application answers "Connection: close"
// while draining), idle ones for at most idleGrace; then shut down.
func stopServing(ctx context.Context, srv *http.Server, ln net.Listener, served <-chan error, conns *connCount, log *slog.Logger) {
	_ = ln.Close()
	select {
	case <-served:
	case <-ctx.Done():
	}
	conns.wait(ctx, idleGrace)
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown timed out; in-flight requests cut", "err", err)
	}
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

// connCount tracks the state of a server's open connections, so a
// draining worker can wait for the HTTP/1 ones. HTTP/2 connections are left
// to Shutdown, which ends them gracefully with GOAWAY; they would otherwise
// stay open for as long as the client keeps them.
type connCount struct {
	mu    sync.Mutex
	conns map[net.Conn]http.ConnState
}

func trackConns(srv *http.Server) *connCount {
	cc := &connCount{conns: map[net.Conn]http.ConnState{}}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		switch st {
		case http.StateClosed, http.StateHijacked:
			delete(cc.conns, c)
		default:
			cc.conns[c] = st
		}
	}
	return cc
}

// http1 counts the open HTTP/1 connections: all of them, and the idle ones.
func (cc *connCount) http1() (open, idle int) {
	cc.mu.Lock()
	states := make(map[net.Conn]http.ConnState, len(cc.conns))
	for c, st := range cc.conns {
		states[c] = st
	}
	cc.mu.Unlock()
	for c, st := range states {
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			continue
		}
		open++
		if st == http.StateIdle {
			idle++
		}
	}
	return open, idle
}

// wait returns once no HTTP/1 connection is open, or only idle ones once
// grace has passed, or when ctx ends. A connection that sends nothing is
// cut by the header timeout.
func (cc *connCount) wait(ctx context.Context, grace time.Duration) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	graceEnd := time.Now().Add(grace)
	for {
		open, idle := cc.http1()
		if open == 0 || (open == idle && time.Now().After(graceEnd)) {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
