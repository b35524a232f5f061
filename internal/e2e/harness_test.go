// Package e2e holds end-to-end tests that run the built amexd binary as a
// user would: a supervisor, its worker processes and real sockets.
package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/bench"
	"github.com/amexd/amexd/internal/operator"
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

// daemon is one running amexd.
type daemon struct {
	*bench.Daemon
	op *operator.Client
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

// start runs amexd with args (after "-log.format json", so they can
// override it) on a fresh loopback port and its own operator socket, waits
// until every slot serves, and stops it when the test ends, showing its log
// if the test failed.
func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	d, err := bench.Spawn(t.Context(), bench.SpawnOptions{
		Binary: binary,
		Dir:    t.TempDir(),
		Args:   append([]string{"-log.format", "json"}, args...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("amexd log (end):\n%s", d.LogTail())
		}
	})
	return &daemon{Daemon: d, op: operator.NewClient(d.Socket)}
}

// url is the address of path on the daemon's public port.
func (d *daemon) url(path string) string { return d.URL + path }

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
