package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
)

// originalAnswer is what a client of the original service reads from an
// answer to addEvent: success, and on failure an error and a message.
type originalAnswer struct {
	Success bool            `json:"success"`
	ID      json.RawMessage `json:"id"`
	Error   json.RawMessage `json:"error"`
	Message string          `json:"message"`
}

// TestOriginalAPIConformance sends the original task's documented requests
// to amexd, as its clients send them, and checks what those clients
// expect: the documented curl creates an event that the user's list then
// shows, each original read path answers its JSON array, and a failure is
// read as one.
func TestOriginalAPIConformance(t *testing.T) {
	d := start(t, "-workers", "2", "-simulator.add_fail", "0", "-simulator.list_error_rate", "0",
		"-simulator.event_delay", "10ms")
	c := fresh()

	// curl --location --request POST 'http://localhost:3000/addEvent' \
	// --header 'Content-Type: application/json' \
	// --data-raw '{ "name": "hello", "userId": "3" }'
	req, err := http.NewRequest(http.MethodPost, d.url("/addEvent"), strings.NewReader("{\n    \"name\": \"hello\",\n    \"userId\": \"3\"\n}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, body := do(t, c, req)
	var created originalAnswer
	if err := json.Unmarshal([]byte(body), &created); err != nil || status/100 != 2 || !created.Success || len(created.ID) == 0 {
		t.Fatalf("the documented curl: %d %s, want 2xx with \"success\": true and the event's id", status, body)
	}

	// Every original read path answers a JSON array, and the new event is
	// in the user's list and in every event, whichever worker answers.
	for _, path := range []string{"/getUsers", "/getEvents", "/getEventsByUserId/3"} {
		for range 3 {
			status, body := get(t, c, d.url(path))
			var items []map[string]any
			if err := json.Unmarshal([]byte(body), &items); status != http.StatusOK || err != nil || len(items) == 0 {
				t.Fatalf("GET %s: %d %s, want 200 with a JSON array", path, status, body)
			}
			if path != "/getUsers" && !hasEvent(items, created.ID, "hello") {
				t.Errorf("GET %s does not show %s: %s", path, created.ID, body)
			}
		}
	}

	// Bodies the original took: userId a number, extra fields, a
	// client-chosen id (never used: it names an existing event here).
	for _, b := range []string{
		`{"name":"numeric user","userId":3}`,
		`{"name":"extra fields","userId":"3","venue":"roof","tags":["a"]}`,
		`{"id":"event-1","name":"chosen id","userId":2}`,
		`{"id":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `,"name":"Date.now() id","userId":"2"}`,
	} {
		status, body := post(t, c, d.url("/addEvent"), b)
		var a originalAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil || status != http.StatusOK || !a.Success || len(a.ID) == 0 || string(a.ID) == `"event-1"` {
			t.Errorf("POST /addEvent %s: %d %s, want 200, success and a new id", b, status, body)
		}
	}
	if _, body := get(t, c, d.url("/events/event-1")); !strings.Contains(body, `"name":"Event 1"`) {
		t.Errorf("event-1 was overwritten: %s", body)
	}

	// Failures an original client must read as failures.
	for _, tc := range []struct{ body, code string }{
		{`{"name":"orphan","userId":"99"}`, "unknown_user"},
		{`{"name":"x","userId":"three"}`, "invalid_field"},
		{`{"name":`, "malformed_json"},
	} {
		status, body := post(t, c, d.url("/addEvent"), tc.body)
		var a struct {
			Success *bool `json:"success"`
			Error   struct {
				Code string `json:"code"`
			} `json:"error"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil || status/100 == 2 || a.Success == nil || *a.Success ||
			a.Error.Code != tc.code || a.Message == "" {
			t.Errorf("POST /addEvent %s: %d %s, want non-2xx, \"success\": false, code %s and a message", tc.body, status, body, tc.code)
		}
	}
	if status, body := get(t, c, d.url("/getEventsByUserId/99")); status != http.StatusNotFound || !strings.Contains(body, `"success":false`) {
		t.Errorf("GET /getEventsByUserId/99: %d %s, want 404 with \"success\": false", status, body)
	}
}

// TestOriginalClientAgainstSimulator is a client built like the original
// service pointed at the simulator: it sends {"id": Date.now(), ...} with
// userId as the string it got, reads "success", then reads the user's
// events back one by one as the original did.
func TestOriginalClientAgainstSimulator(t *testing.T) {
	cfg := simulator.DefaultConfig()
	cfg.AddFail, cfg.ListErrorRate, cfg.EventDelay = 0, 0, time.Millisecond
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c := fresh()

	now := time.Now().UnixMilli()
	var ids []string
	for i, b := range []string{
		`{"id":1733000000000,"name":"x","userId":"3"}`,
		`{"id":` + strconv.FormatInt(now, 10) + `,"name":"hello","userId":"3"}`,
		`{"id":` + strconv.FormatInt(now+1, 10) + `,"name":"numeric","userId":3}`,
	} {
		status, body := post(t, c, srv.URL+"/addEvent", b)
		var a originalAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil || status != http.StatusOK || !a.Success {
			t.Fatalf("addEvent %d %s: %d %s, want 200 with \"success\": true", i, b, status, body)
		}
		var sent struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal([]byte(b), &sent); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(sent.ID))
	}
	status, body := get(t, c, srv.URL+"/getUserById/3")
	var user eventapi.User
	if err := json.Unmarshal([]byte(body), &user); err != nil || status != http.StatusOK {
		t.Fatalf("getUserById/3: %d %s", status, body)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(user.Events, func(e json.RawMessage) bool { return string(e) == id }) {
			t.Errorf("user 3 does not list %s: %s", id, user.Events)
		}
		if status, body := get(t, c, srv.URL+"/getEventById/"+id); status != http.StatusOK || !strings.Contains(body, `"userId":`) {
			t.Errorf("getEventById/%s: %d %s", id, status, body)
		}
	}
	if got := sim.Stats().AddEvent.Created; got != 3 {
		t.Errorf("the simulator created %d events, want 3", got)
	}
}

// hasEvent reports whether items holds an event of id (its JSON) and name.
func hasEvent(items []map[string]any, id json.RawMessage, name string) bool {
	return slices.ContainsFunc(items, func(m map[string]any) bool {
		got, err := json.Marshal(m["id"])
		return err == nil && string(got) == string(id) && m["name"] == name
	})
}

// do sends req and returns status and body.
func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
