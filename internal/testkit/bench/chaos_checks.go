package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
)

// DataCheck is what the check after a fault found: every event answered
// 201 read back on new connections, as itself and in its user's list, and
// looked up in the simulator.
type DataCheck struct {
	// Created counts the events answered 201.
	Created int `json:"created"`
	// Reads counts the check's GETs; Retried those repeated after a 503 or
	// 504, which the check tolerates until RecoveryTimeout.
	Reads   int `json:"reads"`
	Retried int `json:"retried"`
	// Unreadable describes every read that did not show an event.
	Unreadable []string `json:"unreadable,omitempty"`
	// MissingUpstream lists event IDs answered 201 that the simulator lacks.
	MissingUpstream []string `json:"missing_upstream,omitempty"`
}

// OK reports whether every event was readable and none missing upstream.
func (d DataCheck) OK() bool { return len(d.Unreadable) == 0 && len(d.MissingUpstream) == 0 }

// checkData reads every event of ids back reps times on new connections,
// as itself and in its user's list, and looks it up in sim. A read
// answered 503 or 504 is repeated until timeout: the check is about data,
// and a breaker still half-open after the fault is not a data loss.
func checkData(ctx context.Context, base string, sim *simulator.Simulator, ids []string, reps int, timeout time.Duration) DataCheck {
	dc := DataCheck{Created: len(ids)}
	byUser := make(map[int][]string)
	for _, id := range ids {
		ev, ok := upstreamEvent(sim, id)
		user, err := strconv.Atoi(string(ev.UserID))
		if !ok || err != nil {
			dc.MissingUpstream = append(dc.MissingUpstream, id)
			continue
		}
		byUser[user] = append(byUser[user], id)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var mu sync.Mutex
	note := func(reads, retried int, problem string) {
		mu.Lock()
		defer mu.Unlock()
		dc.Reads += reads
		dc.Retried += retried
		if problem != "" {
			dc.Unreadable = append(dc.Unreadable, problem)
		}
	}
	var g errgroup.Group
	g.SetLimit(8)
	read := func(p string, want []string) {
		g.Go(func() error {
			note(readBack(ctx, client, base+p, want, timeout))
			return nil
		})
	}
	for range reps {
		for _, id := range ids {
			if !slices.Contains(dc.MissingUpstream, id) {
				read("/events/"+id, []string{id})
			}
		}
		for _, u := range slices.Sorted(maps.Keys(byUser)) {
			read(fmt.Sprintf("/events/user/%d", u), byUser[u])
		}
	}
	_ = g.Wait() // the reads report through note, never as an error
	slices.Sort(dc.Unreadable)
	return dc
}

// readBack GETs url until it answers something other than 503/504 or
// timeout passes, and describes what is wrong if the answer is not a 200
// naming every ID of want.
func readBack(ctx context.Context, client *http.Client, url string, want []string, timeout time.Duration) (reads, retried int, problem string) {
	deadline := time.Now().Add(timeout)
	for {
		reads++
		code, body, err := fetchAny(ctx, client, url)
		switch {
		case err != nil:
			return reads, retried, fmt.Sprintf("GET %s: %v", url, err)
		case (code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout) && time.Now().Before(deadline):
			retried++
			if sleepCtx(ctx, 50*time.Millisecond) != nil {
				return reads, retried, fmt.Sprintf("GET %s: %v", url, ctx.Err())
			}
			continue
		case code != http.StatusOK:
			return reads, retried, fmt.Sprintf("GET %s: %d", url, code)
		}
		var missing []string
		for _, id := range want {
			if !strings.Contains(body, `"id":`+idJSON(id)) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return reads, retried, fmt.Sprintf("GET %s: 200 without %s", url, strings.Join(missing, ", "))
		}
		return reads, retried, ""
	}
}

func fetchAny(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// upstreamEvent looks id up in the simulator through its handler, so the
// check does not depend on the upstream's listener.
func upstreamEvent(sim *simulator.Simulator, id string) (eventapi.Event, bool) {
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, eventapi.PathEventByID+url.PathEscape(id), nil))
	var ev eventapi.Event
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &ev) != nil {
		return ev, false
	}
	key, ok := eventapi.KeyOf(ev.ID)
	return ev, ok && key == id
}

// idJSON is how an event record holds the id of key id: a number for
// decimal digits (amexd's ids), else a string.
func idJSON(id string) string {
	if id != "" && strings.TrimLeft(id, "0123456789") == "" {
		return id
	}
	return strconv.Quote(id)
}
