package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/operator"
)

// opServer serves the operator API on the unix socket and, when configured,
// the metrics on TCP.
type opServer struct {
	api       *operator.Server
	metrics   *http.Server
	metricsLn *net.TCPListener
}

// startOperator serves the operator socket, on ln when a re-executed
// supervisor inherited it, and metrics_addr, on mln likewise.
func startOperator(s *Supervisor, cfg config.Config, ln, mln net.Listener) (*opServer, error) {
	gid := -1
	if cfg.Control.Group != "" {
		g, err := user.LookupGroup(cfg.Control.Group)
		if err != nil {
			return nil, fmt.Errorf("control.group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("control.group %q: gid %q: %w", cfg.Control.Group, g.Gid, err)
		}
	}
	if ln == nil {
		uln, err := operator.Listen(operator.SocketPath(cfg.Control.Socket), gid)
		if err != nil {
			return nil, err
		}
		ln = uln
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("operator socket: %T is not a unix listener", ln)
	}
	op := &opServer{api: operator.Serve(uln, s.operatorHandler(), operator.PeerPolicy{UID: os.Getuid(), Group: gid}, s.log)}

	if mln == nil && cfg.MetricsAddr != "" {
		var err error
		if mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			op.close()
			return nil, fmt.Errorf("metrics_addr: %w", err)
		}
	}
	if mln != nil {
		op.metricsLn, _ = mln.(*net.TCPListener)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /metrics", s.serveMetrics)
		op.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = op.metrics.Serve(mln) }()
		s.log.Info("supervisor: metrics served", "addr", mln.Addr().String())
	}
	return op, nil
}

func (op *opServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = op.api.Close(ctx)
	if op.metrics != nil {
		_ = op.metrics.Shutdown(ctx)
	}
}
