package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PeerPolicy says who may use the operator socket: root, the daemon's own
// uid, and members of Group (when not -1).
type PeerPolicy struct {
	UID   int
	Group int
}

// Allows reports whether a peer with uid, primary gid and supplementary
// groups may use the socket.
func (p PeerPolicy) Allows(uid, gid int, groups []int) bool {
	switch {
	case uid == 0 || uid == p.UID:
		return true
	case p.Group < 0:
		return false
	}
	return gid == p.Group || slices.Contains(groups, p.Group)
}

// Listen creates the operator socket at path with mode 0660 in a 0750
// directory, group gid when not -1. A stale socket is replaced; a live one
// is an error.
func Listen(path string, gid int) (*net.UnixListener, error) {
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
	uln := ln.(*net.UnixListener)
	uln.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			uln.Close()
			return nil, fmt.Errorf("operator socket group: %w", err)
		}
	}
	return uln, nil
}

// Server serves the operator API on a unix listener to the peers its
// policy allows; every other peer's request is answered 403 and its
// connection closed.
type Server struct {
	srv *http.Server
	ln  *net.UnixListener
}

// peerKey is the context key of a connection's verdict (a peerVerdict).
type peerKey struct{}

type peerVerdict struct {
	allowed bool
	uid     uint32
}

// Serve starts serving h on ln, checking each connection's peer
// credentials against p; refusals are logged to log.
func Serve(ln *net.UnixListener, h http.Handler, p PeerPolicy, log *slog.Logger) *Server {
	ln.SetUnlinkOnClose(true)
	s := &Server{ln: ln}
	s.srv = &http.Server{
		Handler:           guard(h),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cred, err := peerCred(c)
			v := peerVerdict{uid: cred.Uid, allowed: err == nil && p.Allows(int(cred.Uid), int(cred.Gid), supplementaryGroups(int(cred.Pid)))}
			if !v.allowed {
				log.Warn("operator: connection refused", "uid", cred.Uid, "pid", cred.Pid, "err", err)
			}
			return context.WithValue(ctx, peerKey{}, v)
		},
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s
}

// Listener is the socket the server serves, to hand over on re-exec.
func (s *Server) Listener() *net.UnixListener { return s.ln }

// Path is the socket's path.
func (s *Server) Path() string { return s.ln.Addr().String() }

// Close stops serving within ctx and removes the socket.
func (s *Server) Close(ctx context.Context) error {
	path := s.Path()
	err := s.srv.Shutdown(ctx)
	if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && err == nil {
		err = fmt.Errorf("remove operator socket: %w", rmErr)
	}
	return err
}

// guard answers a refused peer's request with Refuse instead of h.
func guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(peerKey{}).(peerVerdict)
		if !v.allowed {
			Refuse(w, v.uid)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Refuse is the answer to a peer the policy does not allow: 403 with
// {"error": ...}, and the connection closed after it.
func Refuse(w http.ResponseWriter, uid uint32) {
	w.Header().Set("Connection", "close")
	WriteError(w, WithStatus(http.StatusForbidden, fmt.Errorf("operator socket: permission denied for uid %d", uid)))
}

func peerCred(c net.Conn) (unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return unix.Ucred{}, errors.New("not a unix connection")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return unix.Ucred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, fmt.Errorf("peer credentials: %w", err)
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
