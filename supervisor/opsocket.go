package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/operator"
)

// opServer serves the operator API on the unix socket and, when configured,
// the metrics on TCP.
type opServer struct {
	path      string
	srv       *http.Server
	ln        *net.UnixListener
	metrics   *http.Server
	metricsLn *net.TCPListener
}

// startOperator serves the operator socket, on ln when a re-executed
// supervisor inherited it, and metrics_addr, on mln likewise.
func startOperator(s *Supervisor, cfg config.Config, ln, mln net.Listener) (*opServer, error) {
	path := operator.SocketPath(cfg)
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
		var err error
		if ln, err = listenUnix(path, gid); err != nil {
			return nil, err
		}
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("operator socket: %T is not a unix listener", ln)
	}
	uln.SetUnlinkOnClose(true)
	op := &opServer{path: path, ln: uln}
	op.srv = &http.Server{
		Handler:           s.operatorHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	guarded := &credListener{Listener: ln, allow: peerPolicy{uid: os.Getuid(), gid: gid}, log: s.log}
	go func() { _ = op.srv.Serve(guarded) }()

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
	_ = op.srv.Shutdown(ctx)
	if op.metrics != nil {
		_ = op.metrics.Shutdown(ctx)
	}
	_ = os.Remove(op.path)
}

// listenUnix creates the socket with mode 0660 in a 0750 directory, group
// gid when not -1. A stale socket is replaced; a live one is an error.
func listenUnix(path string, gid int) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("operator socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("operator socket %s: another amexd is running", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale operator socket: %w", err)
	}
	// The umask makes the socket 0660 from the start, not after a chmod.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("operator socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("operator socket group: %w", err)
		}
	}
	return ln, nil
}

// peerPolicy says who may use the operator socket: root, the daemon's own
// uid, and members of gid (when not -1).
type peerPolicy struct {
	uid int
	gid int
}

func (p peerPolicy) allows(uid, gid int, groups []int) bool {
	switch {
	case uid == 0 || uid == p.uid:
		return true
	case p.gid < 0:
		return false
	}
	return gid == p.gid || slices.Contains(groups, p.gid)
}

// credListener checks each connection's peer credentials and answers 403
// to, then closes, connections from peers the policy refuses.
type credListener struct {
	net.Listener
	allow peerPolicy
	log   *slog.Logger
}

const forbidden = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 53\r\n\r\n{\"error\":\"operator socket: permission denied for uid\"}"

func (l *credListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := peerCred(c)
		if err == nil && l.allow.allows(int(cred.Uid), int(cred.Gid), supplementaryGroups(int(cred.Pid))) {
			return c, nil
		}
		l.log.Warn("supervisor: operator connection refused", "uid", cred.Uid, "pid", cred.Pid, "err", err)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte(forbidden))
		c.Close()
	}
}

func peerCred(c net.Conn) (unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return unix.Ucred{}, errors.New("not a unix connection")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, err
	}
	if cerr != nil {
		return unix.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return *cred, nil
}

// supplementaryGroups reads a process's groups from /proc; SO_PEERCRED only
// carries the primary one.
func supplementaryGroups(pid int) []int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return nil
}
