package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Request kinds: the five kinds of request the load sends, which the
// report counts and times recovery for separately.
const (
	KindEvents     = "GET /events"
	KindUser       = "GET /users/:id"
	KindUserEvents = "GET /events/user/:id"
	KindEvent      = "GET /events/:id"
	KindCreate     = "POST /events"
)

// KindCounts are the outcomes of one kind of request.
type KindCounts struct {
	Requests uint64               `json:"requests"`
	Status   map[int]uint64       `json:"status"`
	Errors   map[ErrorKind]uint64 `json:"errors"`
	// NoRetryAfter counts 503 answers without a Retry-After header.
	NoRetryAfter uint64 `json:"no_retry_after"`
}

// load is the three attacks a fault run keeps going.
type load struct {
	attacks []Attack
}

func newLoad(base string, fault Fault, cfg ChaosConfig, tr *tracker, tl *Timeline) *load {
	// The attacks run until the run stops them; their duration is only a
	// backstop in case it does not.
	span := cfg.Lead + cfg.Duration + 3*cfg.RecoveryTimeout + cfg.Tail
	writeRate := cfg.WriteRate
	if fault == FaultAddEventCycle {
		writeRate = cfg.CycleWriteRate
	}
	reads := readTargeter(base)
	l := &load{attacks: []Attack{
		{Name: "GET keep-alive", Targeter: reads, Rate: cfg.Rate / 2, Connections: cfg.Connections, KeepAlive: true},
		{Name: "GET new conn", Targeter: reads, Rate: cfg.Rate - cfg.Rate/2, Connections: cfg.Connections},
		{Name: "POST /events", Targeter: createTargeter(base, fault), Rate: writeRate, Connections: writeConnections, KeepAlive: true},
	}}
	for i := range l.attacks {
		l.attacks[i].Duration = span
		l.attacks[i].Inspect = tr.inspect
		l.attacks[i].Timeline = tl
	}
	return l
}

type loadResult struct {
	reports []Report
	errs    []error
}

func (l *load) start(ctx context.Context) <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		res := loadResult{reports: make([]Report, len(l.attacks)), errs: make([]error, len(l.attacks))}
		var wg sync.WaitGroup
		for i, a := range l.attacks {
			wg.Go(func() { res.reports[i], res.errs[i] = a.Run(ctx) })
		}
		wg.Wait()
		done <- res
	}()
	return done
}

// wait collects the attacks' reports. Their context having been cancelled
// is how a run stops them, not an error.
func (l *load) wait(done <-chan loadResult) ([]Report, error) {
	res := <-done
	var errs []error
	for _, err := range res.errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return res.reports, errors.Join(errs...)
}

// seedEventCount is how many events every simulator starts with
// (event-1 … event-4, the original mock's).
const seedEventCount = 4

// readTargeter cycles through every read path: the lists, each seed user,
// each seed user's events and each seed event.
func readTargeter(base string) vegeta.Targeter {
	paths := []string{"/events"}
	for u := 1; u <= 3; u++ {
		paths = append(paths, fmt.Sprintf("/users/%d", u), fmt.Sprintf("/events/user/%d", u))
	}
	for e := 1; e <= seedEventCount; e++ {
		paths = append(paths, fmt.Sprintf("/events/event-%d", e))
	}
	var n atomic.Uint64
	return func(t *vegeta.Target) error {
		t.Method = http.MethodGet
		t.URL = base + paths[(n.Add(1)-1)%uint64(len(paths))]
		return nil
	}
}

// createTargeter POSTs events with names unique to this run, spread over
// the seed users.
func createTargeter(base string, fault Fault) vegeta.Targeter {
	var n atomic.Uint64
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	hdr := http.Header{"Content-Type": {"application/json"}}
	return func(t *vegeta.Target) error {
		i := n.Add(1)
		t.Method = http.MethodPost
		t.URL = base + "/events"
		t.Header = hdr
		t.Body = fmt.Appendf(nil, `{"name":"chaos %s %s %d","userId":%d}`, fault, run, i, 1+i%3)
		return nil
	}
}

// kindOf names the kind of a request the load sent.
func kindOf(method, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return method + " ?"
	}
	p := u.Path
	switch {
	case method == http.MethodPost:
		return KindCreate
	case p == "/events":
		return KindEvents
	case strings.HasPrefix(p, "/events/user/"):
		return KindUserEvents
	case strings.HasPrefix(p, "/events/"):
		return KindEvent
	case strings.HasPrefix(p, "/users/"):
		return KindUser
	default:
		return method + " " + p
	}
}

// tracker sees every result of the load, from the attacks' goroutines.
type tracker struct {
	mu       sync.Mutex
	kinds    map[string]*KindCounts
	okStarts map[string][]time.Time // per kind, starts of successful requests
	okEnds   map[string][]time.Time // their answers, index for index
	lastOK   map[string]time.Time   // per kind, the latest start among them
	created  []string
	sent     atomic.Uint64
	failed   atomic.Uint64 // no answer
	httpErrs atomic.Uint64 // answered >= 400
}

func newTracker() *tracker {
	return &tracker{
		kinds:    make(map[string]*KindCounts),
		okStarts: make(map[string][]time.Time),
		okEnds:   make(map[string][]time.Time),
		lastOK:   make(map[string]time.Time),
	}
}

func (t *tracker) inspect(res *vegeta.Result) {
	t.sent.Add(1)
	switch {
	case res.Code == 0:
		t.failed.Add(1)
	case res.Code >= 400:
		t.httpErrs.Add(1)
	}
	kind := kindOf(res.Method, res.URL)
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[kind]
	if k == nil {
		k = &KindCounts{Status: make(map[int]uint64), Errors: make(map[ErrorKind]uint64)}
		t.kinds[kind] = k
	}
	k.Requests++
	if res.Code == 0 {
		k.Errors[Classify(res.Error)]++
		return
	}
	k.Status[int(res.Code)]++
	if res.Code == http.StatusServiceUnavailable && res.Headers.Get("Retry-After") == "" {
		k.NoRetryAfter++
	}
	if res.Code < 200 || res.Code >= 300 {
		return
	}
	t.okStarts[kind] = append(t.okStarts[kind], res.Timestamp)
	t.okEnds[kind] = append(t.okEnds[kind], res.End())
	if res.Timestamp.After(t.lastOK[kind]) {
		t.lastOK[kind] = res.Timestamp
	}
	if kind == KindCreate && res.Code == http.StatusCreated {
		if loc := res.Headers.Get("Location"); loc != "" {
			t.created = append(t.created, path.Base(loc))
		}
	}
}

// allRecovered reports whether every kind sent so far has had a success
// sent at or after end.
func (t *tracker) allRecovered(end time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for kind := range t.kinds {
		if t.lastOK[kind].Before(end) {
			return false
		}
	}
	return true
}

// recovery returns, per kind, the time from end to the answer of the
// first success sent at or after end, or -1.
func (t *tracker) recovery(end time.Time) map[string]time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]time.Duration, len(t.kinds))
	for kind := range t.kinds {
		out[kind] = -1
		for i, s := range t.okStarts[kind] {
			if d := t.okEnds[kind][i].Sub(end); !s.Before(end) && (out[kind] < 0 || d < out[kind]) {
				out[kind] = d
			}
		}
	}
	return out
}

func (t *tracker) counts() map[string]*KindCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.kinds)
}

func (t *tracker) createdIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.created)
}
