// Package redistest runs a private redis-server for one test, on a Unix
// socket in a directory of its own, so that tests (and test packages running
// at the same time) never share a Redis: no test sees another's keys, load or
// FLUSHALL, and no port can be taken by someone else. It is for tests only.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/redisconn"
)

// startTimeout bounds how long a redis-server may take to say it is ready.
const startTimeout = 30 * time.Second

// Server is one running redis-server, stopped when the test ends.
type Server struct {
	// Socket is the Unix socket the server listens on.
	Socket string
	// URL is a go-redis URL for Socket, database 0.
	URL string

	tb  testing.TB
	bin string
	dir string
	cmd *exec.Cmd
}

// Start runs a redis-server for tb. Without a redis-server binary the test
// is skipped, except in CI (CI=true), where it fails: CI installs one.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redis-server is not installed (.ci/packages lists it): %v", err)
		}
		tb.Skip("redis-server is not installed; `make test` installs it as root")
	}
	// A directory of its own, short enough for a socket path (108 bytes).
	dir, err := os.MkdirTemp("", "redis-")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{tb: tb, bin: bin, dir: dir, Socket: filepath.Join(dir, "redis.sock")}
	s.URL = "unix://" + s.Socket + "?db=0"
	tb.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// PID is the running server's process ID, 0 while it is stopped.
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Pause stops the server with SIGSTOP: connections stay open and commands
// queue in the kernel, unanswered, until Resume. It returns once the kernel
// reports the process stopped, so no command sent after it is answered.
func (s *Server) Pause() {
	s.tb.Helper()
	s.signal(syscall.SIGSTOP)
	stat := fmt.Sprintf("/proc/%d/stat", s.PID())
	deadline := time.Now().Add(startTimeout)
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			s.tb.Fatalf("redistest: pause: %v", err)
		}
		// The state follows the command name, which is in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: redis-server %d not stopped %v after SIGSTOP", s.PID(), startTimeout)
		}
		time.Sleep(time.Millisecond) // polling the process state, bounded by the deadline
	}
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	if s.cmd == nil {
		s.tb.Fatalf("redistest: %v to a stopped server", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: %v to redis-server %d: %v", sig, s.PID(), err)
	}
}

// Stop kills the server (paused or not) and waits for it; its data is lost.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
	_ = os.Remove(s.Socket)
}

// Restart starts the server again on the same socket (empty), after Stop;
// Start calls it for the first run. It returns once the server accepts
// connections.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	cmd := exec.Command(s.bin, "--port", "0", "--unixsocket", s.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "notice")
	// The server must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A pipe of our own rather than StdoutPipe: Stop's Wait must not close
	// it under the reader.
	out, w, err := os.Pipe()
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	s.cmd = cmd
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		// The log is read only until the server says it is ready; after
		// that the pipe is drained so the server never blocks on it.
		pending := true
		sc := bufio.NewScanner(out)
		for pending && sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			// 7.0 says "ready to accept connections at SOCKET", 7.2 "Ready to accept connections unix".
			pending = !strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections")
		}
		close(ready)
		_, _ = io.Copy(io.Discard, out)
		out.Close()
	}()
	select {
	case <-ready:
	case <-time.After(startTimeout):
		s.tb.Fatalf("redistest: redis-server did not get ready within %v", startTimeout)
	}
	if !s.ping() {
		s.tb.Fatalf("redistest: redis-server exited before it was ready:\n%s", log.String())
	}
}

func (s *Server) ping() bool {
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

// Client returns a new client of the server, made as amexd makes its
// own (redisconn.New); the caller closes it.
func (s *Server) Client() redis.UniversalClient {
	c, err := redisconn.New(redisconn.Config{URL: s.URL, DialTimeout: 5 * time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
	if err != nil {
		s.tb.Fatalf("redistest: client: %v", err)
	}
	return c
}

// Flush empties every database of the server.
func (s *Server) Flush() {
	s.tb.Helper()
	c := s.Client()
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		s.tb.Fatalf("redistest: flushall: %v", err)
	}
}
