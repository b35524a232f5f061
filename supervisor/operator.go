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
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// opServer serves the operator API on the unix socket and, when configured,
// the metrics on TCP.
type opServer struct {
	path    string
	srv     *http.Server
	metrics *http.Server
}

func startOperator(s *Supervisor, cfg config.Config) (*opServer, error) {
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
	ln, err := listenUnix(path, gid)
	if err != nil {
		return nil, err
	}
	op := &opServer{path: path}
	op.srv = &http.Server{
		Handler:           s.operatorHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	guarded := &credListener{Listener: ln, allow: peerPolicy{uid: os.Getuid(), gid: gid}, log: s.log}
	go func() { _ = op.srv.Serve(guarded) }()

	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			op.close()
			return nil, fmt.Errorf("metrics_addr: %w", err)
		}
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

func (s *Supervisor) operatorHandler() http.Handler {
	mux := http.NewServeMux()
	operator.Handle(mux, operator.GetStatus, func(*http.Request, operator.None) (operator.Status, error) { return s.status(), nil })
	operator.Handle(mux, operator.GetWorkers, func(*http.Request, operator.None) (operator.Workers, error) {
		return operator.Workers{Workers: s.workers()}, nil
	})
	operator.Handle(mux, operator.GetBreakers, func(*http.Request, operator.None) (control.ClusterStatus, error) { return s.clusterStatus(), nil })
	operator.Handle(mux, operator.GetHealth, func(*http.Request, operator.None) (operator.Health, error) { return s.healthReport(), nil })
	mux.HandleFunc("GET "+operator.PathMetrics, s.serveMetrics)
	mux.HandleFunc("GET "+operator.PathProfile, s.serveProfile)
	operator.Handle(mux, operator.PostReload, func(r *http.Request, _ operator.None) (operator.Reloaded, error) {
		began := time.Now()
		gen, err := s.Reload(r.Context())
		switch {
		case errors.Is(err, ErrReloadInProgress):
			return operator.Reloaded{}, operator.WithStatus(http.StatusConflict, err)
		case errors.Is(err, ErrRefused):
			return operator.Reloaded{}, operator.WithStatus(http.StatusBadRequest, err)
		case err != nil:
			return operator.Reloaded{}, err
		}
		return operator.Reloaded{Generation: gen, DurationMs: time.Since(began).Milliseconds()}, nil
	})
	operator.Handle(mux, operator.PostBreakersReset, func(r *http.Request, in operator.BreakerReset) (operator.BreakersReset, error) {
		if q := r.URL.Query().Get("name"); q != "" {
			in.Name = q
		}
		var names []string
		if in.Name != "" {
			names = []string{in.Name}
		}
		return operator.BreakersReset{Reset: s.resetBreakers(names), Workers: len(s.live(nil))}, nil
	})
	operator.Handle(mux, operator.PostCachePurge, func(*http.Request, operator.None) (operator.Purged, error) {
		return operator.Purged{Workers: s.purge()}, nil
	})
	return mux
}

// serveProfile relays a pprof profile from one slot's worker, over its
// control channel: profiles never reach the public port.
func (s *Supervisor) serveProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	slot, err := strconv.Atoi(q.Get("slot"))
	if err != nil {
		operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: slot %q: want a number", q.Get("slot"))))
		return
	}
	kind := q.Get("kind")
	seconds := 0
	if kind == "cpu" {
		if seconds, err = strconv.Atoi(q.Get("seconds")); err != nil || seconds < 1 {
			operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: seconds %q: want a positive number", q.Get("seconds"))))
			return
		}
	}
	s.mu.Lock()
	var p *proc
	if slot >= 0 && slot < len(s.slots) {
		p = s.slots[slot].cur
	}
	s.mu.Unlock()
	if p == nil {
		operator.WriteError(w, operator.WithStatus(http.StatusNotFound, fmt.Errorf("pprof: no worker in slot %d (slots 0 to %d)", slot, len(s.slots)-1)))
		return
	}
	m, err := s.request(r.Context(), p, control.Message{Type: control.TypeProfile, Profile: &control.ProfileRequest{Kind: kind, Seconds: seconds}})
	switch {
	case err != nil:
		operator.WriteError(w, operator.WithStatus(http.StatusServiceUnavailable, fmt.Errorf("pprof: %w", err)))
		return
	case m.Error != "":
		operator.WriteError(w, operator.WithStatus(http.StatusBadRequest, fmt.Errorf("pprof: worker %d: %s", p.pid, m.Error)))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(m.Data)
}

func (s *Supervisor) healthReport() operator.Health {
	ok, reason := s.health()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := operator.Health{Healthy: ok, Slots: len(s.slots), Reason: reason}
	for _, sl := range s.slots {
		if sl.cur != nil && sl.cur.state == stateReady {
			h.Serving++
		}
	}
	return h
}

func (s *Supervisor) status() operator.Status {
	ok, reason := s.health()
	s.mu.Lock()
	st := operator.Status{
		PID: os.Getpid(), Version: version(), StartedAt: s.started,
		UptimeSeconds: time.Since(s.started).Seconds(), Generation: s.gen,
		Healthy: ok, Reason: reason, Config: s.cfg.Summary(),
	}
	if len(s.listeners) > 0 {
		st.Listen = s.listeners[0].addr
	}
	s.mu.Unlock()
	st.Workers = s.workers()
	st.RateLimit = s.rateLimitStatus()
	return st
}

// workers describes each slot's current worker.
func (s *Supervisor) workers() []operator.WorkerInfo {
	s.mu.Lock()
	out := make([]operator.WorkerInfo, 0, len(s.slots))
	for _, sl := range s.slots {
		wi := operator.WorkerInfo{Slot: sl.index, State: "down", Generation: sl.gen, Restarts: sl.restarts, Degraded: sl.degraded, QueueDepth: -1, QueueBacklog: -1}
		if p := sl.cur; p != nil {
			wi.PID, wi.State, wi.Generation = p.pid, p.state, p.gen
			wi.UptimeSeconds = time.Since(p.started).Seconds()
			wi.LastHeartbeat = p.lastBeat
			wi.Requests, wi.Inflight = p.stats.Requests, p.stats.Inflight
			wi.Cache, wi.LimiterRejections = p.stats.Cache, p.stats.LimiterRejections
		}
		out = append(out, wi)
	}
	s.mu.Unlock()
	for i := range out {
		if depth, backlog, err := s.slots[i].ln.queue(); err == nil {
			out[i].QueueDepth, out[i].QueueBacklog = int64(depth), int64(backlog)
		}
	}
	return out
}

// Version is amexd's version as /status reports it. Release builds set it
// with -ldflags "-X github.com/amexd/amexd/supervisor.Version=v1.2.3"; it is
// never changed at run time.
var Version = "dev"

// version is Version plus the VCS revision the binary was built from.
func version() string {
	v := Version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}

func sortWorkers(ws []control.WorkerBreakers) {
	slices.SortFunc(ws, func(a, b control.WorkerBreakers) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.PID - b.PID
	})
}
