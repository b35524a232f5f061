package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/testkit/freeport"
)

// TestConformance runs amexd with 2 workers in front of each upstream that
// speaks the Event API's contract: the original mock itself (the seed
// upstream, served by node), and the embedded simulator with its defaults.
// Both answer as the original does: numeric ids that are not keys, empty
// 200s for unknown ids, 5% dropped list calls, a 500 ms getEventById and
// addEvent's 5-ok/10-fail cycle. Every route of both of amexd's contracts
// must hold the upstream's JSON values, unknown ids must be 404s, the
// original task's curl must work, writes must get through the failure
// cycle without a 500, and no read breaker may open.
func TestConformance(t *testing.T) {
	for _, up := range []struct {
		name  string
		start func(t *testing.T) []string // amexd's arguments for it
	}{
		{"seed upstream", func(t *testing.T) []string {
			return []string{"-upstream.url", startSeedUpstream(t)}
		}},
		{"embedded simulator", func(*testing.T) []string { return nil }},
	} {
		t.Run(up.name, func(t *testing.T) {
			args := append([]string{"-workers", "2"}, up.start(t)...)
			d := start(t, args...)
			c := &conformance{t: t, d: d, http: fresh()}
			if len(args) > 2 {
				c.upstream = args[3]
			} else {
				c.upstream = c.simulatorURL()
			}
			// Each check is a subtest, so that one failing does not hide the
			// others; they run in order, on the state the previous left.
			for _, check := range []struct {
				name string
				run  func()
			}{
				{"reads hold the upstream's records", c.reads},
				{"unknown ids are 404s", c.unknownIDs},
				{"the task's curl", c.devTaskCurl},
				{"writes through the failure cycle", c.writesThroughTheFailureCycle},
				{"no read breaker opened", c.noReadBreakerOpened},
			} {
				t.Run(check.name, func(t *testing.T) {
					c.t = t
					check.run()
				})
			}
		})
	}
}

// conformance is one amexd and its upstream under test.
type conformance struct {
	t        *testing.T
	d        *daemon
	http     *http.Client
	upstream string // the Event API's base URL
}

// simulatorURL finds the embedded simulator's address in amexd's log.
func (c *conformance) simulatorURL() string {
	for _, line := range c.d.logLines(c.t) {
		if url, ok := line["url"].(string); ok && strings.Contains(fmt.Sprint(line["msg"]), "embedded simulator") {
			return url
		}
	}
	c.t.Fatal("amexd logged no embedded simulator address")
	return ""
}

// upstreamJSON reads path from the Event API directly, retrying the
// connections it drops, and decodes its JSON.
func (c *conformance) upstreamJSON(path string) any {
	c.t.Helper()
	for range 10 {
		res, err := c.http.Get(c.upstream + path)
		if err != nil {
			continue // a dropped list call
		}
		var v any
		err = json.NewDecoder(res.Body).Decode(&v)
		res.Body.Close()
		if err != nil {
			c.t.Fatalf("upstream GET %s: %d, %v", path, res.StatusCode, err)
		}
		return v
	}
	c.t.Fatalf("upstream GET %s: every attempt failed", path)
	return nil
}

// getJSON reads path from amexd, wants 200, and decodes its JSON.
func (c *conformance) getJSON(path string) any {
	c.t.Helper()
	status, body := get(c.t, c.http, c.d.url(path))
	var v any
	if err := json.Unmarshal([]byte(body), &v); status != http.StatusOK || err != nil {
		c.t.Fatalf("GET %s: %d %s, want 200 with JSON", path, status, body)
	}
	return v
}

// same wants amexd's answer on each path to hold the upstream's values.
func (c *conformance) same(want any, paths ...string) {
	c.t.Helper()
	for _, p := range paths {
		if got := c.getJSON(p); !reflect.DeepEqual(got, want) {
			c.t.Errorf("GET %s = %v\nwant the upstream's %v", p, got, want)
		}
	}
}

func (c *conformance) reads() {
	t := c.t
	users := c.upstreamJSON(eventapi.PathUsers)
	c.same(users, "/users", "/getUsers")
	var names []string
	for _, u := range users.([]any) {
		names = append(names, fmt.Sprint(u.(map[string]any)["userName"]))
	}
	if strings.Join(names, ",") != "user1,user2,user3" {
		t.Errorf("userNames %v, want user1, user2, user3", names)
	}
	c.same(c.upstreamJSON("/getUserById/1"), "/users/1")
	if u := c.getJSON("/users/3").(map[string]any); u["userName"] != "user3" || u["id"] != 2.0 {
		t.Errorf("/users/3 = %v, want user3, whose record says id 2", u)
	}

	events := c.upstreamJSON(eventapi.PathEvents)
	if n := len(events.([]any)); n != 4 {
		t.Errorf("the upstream holds %d events, want the 4 seeded", n)
	}
	c.same(events, "/events", "/getEvents")
	event1 := c.upstreamJSON("/getEventById/event-1")
	c.same(event1, "/events/event-1", "/events/1")

	began := time.Now()
	first := c.getJSON("/events/user/1")
	t.Logf("/events/user/1 cold: %v", time.Since(began).Round(time.Millisecond))
	want := []any{event1, c.upstreamJSON("/getEventById/event-3")}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("/events/user/1 = %v, want event-1 and event-3's records %v", first, want)
	}
	c.same(want, "/getEventsByUserId/1")
}

func (c *conformance) unknownIDs() {
	for _, tc := range []struct{ path, code string }{
		{"/users/99", "user_not_found"},
		{"/events/77", "event_not_found"},
		{"/events/event-77", "event_not_found"},
		{"/events/user/99", "user_not_found"},
		{"/getEventsByUserId/99", "user_not_found"},
	} {
		status, body := get(c.t, c.http, c.d.url(tc.path))
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); status != http.StatusNotFound || err != nil || e.Error.Code != tc.code {
			c.t.Errorf("GET %s: %d %s, want 404 %s", tc.path, status, body, tc.code)
		}
	}
}

// listed returns how many events of user's list have id, asked on both
// paths twice on new connections, so from either worker, and fails if the
// answers disagree.
func (c *conformance) listed(user int, id string) int {
	c.t.Helper()
	counts := make([]int, 0, 4)
	for _, p := range []string{"/events/user/%d", "/getEventsByUserId/%d", "/events/user/%d", "/getEventsByUserId/%d"} {
		n := 0
		for _, ev := range c.getJSON(fmt.Sprintf(p, user)).([]any) {
			if raw, err := json.Marshal(ev.(map[string]any)["id"]); err == nil && string(raw) == id {
				n++
			}
		}
		counts = append(counts, n)
	}
	for _, n := range counts[1:] {
		if n != counts[0] {
			c.t.Errorf("user %d's lists hold %s %v times on /events/user, /getEventsByUserId, again both", user, id, counts)
		}
	}
	return counts[0]
}

// devTaskCurl is the original task's request:
//
//	curl --location --request POST 'http://localhost:3000/addEvent' \
//	--header 'Content-Type: application/json' \
//	--data-raw '{ "name": "hello", "userId": "3" }'
func (c *conformance) devTaskCurl() {
	status, body := post(c.t, c.http, c.d.url("/addEvent"), `{ "name": "hello", "userId": "3" }`)
	var a struct {
		Success bool            `json:"success"`
		ID      json.RawMessage `json:"id"`
		Name    string          `json:"name"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil || status != http.StatusOK || !a.Success || a.Name != "hello" {
		c.t.Fatalf("the task's curl: %d %s, want 200 with \"success\": true", status, body)
	}
	if n := c.listed(3, string(a.ID)); n != 1 {
		c.t.Errorf("user 3 lists the curl's event %s %d times, want once", a.ID, n)
	}
}

func (c *conformance) writesThroughTheFailureCycle() {
	t := c.t
	type write struct {
		user int
		id   string
	}
	var created []write
	var statuses []int
	for i := range 20 {
		user := i%3 + 1
		res, err := c.http.Post(c.d.url("/events"), "application/json", strings.NewReader(fmt.Sprintf(`{"name":"write %d","userId":%d}`, i, user)))
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		var ev struct {
			ID json.RawMessage `json:"id"`
		}
		err = json.NewDecoder(res.Body).Decode(&ev)
		res.Body.Close()
		statuses = append(statuses, res.StatusCode)
		switch res.StatusCode {
		case http.StatusCreated:
			if err != nil || len(ev.ID) == 0 {
				t.Fatalf("POST %d: 201 without an id (%v)", i, err)
			}
			created = append(created, write{user, string(ev.ID)})
		case http.StatusServiceUnavailable:
			if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("POST %d: 503 with Retry-After %q", i, res.Header.Get("Retry-After"))
			}
		default:
			t.Errorf("POST %d: %d, want 201 or 503", i, res.StatusCode)
		}
	}
	t.Logf("20 POST /events: %v", statuses)
	// The curl took the cycle's first success: four are left.
	for i := range 4 {
		if statuses[i] != http.StatusCreated {
			t.Errorf("POST %d: %d, want one of the cycle's successes", i, statuses[i])
		}
	}
	for _, w := range created {
		if n := c.listed(w.user, w.id); n != 1 {
			t.Errorf("user %d lists created event %s %d times, want once", w.user, w.id, n)
		}
	}
}

func (c *conformance) noReadBreakerOpened() {
	var st control.ClusterStatus
	status, body := get(c.t, c.http, c.d.url("/events/circuit-status"))
	if err := json.Unmarshal([]byte(body), &st); status != http.StatusOK || err != nil || len(st.Workers) != 2 {
		c.t.Fatalf("/events/circuit-status: %d %s, want 2 workers", status, body)
	}
	for _, w := range st.Workers {
		for _, b := range w.Breakers {
			if b.Name != "addEvent" && (b.Opens != 0 || b.State != "closed") {
				c.t.Errorf("worker %d: breaker %s is %s after %d opens, want closed, never opened", w.Slot, b.Name, b.State, b.Opens)
			}
		}
	}
}

// startSeedUpstream serves ../shared/seed-upstream (the original mock)
// with node on a free loopback port until the test ends, and returns its
// URL. .ci/seed-upstream makes the writable copy with its npm packages.
// Without node or npm the test is skipped, except in CI, where it fails.
func startSeedUpstream(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../.ci/seed-upstream").Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 127 {
		msg := fmt.Sprintf("the seed upstream cannot run here: %s", exit.Stderr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err != nil {
		t.Fatalf(".ci/seed-upstream: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	port, err := freeport.On("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "serve.js", strconv.Itoa(port))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node serve.js: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "original mock on") {
				ok = true
				listening <- true
			}
		}
		if !ok {
			listening <- false
		}
	}()
	select {
	case ok := <-listening:
		if !ok {
			t.Fatal("node serve.js exited before listening")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node serve.js did not listen within 30s")
	}
	return "http://127.0.0.1:" + strconv.Itoa(port)
}
