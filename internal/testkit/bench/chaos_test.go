package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
)

func TestUpstreamRestartsOnTheSamePort(t *testing.T) {
	up, err := StartUpstream(ChaosSimConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	created := postEvent(t, client, up.URL(), "4503599627370497")

	if err := up.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := up.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := client.Get(up.URL() + eventapi.PathEvents); err == nil || Classify(err.Error()) != ErrRefused {
		t.Errorf("GET while stopped: %v, want connection refused", err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err == nil {
		t.Error("Start of a running upstream succeeded")
	}
	res, err := client.Get(up.URL() + eventapi.PathEventByID + created)
	if err != nil {
		t.Fatalf("GET after the restart: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(b) == 0 {
		t.Errorf("event %s after the restart: %d %q, want 200 with the record (state kept)", created, res.StatusCode, b)
	}
}

// postEvent creates an event of user 1 under id straight on the
// simulator, as amexd would, and returns its key.
func postEvent(t *testing.T, client *http.Client, base, id string) string {
	t.Helper()
	res, err := client.Post(base+eventapi.PathAddEvent, "application/json", strings.NewReader(`{"id":`+id+`,"name":"x","userId":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out eventapi.Outcome
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || !out.Success {
		t.Fatalf("addEvent: %d %v", res.StatusCode, err)
	}
	return id
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"GET", "http://h/events", KindEvents},
		{"GET", "http://h/events/event-3", KindEvent},
		{"GET", "http://h/events/user/2", KindUserEvents},
		{"GET", "http://h/users/1", KindUser},
		{"POST", "http://h/events", KindCreate},
		{"GET", "http://h/healthz", "GET /healthz"},
	} {
		if got := kindOf(tc.method, tc.url); got != tc.want {
			t.Errorf("kindOf(%s %s) = %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

// TestReadTargeterCoversEveryKind: a full cycle of the read targeter sends
// every kind of read and nothing else.
func TestReadTargeterCoversEveryKind(t *testing.T) {
	tr := readTargeter("http://h")
	seen := map[string]int{}
	for range 1 + 3 + 3 + seedEventCount {
		var tgt vegeta.Target
		if err := tr(&tgt); err != nil {
			t.Fatal(err)
		}
		seen[kindOf(tgt.Method, tgt.URL)]++
	}
	want := map[string]int{KindEvents: 1, KindUser: 3, KindUserEvents: 3, KindEvent: seedEventCount}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("one cycle sent %v, want %v", seen, want)
	}
}

// TestTrackerRecovery: recovery counts from the fault's end to the answer
// of the first success sent after it; a kind with none has not recovered.
func TestTrackerRecovery(t *testing.T) {
	end := time.Now()
	tr := newTracker()
	result := func(method, url string, code uint16, start time.Time, latency time.Duration, hdr http.Header) {
		tr.inspect(&vegeta.Result{Method: method, URL: url, Code: code, Timestamp: start, Latency: latency, Headers: hdr})
	}
	result("GET", "http://h/events", 200, end.Add(-time.Second), 10*time.Millisecond, nil) // before the end
	result("GET", "http://h/events", 503, end.Add(time.Millisecond), time.Millisecond, nil)
	result("GET", "http://h/events", 200, end.Add(300*time.Millisecond), 20*time.Millisecond, nil)
	result("GET", "http://h/events", 200, end.Add(100*time.Millisecond), 50*time.Millisecond, nil) // answered earlier
	result("GET", "http://h/users/1", 0, end.Add(time.Millisecond), time.Millisecond, nil)
	result("POST", "http://h/events", 201, end.Add(-time.Millisecond), time.Millisecond,
		http.Header{"Location": {"/events/event-9"}})

	if tr.allRecovered(end) {
		t.Error("allRecovered with GET /users/:id and POST /events not yet successful after the end")
	}
	got := tr.recovery(end)
	want := map[string]time.Duration{KindEvents: 150 * time.Millisecond, KindUser: -1, KindCreate: -1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recovery = %v, want %v", got, want)
	}
	counts := tr.counts()
	if k := counts[KindEvents]; k.Requests != 4 || k.Status[503] != 1 || k.NoRetryAfter != 1 {
		t.Errorf("GET /events counts %+v, want 4 requests, one 503 without Retry-After", *k)
	}
	if k := counts[KindUser]; k.Errors[ErrOther] != 1 {
		t.Errorf("GET /users/:id errors %v, want one", k.Errors)
	}
	if ids := tr.createdIDs(); len(ids) != 1 || ids[0] != "event-9" {
		t.Errorf("created %v, want [event-9] from the Location header", ids)
	}
	result("GET", "http://h/users/2", 200, end, time.Millisecond, nil)
	result("POST", "http://h/events", 201, end, time.Millisecond, http.Header{"Location": {"/events/event-10"}})
	if !tr.allRecovered(end) {
		t.Error("not allRecovered after a success of every kind")
	}
}

// TestCheckData: an event readable everywhere passes; one a worker loses,
// one missing from its user's list and one the upstream never got are each
// reported; a 503 is retried.
func TestCheckData(t *testing.T) {
	sim, err := simulator.New(ChaosSimConfig())
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	up := httptest.NewServer(sim)
	defer up.Close()
	good, lost, unlisted := postEvent(t, client, up.URL, "4503599627370497"), postEvent(t, client, up.URL, "4503599627370498"),
		postEvent(t, client, up.URL, "4503599627370499")

	var flaky atomic.Int64
	amexd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/events/"+good && flaky.Add(1) == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/events/"+lost:
			w.WriteHeader(http.StatusNotFound)
		case r.URL.Path == "/events/user/1":
			fmt.Fprintf(w, `[{"id":%s},{"id":%s}]`, good, lost)
		default:
			fmt.Fprintf(w, `{"id":%s}`, idJSON(filepath.Base(r.URL.Path)))
		}
	}))
	defer amexd.Close()

	dc := checkData(context.Background(), amexd.URL, sim, []string{good, lost, unlisted, "event-999"}, 2, 2*time.Second)
	if dc.Created != 4 || dc.Retried != 1 {
		t.Errorf("created %d, retried %d; want 4 and 1", dc.Created, dc.Retried)
	}
	if len(dc.MissingUpstream) != 1 || dc.MissingUpstream[0] != "event-999" {
		t.Errorf("missing upstream %q, want [event-999]", dc.MissingUpstream)
	}
	text := strings.Join(dc.Unreadable, "\n")
	if !strings.Contains(text, "/events/"+lost+": 404") || !strings.Contains(text, "without "+unlisted) ||
		strings.Contains(text, "/events/"+good+":") || len(dc.Unreadable) != 4 {
		t.Errorf("unreadable:\n%s\nwant %s's 404 and %s missing from the list, twice each", text, lost, unlisted)
	}
	if dc.OK() {
		t.Error("OK with findings")
	}
}

func TestRunFaultRejectsUnknownFault(t *testing.T) {
	_, err := RunFault(context.Background(), ChaosTarget{}, nil, "meteor", ChaosConfig{})
	if err == nil || !strings.Contains(err.Error(), `unknown fault "meteor"`) {
		t.Errorf("RunFault(meteor) = %v, want unknown fault", err)
	}
}

func TestFaultReportTotals(t *testing.T) {
	rep := FaultReport{
		Streams: []Report{
			{Requests: 3, Status: map[int]uint64{200: 2}, Errors: map[ErrorKind]uint64{ErrReset: 1}},
			{Requests: 2, Status: map[int]uint64{200: 1, 503: 1}, Errors: map[ErrorKind]uint64{}},
		},
		PidsBefore: []int{1, 2, 3},
		PidsAfter:  []int{2, 4, 5},
	}
	if rep.Requests() != 5 || rep.Status()[200] != 3 || rep.Status()[503] != 1 || rep.Errors()[ErrReset] != 1 {
		t.Errorf("totals %d %v %v", rep.Requests(), rep.Status(), rep.Errors())
	}
	if rep.Replaced() != 2 {
		t.Errorf("replaced %d, want 2", rep.Replaced())
	}
	var out strings.Builder
	if err := WriteChaos(&out, []FaultReport{rep}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(2 replaced)") || !strings.Contains(out.String(), "every event readable") {
		t.Errorf("report:\n%s", out.String())
	}
}
