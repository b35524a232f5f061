// Package e2e holds end-to-end tests that run the built amexd binary as a
// user would: a supervisor, its worker processes and real sockets.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/testkit/bench"
)

// binary and amexctl are the amexd and amexctl built once for the whole
// test run.
var binary, amexctl string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "amexd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "amexd")
	amexctl = filepath.Join(dir, "amexctl")
	for _, b := range [][]string{{"-race", "-o", binary, "../../cmd/amexd"}, {"-o", amexctl, "../../cmd/amexctl"}} {
		build := exec.Command("go", append([]string{"build"}, b...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "go build", b, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running amexd.
type daemon struct {
	*bench.Daemon
	op  *operator.Client
	dir string // holds its log
}

// start runs amexd with args (after "-log.format json", so they can
// override it) on a fresh loopback port and its own operator socket, waits
// until every slot serves, and stops it when the test ends, showing its log
// if the test failed.
func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d, err := bench.Spawn(t.Context(), bench.SpawnOptions{
		Binary: binary,
		Dir:    dir,
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
	return &daemon{Daemon: d, op: operator.NewClient(d.Socket), dir: dir}
}

// logLines returns every JSON line amexd logged so far, decoded.
func (d *daemon) logLines(t *testing.T) []map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(d.dir, "amexd-*.log"))
	if err != nil || len(files) != 1 {
		t.Fatalf("amexd's log in %s: %v %v", d.dir, files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range strings.SplitSeq(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// amexctl runs amexctl against the daemon and returns its output.
func (d *daemon) amexctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(amexctl, append([]string{"--socket", d.Socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("amexctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// metric returns the value of one series of the daemon's /metrics, given
// as it appears there (name and labels).
func (d *daemon) metric(t *testing.T, series string) float64 {
	t.Helper()
	body, err := d.op.Metrics(context.Background())
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %q: %v", series, rest, err)
			}
			return v
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// metricSum adds up the series of family name in the daemon's /metrics
// whose labels include every one of labels (each as `key="value"`).
func (d *daemon) metricSum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	body, err := d.op.Metrics(context.Background())
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(series, l)
		}
		if !matches {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric %s: %q: %v", series, value, err)
		}
		sum += v
	}
	return sum
}

// from is a client whose connections come from the loopback address src
// (any of 127.0.0.0/8 works without setup), one new connection a request.
func from(src string) *http.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
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
