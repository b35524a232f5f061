package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/amexd/amexd/internal/operator"
)

// A graceful stop under load loses no access line: every request a client
// got an answer to is in the log, found by its request ID, although the
// log is buffered.
func TestGracefulStopKeepsEveryAccessLine(t *testing.T) {
	d := start(t, "-workers", "2", "-log.access=true", "-log.access_flush", "1h")
	const clients = 8
	var (
		answered  sync.Map
		count     atomic.Int64
		wg        sync.WaitGroup
		stopLoad  = make(chan struct{})
		enoughRun = make(chan struct{})
		once      sync.Once
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d", c, i)
				req, _ := http.NewRequest(http.MethodGet, d.url("/users/1"), nil)
				req.Header.Set("X-Request-ID", id)
				res, err := client.Do(req)
				if err != nil {
					// Refused or reset once the workers are gone: the
					// request had no answer, so it owes no line.
					continue
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err == nil {
					answered.Store(id, res.StatusCode)
					if count.Add(1) >= 2000 {
						once.Do(func() { close(enoughRun) })
					}
				}
			}
		}()
	}
	select {
	case <-enoughRun:
	case <-time.After(2 * time.Minute):
		close(stopLoad)
		wg.Wait()
		t.Fatalf("only %d answers in 2 minutes", count.Load())
	}
	// Stop while the clients keep sending; they stop once amexd is gone.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	close(stopLoad)
	wg.Wait()

	out, err := d.Log()
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			ID  string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "request" {
			logged[line.ID] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	missing, total := 0, 0
	answered.Range(func(k, _ any) bool {
		total++
		if !logged[k.(string)] {
			missing++
			if missing <= 5 {
				t.Errorf("request %s was answered but has no access line", k)
			}
		}
		return true
	})
	t.Logf("%d requests answered, %d access lines", total, len(logged))
	if missing > 0 {
		t.Errorf("%d of %d answered requests have no access line", missing, total)
	}
}

// An access log in a directory that does not exist is refused once, with
// its key and path, both by amexd check and at start, before any worker
// runs: not found by workers exiting one after another.
func TestUnwritableAccessFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "access.log")
	want := "log.access_file: " + path + ": directory does not exist or is not writable"
	for _, mode := range [][]string{{"check"}, {}} {
		args := append(mode, "-log.access", "-log.access_file", path,
			"-control.socket", filepath.Join(t.TempDir(), "amexd.sock"), "-listen", "127.0.0.1:0")
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, binary, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("amexd %v: %v, want exit status 2\n%s%s", args, err, stdout.String(), stderr.String())
		}
		if n := strings.Count(stderr.String(), want); n != 1 {
			t.Errorf("amexd %v said %q %d times, want once:\n%s", mode, want, n, stderr.String())
		}
		if strings.Contains(stderr.String(), "worker") {
			t.Errorf("amexd %v started a worker:\n%s", mode, stderr.String())
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends. Mounting needs root: without it the test skips,
// except in CI, where it fails.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a tmpfs (CI runs the tests as root): %v\n%s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (not root?): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes path until the file system it is on is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// The access log on a full disk: requests are served on, the dropped
// lines are counted on /metrics and in amexctl status, one warning says
// why, and lines are written again once there is room.
func TestAccessLogOnAFullDisk(t *testing.T) {
	dir := mountTmpfs(t, 1<<20)
	logPath := filepath.Join(dir, "access.log")
	// One worker: the warning is once a minute per worker.
	d := start(t, "-workers", "1", "-log.access", "-log.access_file", logPath, "-log.access_flush", "50ms")
	fill(t, filepath.Join(dir, "filler"))

	client := &http.Client{Timeout: 10 * time.Second}
	getAll := func(prefix string, n int) {
		for i := range n {
			req, _ := http.NewRequest(http.MethodGet, d.url("/users/1"), nil)
			req.Header.Set("X-Request-ID", fmt.Sprintf("%s-%d", prefix, i))
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET /users/1 with the disk full: %v", err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET /users/1 with the disk full: %d", res.StatusCode)
			}
		}
	}
	getAll("full", 2000)

	// The disk was full before the first request, so every line is
	// dropped; waiting for all of them also leaves none buffered for the
	// room made below.
	dropped := func() float64 { return d.metric(t, `amexd_access_log_dropped_lines_total{slot="0"}`) }
	if !waitUntil(t.Context(), 10*time.Second, nil, func() bool { return dropped() >= 2000 }) {
		t.Fatalf("amexd_access_log_dropped_lines_total = %v with the disk full, want the 2000 lines", dropped())
	}
	var st operator.Status
	if !waitUntil(t.Context(), 10*time.Second, nil, func() bool {
		st, _ = operator.Call(t.Context(), d.op, operator.GetStatus, operator.None{})
		return len(st.Workers) == 1 && st.Workers[0].AccessLogDropped > 0
	}) {
		t.Errorf("status shows no dropped lines: %+v", st.Workers)
	}
	if out := d.amexctl(t, "status"); !strings.Contains(out, "lines dropped by failed writes") {
		t.Errorf("amexctl status does not show the dropped lines:\n%s", out)
	}

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	getAll("room", 20)
	if !waitUntil(t.Context(), 10*time.Second, nil, func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte(`"room-19"`))
	}) {
		t.Error("no access line written once the disk had room again")
	}
	b, _ := os.ReadFile(logPath)
	if bytes.Contains(b, []byte(`"full-1999"`)) {
		t.Error("a line of the full disk was written: its flush should have failed")
	}

	var warnings []map[string]any
	for _, l := range d.logLines(t) {
		if l["level"] == "WARN" && strings.HasPrefix(fmt.Sprint(l["msg"]), "access log:") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(fmt.Sprint(warnings[0]["err"]), "no space left on device") {
		t.Errorf("access log warnings %v, want exactly one with the error", warnings)
	}
	t.Logf("%v lines dropped; warning %v", dropped(), warnings)
}
