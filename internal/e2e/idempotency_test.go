package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/redistest"
)

// keyedAnswer is one answer to a POST that carried an Idempotency-Key.
type keyedAnswer struct {
	status    int
	body      string
	requestID string
}

// postKeyed sends body to url with an Idempotency-Key and a request ID of
// its own (so the access log says which worker answered), on a new
// connection, and retries while the key is in flight (409), as a client
// that follows Retry-After would, only faster.
func postKeyed(t *testing.T, url, key, body, requestID string) keyedAnswer {
	t.Helper()
	c := fresh()
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		id := fmt.Sprintf("%s-%d", requestID, attempt)
		req.Header.Set("X-Request-ID", id)
		res, err := c.Do(req)
		if err != nil {
			t.Errorf("POST %s: %v", url, err)
			return keyedAnswer{}
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusConflict || time.Now().After(deadline) {
			return keyedAnswer{status: res.StatusCode, body: string(b), requestID: id}
		}
		time.Sleep(20 * time.Millisecond) // the client's backoff, not a synchronisation
	}
}

// retryAcross sends one POST and its retries, all with one key, over new
// connections to the daemons in turn, ten at a time in parallel, until at
// least ten were sent and every worker of every daemon answered one. It
// returns the answers and which worker (pid) answered each.
func retryAcross(t *testing.T, ds []*daemon, workers int, path, key, body string) ([]keyedAnswer, map[string]bool) {
	t.Helper()
	var answers []keyedAnswer
	pids := map[string]bool{}
	for round := 0; round < 20 && (len(answers) < 10 || len(pids) < workers*len(ds)); round++ {
		batch := make([]keyedAnswer, 10)
		var wg sync.WaitGroup
		for i := range batch {
			d := ds[i%len(ds)]
			wg.Go(func() { batch[i] = postKeyed(t, d.url(path), key, body, fmt.Sprintf("%s-r%d-%d", t.Name(), round, i)) })
		}
		wg.Wait()
		answers = append(answers, batch...)
		byID := map[string]string{}
		for _, d := range ds {
			for _, line := range d.logLines(t) {
				if id, ok := line["request_id"].(string); ok && line["msg"] == "request" {
					byID[id] = fmt.Sprint(line["pid"])
				}
			}
		}
		for _, a := range answers {
			if pid, ok := byID[a.requestID]; ok {
				pids[pid] = true
			}
		}
	}
	return answers, pids
}

// checkOneWrite: every answer is the first one, and the upstream created
// exactly one event.
func checkOneWrite(t *testing.T, up string, answers []keyedAnswer, pids map[string]bool, wantWorkers, wantStatus int) {
	t.Helper()
	if len(pids) < wantWorkers {
		t.Errorf("the retries reached %d workers, want %d", len(pids), wantWorkers)
	}
	for i, a := range answers {
		if a.status != wantStatus || a.body != answers[0].body {
			t.Errorf("answer %d: %d %s, want %d %s", i, a.status, a.body, wantStatus, answers[0].body)
		}
	}
	if st := upstreamStats(t, up); st.Created != 1 {
		t.Errorf("upstream addEvent: %+v, want exactly one event created", st)
	}
}

// upstreamStats reads the simulator's /stats, as an operator would.
func upstreamStats(t *testing.T, up string) simulator.AddEventCounts {
	t.Helper()
	status, body := get(t, fresh(), up+simulator.PathStats)
	var st simulator.Stats
	if err := json.Unmarshal([]byte(body), &st); status != http.StatusOK || err != nil {
		t.Fatalf("GET %s/stats: %d %s", up, status, body)
	}
	return st.AddEvent
}

// TestIdempotencyKeyAcrossWorkers: one POST and its retries under one
// Idempotency-Key, on new connections spread over three workers, create one
// event and all get the first answer; the same key with another body is
// refused.
func TestIdempotencyKeyAcrossWorkers(t *testing.T) {
	up := sharedUpstream(t)
	d := start(t, "-workers", "3", "-log.access", "-upstream.url", up)
	body := `{"name":"retried","userId":2}`
	answers, pids := retryAcross(t, []*daemon{d}, 3, "/events", "key-across-workers", body)
	checkOneWrite(t, up, answers, pids, 3, http.StatusCreated)

	other := postKeyed(t, d.url("/events"), "key-across-workers", `{"name":"different","userId":2}`, "other")
	if other.status != http.StatusUnprocessableEntity || !strings.Contains(other.body, "idempotency_key_reused") {
		t.Errorf("same key, other body: %d %s, want 422 idempotency_key_reused", other.status, other.body)
	}
	// The original path takes keys too; a key is bound to its path.
	legacy, pids := retryAcross(t, []*daemon{d}, 3, "/addEvent", "legacy-key", `{"name":"hello","userId":"3"}`)
	if legacy[0].status != http.StatusOK || !strings.Contains(legacy[0].body, `"success":true`) {
		t.Fatalf("POST /addEvent with a key: %d %s", legacy[0].status, legacy[0].body)
	}
	for i, a := range legacy {
		if a.body != legacy[0].body {
			t.Errorf("addEvent answer %d: %s, want %s", i, a.body, legacy[0].body)
		}
	}
	if st := upstreamStats(t, up); st.Created != 2 || len(pids) < 3 {
		t.Errorf("after the addEvent retries: %+v over %d workers, want two events in all over 3", st, len(pids))
	}
	// Without the header every POST writes, as before.
	for range 2 {
		if status, body := post(t, fresh(), d.url("/events"), body); status != http.StatusCreated {
			t.Fatalf("POST without a key: %d %s", status, body)
		}
	}
	if st := upstreamStats(t, up); st.Created != 4 {
		t.Errorf("after two POSTs without a key: %+v, want four events in all", st)
	}
	// The supervisor shows the table: the two keys, none evicted.
	if n := d.metric(t, "amexd_idempotency_table_keys"); n != 2 {
		t.Errorf("amexd_idempotency_table_keys = %v, want 2", n)
	}
	if n := d.metric(t, "amexd_idempotency_table_evicted_total"); n != 0 {
		t.Errorf("amexd_idempotency_table_evicted_total = %v, want 0", n)
	}
	if out := d.amexctl(t, "status"); !strings.Contains(out, "idempotency  table 2 of 65536 keys live, 0 evicted before their TTL\n") {
		t.Errorf("amexctl status lacks the idempotency table's line:\n%s", out)
	}
}

// TestIdempotencyKeyAcrossInstances: the same across two instances (two
// machines) sharing Redis.
func TestIdempotencyKeyAcrossInstances(t *testing.T) {
	rds := redistest.Start(t)
	up := sharedUpstream(t)
	args := []string{"-workers", "2", "-log.access", "-ratelimit.store", "redis",
		"-redis.url", rds.URL, "-ratelimit.redis_timeout", "5s", "-upstream.url", up}
	a, b := start(t, args...), start(t, args...)
	answers, pids := retryAcross(t, []*daemon{a, b}, 2, "/events", "key-across-machines", `{"name":"retried","userId":1}`)
	checkOneWrite(t, up, answers, pids, 4, http.StatusCreated)
}
