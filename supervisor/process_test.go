package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

// testDaemon is a supervisor process under test.
type testDaemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	sock   string
	addr   string
	op     *operator.Client
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// kind is a daemon flavour: the test binary with fake workers, or the real
// amexd.
type kind struct {
	name string
	bin  func(t *testing.T) (string, []string)
}

var kinds = []kind{
	{"fake", func(*testing.T) (string, []string) { return os.Args[0], []string{"supervise"} }},
	{"amexd", realAmexd},
}

func realAmexd(t *testing.T) (string, []string) {
	t.Helper()
	if amexdBin == "" {
		t.Skipf("cmd/amexd not present: %v", amexdErr)
	}
	if amexdErr != nil {
		t.Fatalf("cannot build the daemon: %v", amexdErr)
	}
	return amexdBin, nil
}

// startDaemon starts a supervisor with 127.0.0.1:0, a private socket, short
// heartbeats and extra args, and waits until it is healthy.
func startDaemon(t *testing.T, k kind, workers int, env []string, extra ...string) *testDaemon {
	t.Helper()
	bin, pre := k.bin(t)
	dir := t.TempDir()
	d := &testDaemon{t: t, sock: filepath.Join(dir, "run", "amexd.sock"), stderr: &syncBuffer{}, done: make(chan struct{})}
	args := append(append([]string{}, pre...),
		"-listen", "127.0.0.1:0", "-workers", fmt.Sprint(workers), "-control.socket", d.sock,
		"-supervisor.heartbeat_interval", "100ms", "-supervisor.heartbeat_timeout", "1s",
		"-supervisor.ready_timeout", "10s", "-shutdown_timeout", "5s", "-log.format", "json",
		"-ratelimit.store", "memory", "-ratelimit.rate", "1000000-S")
	args = append(args, extra...)
	for i, a := range extra {
		if a == "-control.socket" && i+1 < len(extra) {
			d.sock = extra[i+1]
		}
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.stderr.String())
		}
	})
	d.op = operator.NewClient(d.sock)
	d.waitFor("healthy", 30*time.Second, func() bool {
		code, _ := d.get("/health", nil)
		return code == http.StatusOK
	})
	st, err := operator.Call(context.Background(), d.op, operator.GetStatus, operator.None{})
	if err != nil {
		t.Fatal(err)
	}
	d.addr = st.Listen
	return d
}

// get calls the operator socket and decodes the JSON answer into v.
func (d *testDaemon) get(path string, v any) (int, string) {
	return d.call(http.MethodGet, path, v)
}

func (d *testDaemon) call(method, path string, v any) (int, string) {
	a, err := d.op.Do(context.Background(), method, path, nil)
	if err != nil {
		return 0, err.Error()
	}
	if v != nil {
		_ = json.Unmarshal(a.Body, v)
	}
	return a.Code, string(a.Body)
}

// workers is GET /workers; an error fails the test.
func (d *testDaemon) workers() []operator.WorkerInfo {
	d.t.Helper()
	ws, err := d.tryWorkers()
	if err != nil {
		d.t.Fatalf("GET /workers: %v", err)
	}
	return ws
}

// tryWorkers is GET /workers for a poll, where an error means "not yet".
func (d *testDaemon) tryWorkers() ([]operator.WorkerInfo, error) {
	ws, err := operator.Call(context.Background(), d.op, operator.GetWorkers, operator.None{})
	if err != nil {
		return nil, fmt.Errorf("get workers: %w", err)
	}
	return ws.Workers, nil
}

// pids is the set of the workers' PIDs; no workers fails the test, since
// every caller compares sets of running workers.
func (d *testDaemon) pids() map[int]bool {
	d.t.Helper()
	out := map[int]bool{}
	for _, w := range d.workers() {
		out[w.PID] = true
	}
	if len(out) == 0 {
		d.t.Fatal("GET /workers lists no worker")
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func (d *testDaemon) waitFor(what string, within time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("not %s within %s", what, within)
		}
		select {
		case <-d.done:
			d.t.Fatalf("daemon exited (%v) waiting for %s", d.err, what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *testDaemon) allReady(n int, not map[int]bool) func() bool {
	return func() bool {
		ws, err := d.tryWorkers()
		if err != nil || len(ws) != n {
			return false
		}
		for _, w := range ws {
			if w.State != stateReady.String() || not[w.PID] {
				return false
			}
		}
		return true
	}
}

// load sends requests on keep-alive and fresh connections until stop is
// called, and returns the counts.
type load struct {
	ok, failed atomic.Int64
	lastErr    atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

// loadReq is one kind of request a load sends, and the status it wants.
type loadReq struct {
	method, path, body string
	want               int
}

func getReq(path string) loadReq {
	return loadReq{method: http.MethodGet, path: path, want: http.StatusOK}
}

// startLoad sends reqs from eight clients, half on keep-alive connections,
// half on a fresh connection per request.
func startLoad(addr string, reqs ...loadReq) *load {
	l := &load{stop: make(chan struct{})}
	clients := []*http.Client{
		{Timeout: 10 * time.Second},
		{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for i := range 8 {
		c, r := clients[i%2], reqs[(i/2)%len(reqs)]
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				req, _ := http.NewRequest(r.method, "http://"+addr+r.path, strings.NewReader(r.body))
				if r.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != r.want {
						err = fmt.Errorf("%s %s: status %d", r.method, r.path, resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.lastErr.Store(fmt.Sprintf("client %d: %v", i%2, err))
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) end() (ok, failed int64, lastErr any) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.lastErr.Load()
}

func forKinds(t *testing.T, test func(t *testing.T, k kind)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { test(t, k) })
	}
}

func TestKillRespawnsSlot(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		d := startDaemon(t, k, 2, nil)
		victim := d.workers()[1]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.waitFor("slot 1 served by a new worker", 5*time.Second, d.allReady(2, map[int]bool{victim.PID: true}))
		if w := d.workers()[1]; w.Restarts != 1 {
			t.Errorf("slot 1 restarts = %d, want 1", w.Restarts)
		}
	})
}

func TestRollingReloadUnderLoad(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		d := startDaemon(t, k, 3, nil)
		before := d.pids()
		l := startLoad(d.addr, getReq("/healthz"))
		d.waitFor("load running", 5*time.Second, func() bool { return l.ok.Load() > 50 })
		began := time.Now()
		code, body := d.call(http.MethodPost, "/reload", nil)
		took := time.Since(began)
		d.waitFor("load after reload", 5*time.Second, func() bool { return l.ok.Load() > 100 })
		ok, failed, lastErr := l.end()
		if code != http.StatusOK {
			t.Fatalf("POST /reload = %d %s", code, body)
		}
		t.Logf("reload of 3 workers took %s; %d requests ok, %d failed", took, ok, failed)
		if failed != 0 {
			t.Errorf("%d of %d requests failed during the reload (last: %v)", failed, ok+failed, lastErr)
		}
		after := d.pids()
		if len(after) != 3 {
			t.Errorf("%d workers after the reload, want 3", len(after))
		}
		for pid := range after {
			if before[pid] {
				t.Errorf("worker %d survived the reload", pid)
			}
		}
	})
}

func TestSigtermDrainsInFlight(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		d := startDaemon(t, k, 2, nil)
		path := "/healthz?sleep_ms=700"
		if k.name == "amexd" {
			path = "/events/1" // the simulator's getEventById takes 500ms
		}
		const n = 6
		errs := make(chan error, n)
		for range n {
			go func() {
				resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + d.addr + path)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				errs <- err
			}()
		}
		d.waitFor("requests in flight", 5*time.Second, func() bool {
			var inflight int64
			for _, w := range d.workers() {
				inflight += w.Inflight
			}
			return inflight >= n
		})
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("in-flight request failed: %v", err)
			}
		}
		select {
		case <-d.done:
			if d.err != nil {
				t.Errorf("daemon exit after SIGTERM: %v, want status 0", d.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("daemon did not exit after SIGTERM")
		}
	})
}

func TestStoppedWorkerReplaced(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		d := startDaemon(t, k, 2, nil)
		victim := d.workers()[0].PID
		if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		d.waitFor("hung worker replaced", 10*time.Second, d.allReady(2, map[int]bool{victim: true}))
	})
}

func TestInvalidReloadRefused(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		file := filepath.Join(t.TempDir(), "amexd.yaml")
		if err := os.WriteFile(file, []byte("fanout: 8\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t, k, 2, nil, "-config", file)
		before := d.pids()
		if err := os.WriteFile(file, []byte("fanout: 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, body := d.call(http.MethodPost, "/reload", nil)
		if code != http.StatusBadRequest || !strings.Contains(body, "fanout") {
			t.Errorf("POST /reload with a bad config = %d %s, want 400 naming fanout", code, body)
		}
		after := d.pids()
		if len(after) != len(before) {
			t.Fatalf("workers changed: %v → %v", before, after)
		}
		for pid := range after {
			if !before[pid] {
				t.Errorf("refused reload replaced a worker (new pid %d)", pid)
			}
		}
		if code, _ := d.get("/health", nil); code != http.StatusOK {
			t.Errorf("health after refused reload = %d", code)
		}
	})
}

// notifySocket is a stand-in for systemd's NOTIFY_SOCKET.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifySocket{path: path, msgs: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for a message starting with prefix and returns it.
func (n *notifySocket) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q", prefix)
			}
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q on NOTIFY_SOCKET", prefix)
		}
	}
}

func TestSdNotify(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		n := listenNotify(t)
		expect := func(prefix string) string { t.Helper(); return n.expect(t, prefix) }
		path := n.path
		d := startDaemon(t, k, 2, []string{"NOTIFY_SOCKET=" + path})
		expect("READY=1")
		if code, body := d.call(http.MethodPost, "/reload", nil); code != http.StatusOK {
			t.Fatalf("reload: %d %s", code, body)
		}
		if m := expect("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
			t.Errorf("reload notification %q lacks MONOTONIC_USEC", m)
		}
		expect("READY=1")
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		expect("STOPPING=1")
	})
}

func TestOperatorSocketRefusesOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client under another uid")
	}
	base, err := os.MkdirTemp("", "amexd-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// Open directories and socket, so only SO_PEERCRED stands in the way.
	if err := os.Chmod(base, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "amexd.sock")
	d := startDaemon(t, kinds[0], 1, nil, "-control.socket", sock)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	// The test binary sits in a private directory; uid 65534 needs a copy.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(base, "client")
	if err := os.WriteFile(client, self, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(uid uint32) string {
		cmd := exec.Command(client, "dial", sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dial as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	out := run(65534)
	if !strings.HasPrefix(out, "HTTP/1.1 403") {
		t.Errorf("uid 65534 got %q, want a 403", out)
	}
	// The whole body, as long as its Content-Length says, is the JSON error.
	_, body, _ := strings.Cut(out, "\n")
	var answer struct{ Error string }
	if err := json.Unmarshal([]byte(body), &answer); err != nil || !strings.Contains(answer.Error, "permission denied for uid 65534") {
		t.Errorf("uid 65534 got body %q (%v), want {\"error\": \"... permission denied for uid 65534\"}", body, err)
	}
	if out := run(0); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("root got %q, want 200", out)
	}
	_ = d
}

func TestInvalidationReachesEveryOtherWorker(t *testing.T) {
	d := startDaemon(t, kinds[0], 3, nil)
	resp, err := http.Post("http://"+d.addr+"/invalidate", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	writer := resp.Header.Get("X-Worker-Pid")
	if resp.StatusCode != http.StatusOK || writer == "" {
		t.Fatalf("invalidate: %d, pid %q", resp.StatusCode, writer)
	}
	// The writer returned after the ack, so every other worker has already
	// applied it: the metrics show it without waiting.
	_, text := d.get("/metrics", nil)
	applied := strings.Count(text, "fake_invalidated_total{slot=")
	if applied != 3 {
		t.Fatalf("fake_invalidated_total for %d slots, want 3:\n%s", applied, text)
	}
	var got int
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "fake_invalidated_total{") && strings.HasSuffix(line, " 1") {
			got++
		}
	}
	if got != 2 {
		t.Errorf("%d workers applied the invalidation, want 2 (all but the writer)", got)
	}
}

func TestBreakerTripPropagates(t *testing.T) {
	d := startDaemon(t, kinds[0], 3, nil)
	resp, err := http.Post("http://"+d.addr+"/trip", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d.waitFor("breaker open in every worker", 5*time.Second, func() bool {
		var cs control.ClusterStatus
		d.get("/breakers", &cs)
		return len(cs.Summary) == 1 && cs.Summary[0].Open == 3
	})
	var out struct{ Reset []string }
	if code, _ := d.call(http.MethodPost, "/breakers/reset?name=addEvent", &out); code != http.StatusOK || len(out.Reset) != 1 {
		t.Fatalf("reset: %d %v", code, out)
	}
	d.waitFor("breaker closed in every worker", 5*time.Second, func() bool {
		var cs control.ClusterStatus
		d.get("/breakers", &cs)
		return len(cs.Summary) == 1 && cs.Summary[0].Closed == 3
	})
}

func TestMetricsContinueAcrossReplacement(t *testing.T) {
	d := startDaemon(t, kinds[0], 1, nil)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 5 {
		resp, err := client.Get("http://" + d.addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	requests := func() string {
		_, text := d.get("/metrics", nil)
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, `fake_requests_total{slot="0"}`) {
				return strings.Fields(line)[1]
			}
		}
		return ""
	}
	if got := requests(); got != "5" {
		t.Fatalf("before reload fake_requests_total = %q, want 5", got)
	}
	if code, body := d.call(http.MethodPost, "/reload", nil); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := requests(); got != "5" {
		t.Errorf("after reload fake_requests_total = %q, want 5 (no reset)", got)
	}
}
