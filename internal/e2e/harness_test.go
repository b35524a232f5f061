// Package e2e holds end-to-end tests that run the built amexd binary as a
// user would: a supervisor, its worker processes and real sockets.
package e2e

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
	"syscall"
	"testing"
	"time"
)

// binary is the amexd built once for the whole test run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "amexd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "amexd")
	build := exec.Command("go", "build", "-race", "-o", binary, "../../cmd/amexd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build amexd:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a daemon's logs for a failing test to show.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is one running amexd.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	socket string
	logs   *syncBuffer
	done   chan error
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs amexd with args on a fresh loopback port and its own operator
// socket, waits until it serves, and stops it when the test ends.
func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{
		addr:   freePort(t),
		socket: filepath.Join(t.TempDir(), "amexd.sock"),
		logs:   &syncBuffer{},
		done:   make(chan error, 1),
	}
	all := append([]string{"-listen", d.addr, "-control.socket", d.socket, "-log.format", "json", "-log.access=false"}, args...)
	d.cmd = exec.Command(binary, all...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("amexd logs:\n%s", d.logs)
		}
	})
	d.waitHealthy(t, 20*time.Second)
	return d
}

// waitHealthy waits until the operator socket reports every slot serving.
func (d *daemon) waitHealthy(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		res, err := d.operator("GET", "/health")
		if err == nil && res == http.StatusOK {
			return
		}
		select {
		case err := <-d.done:
			t.Fatalf("amexd exited before it was healthy: %v\n%s", err, d.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("amexd not healthy after %s (last: %d %v)\n%s", limit, res, err, d.logs)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// operator sends a request to the operator socket and returns the status.
func (d *daemon) operator(method, path string) (int, error) {
	res, err := d.operatorDo(method, path)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// operatorJSON decodes a GET on the operator socket into v.
func (d *daemon) operatorJSON(path string, v any) error {
	res, err := d.operatorDo("GET", path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

func (d *daemon) operatorDo(method, path string) (*http.Response, error) {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		},
	}}
	req, err := http.NewRequest(method, "http://amexd"+path, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// stop sends SIGTERM and waits for the daemon to exit.
func (d *daemon) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		t.Errorf("amexd did not stop within 30s of SIGTERM")
	}
}

// url is the address of path on the daemon's public port.
func (d *daemon) url(path string) string { return "http://" + d.addr + path }

// fresh is a client that opens a new connection for every request, so the
// kernel spreads them over the workers.
func fresh() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// get fetches a URL and returns status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// post sends a JSON body and returns status and body.
func post(t *testing.T, c *http.Client, url, body string) (int, string) {
	t.Helper()
	res, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
