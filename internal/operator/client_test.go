package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serve runs mux on a fresh unix socket and returns a client for it.
func serve(t *testing.T, mux *http.ServeMux) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "op.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func TestCallRoundTrip(t *testing.T) {
	mux := http.NewServeMux()
	Handle(mux, GetStatus, func(*http.Request, None) (Status, error) {
		return Status{PID: 42, Workers: []WorkerInfo{{Slot: 1, State: "ready"}}}, nil
	})
	var reset atomic.Value
	Handle(mux, PostBreakersReset, func(r *http.Request, in BreakerReset) (BreakersReset, error) {
		reset.Store(in.Name)
		return BreakersReset{Reset: []string{in.Name}, Workers: 2}, nil
	})
	Handle(mux, PostReload, func(*http.Request, None) (Reloaded, error) {
		return Reloaded{}, WithStatus(http.StatusBadRequest, errors.New("reload refused: fanout: 0"))
	})
	c := serve(t, mux)
	ctx := context.Background()

	st, err := Call(ctx, c, GetStatus, None{})
	if err != nil || st.PID != 42 || len(st.Workers) != 1 || st.Workers[0].State != "ready" {
		t.Errorf("status = %+v, %v", st, err)
	}
	r, err := Call(ctx, c, PostBreakersReset, BreakerReset{Name: "getUsers"})
	if err != nil || r.Workers != 2 || reset.Load() != "getUsers" {
		t.Errorf("reset = %+v, %v; server saw %v", r, err, reset.Load())
	}
	_, err = Call(ctx, c, PostReload, None{})
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Code != http.StatusBadRequest || e.Message != "reload refused: fanout: 0" {
		t.Errorf("refused reload: err %v, want an *Error 400 with the daemon's message", err)
	}
	if _, err := Call(ctx, c, GetWorkers, None{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unhandled endpoint: err %v, want a 404", err)
	}
}

func TestBadBodyIs400(t *testing.T) {
	mux := http.NewServeMux()
	Handle(mux, PostBreakersReset, func(*http.Request, BreakerReset) (BreakersReset, error) {
		t.Error("handler called with a bad body")
		return BreakersReset{}, nil
	})
	c := serve(t, mux)
	a, err := c.Do(context.Background(), http.MethodPost, PostBreakersReset.Path, "not an object")
	if err != nil || a.Code != http.StatusBadRequest || !strings.Contains(a.Message(), "body") {
		t.Errorf("bad body: %d %q, %v; want 400 naming the body", a.Code, a.Message(), err)
	}
}

func TestHealthDecodesBothStatuses(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		mux := http.NewServeMux()
		Handle(mux, GetHealth, func(*http.Request, None) (Health, error) {
			return Health{Healthy: healthy, Slots: 2, Serving: 1, Reason: "slot 1 degraded"}, nil
		})
		c := serve(t, mux)
		a, err := c.Do(context.Background(), http.MethodGet, GetHealth.Path, nil)
		if want := map[bool]int{true: 200, false: 503}[healthy]; err != nil || a.Code != want {
			t.Errorf("healthy %v: status %d, %v; want %d", healthy, a.Code, err, want)
		}
		h, err := Call(context.Background(), c, GetHealth, None{})
		if err != nil || h.Healthy != healthy || h.Serving != 1 {
			t.Errorf("healthy %v: %+v, %v", healthy, h, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := Call(context.Background(), c, GetStatus, None{}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no socket: %v, want ErrNotRunning", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "nope", http.StatusForbidden) })
	if _, err := Call(context.Background(), serve(t, mux), GetStatus, None{}); !errors.Is(err, ErrPermission) {
		t.Errorf("403: %v, want ErrPermission", err)
	}
}

func TestWaitHealthy(t *testing.T) {
	var calls atomic.Int32
	mux := http.NewServeMux()
	Handle(mux, GetHealth, func(*http.Request, None) (Health, error) {
		n := calls.Add(1)
		return Health{Healthy: n >= 3, Reason: fmt.Sprint("call ", n)}, nil
	})
	c := serve(t, mux)
	if _, err := c.WaitHealthy(context.Background(), 10*time.Second); err != nil || calls.Load() != 3 {
		t.Errorf("WaitHealthy: %v after %d calls, want success on the 3rd", err, calls.Load())
	}
	never := http.NewServeMux()
	Handle(never, GetHealth, func(*http.Request, None) (Health, error) { return Health{Reason: "slot 0 starting"}, nil })
	if _, err := serve(t, never).WaitHealthy(context.Background(), 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "slot 0 starting") {
		t.Errorf("never healthy: %v, want the last reason", err)
	}
}

// TestClassifyEACCES covers the connect error a non-member gets from the
// socket's mode, which a test running as root cannot provoke.
func TestClassifyEACCES(t *testing.T) {
	c := NewClient("/run/amexd/amexd.sock")
	err := c.classify(context.Background(), &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)})
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("EACCES classified as %v", err)
	}
}
