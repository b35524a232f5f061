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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
