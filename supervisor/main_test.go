package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// amexdBin is the real daemon, built once per test run; amexdErr says why
// it could not be built.
var amexdBin, amexdErr = "", error(nil)

// TestMain lets the test binary play three parts: the test runner, a fake
// worker (when the supervisor under test re-executes /proc/self/exe as
// "worker -slot N") and a supervisor process ("supervise ARGS...").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "worker":
			os.Exit(fakeWorker())
		case "supervise":
			os.Exit(supervise(os.Args[2:]))
		case "check":
			fmt.Println(CheckOK())
			os.Exit(0)
		case "dial":
			os.Exit(dial(os.Args[2]))
		}
	}
	dir, err := os.MkdirTemp("", "amexd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stat("../cmd/amexd"); err == nil {
		amexdBin = filepath.Join(dir, "amexd")
		out, err := exec.Command("go", "build", "-o", amexdBin, "../cmd/amexd").CombinedOutput()
		if err != nil {
			amexdErr = fmt.Errorf("go build ./cmd/amexd: %v\n%s", err, out)
		}
	} else {
		amexdErr = err
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// supervise runs the supervisor the way cmd/amexd does.
func supervise(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, src, err := config.Load(args, os.Environ(), os.Stderr)
	if err != nil {
		log.Error("config", "err", err)
		return 2
	}
	if err := Run(context.Background(), src, cfg, log); err != nil {
		log.Error("supervisor", "err", err)
		return 1
	}
	return 0
}

// dial sends GET /status on a unix socket and prints the answer; the
// peer-credential test runs it under another uid.
// dial asks GET /status on the operator socket at path with net/http, as
// amexctl does, and prints the status line and the body as read.
func dial(path string) int {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}},
	}
	resp, err := client.Get("http://amexd/status")
	if err != nil {
		fmt.Println("get:", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Println("read body:", err)
		return 1
	}
	fmt.Printf("%s %s\n%s", resp.Proto, resp.Status, body)
	return 0
}

// fakeHandler is a minimal worker: it counts what the supervisor asks and
// exposes the counts as metrics and stats.
type fakeHandler struct {
	srv         *http.Server
	served      chan struct{}
	ln          net.Listener
	conns       atomic.Int64
	requests    atomic.Uint64
	errors      atomic.Uint64
	inflight    atomic.Int64
	invalidated atomic.Uint64
	purges      atomic.Uint64
	mu          sync.Mutex
	breakers    map[string]string
}

func (h *fakeHandler) Invalidate([]string)         { h.invalidated.Add(1) }
func (h *fakeHandler) Purge()                      { h.purges.Add(1) }
func (h *fakeHandler) Share([]control.SharedEntry) {}
func (h *fakeHandler) ForceBreaker(name, state string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.breakers[name] = state
}

func (h *fakeHandler) Stats() control.Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := control.Stats{Requests: h.requests.Load(), Errors: h.errors.Load(), Inflight: h.inflight.Load()}
	for name, state := range h.breakers {
		st.Breakers = append(st.Breakers, control.Breaker{Name: name, State: state})
	}
	return st
}

func (h *fakeHandler) Metrics() []byte {
	return fmt.Appendf(nil, "# TYPE fake_requests_total counter\nfake_requests_total %d\n# TYPE fake_invalidated_total counter\nfake_invalidated_total %d\n# TYPE fake_purges_total counter\nfake_purges_total %d\n",
		h.requests.Load(), h.invalidated.Load(), h.purges.Load())
}

func (h *fakeHandler) Drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// http.Server.Shutdown closes, unanswered, a connection whose request
	// it reads after shutdown began, so a connection accepted just before
	// would fail. Stop accepting first, answer what was accepted with
	// keep-alives off, and only then shut down.
	_ = h.ln.Close()
	<-h.served
	h.srv.SetKeepAlivesEnabled(false)
	for h.conns.Load() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond) // polling the connection count, as Shutdown itself does
	}
	_ = h.srv.Shutdown(ctx)
	os.Exit(0)
}

func fakeWorker() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Error("listener", "err", err)
		return 1
	}
	conn, err := net.FileConn(os.NewFile(4, "control"))
	if err != nil {
		log.Error("control", "err", err)
		return 1
	}
	w := control.NewWorker(conn, log)
	wc, err := w.ReadConfig(context.Background())
	if err != nil {
		log.Error("read config", "err", err)
		return 1
	}
	var cfg config.Config
	if err := json.Unmarshal(wc.Config, &cfg); err != nil {
		log.Error("decode config", "err", err)
		return 1
	}
	h := &fakeHandler{breakers: map[string]string{}}
	mux := http.NewServeMux()
	pid := strconv.Itoa(os.Getpid())
	// FAKE_WORKER_ERRORS=1 makes a worker that answers every request 500: a
	// new binary that starts but serves badly.
	failing := os.Getenv("FAKE_WORKER_ERRORS") == "1"
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, r *http.Request) {
		h.requests.Add(1)
		h.inflight.Add(1)
		defer h.inflight.Add(-1)
		if failing {
			h.errors.Add(1)
			rw.Header().Set("X-Worker-Pid", pid)
			http.Error(rw, "this build serves only errors", http.StatusInternalServerError)
			return
		}
		if ms, _ := strconv.Atoi(r.URL.Query().Get("sleep_ms")); ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond) // simulates a slow request being served
		}
		rw.Header().Set("X-Worker-Pid", pid)
		fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("POST /invalidate", func(rw http.ResponseWriter, r *http.Request) {
		if err := w.Invalidate(r.Context(), []string{"k"}); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("X-Worker-Pid", pid)
	})
	mux.HandleFunc("POST /trip", func(rw http.ResponseWriter, r *http.Request) {
		h.ForceBreaker("addEvent", control.StateOpen)
		_ = w.ReportBreaker("addEvent", control.StateClosed, control.StateOpen, false)
		rw.Header().Set("X-Worker-Pid", pid)
	})
	h.srv = &http.Server{Handler: mux, ConnState: func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			h.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			h.conns.Add(-1)
		}
	}}
	h.ln = ln
	h.served = make(chan struct{})
	go func() { _ = h.srv.Serve(ln); close(h.served) }()
	if d, err := time.ParseDuration(os.Getenv("FAKE_RELOAD_READY_DELAY")); err == nil && wc.Generation > 1 {
		time.Sleep(d) // a worker of a reload that takes its time to start
	}
	if err := w.Ready(control.Stats{}); err != nil {
		return 1
	}
	if err := w.Serve(context.Background(), h, cfg.Supervisor.HeartbeatInterval); err != nil {
		h.Drain()
	}
	return 0
}
