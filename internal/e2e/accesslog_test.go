package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
