package worker

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/amexd/amexd/internal/idempotency"
)

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t, testConfig())
	body := `{"name":"Once","userId":1}`
	first := e.do(t, "POST", "/events", body, "Idempotency-Key", "k1")
	if first.status != http.StatusCreated {
		t.Fatalf("first POST = %d %s", first.status, first.body)
	}
	for _, key := range []string{"k1", `"k1"`} { // the draft's quoted form is the same key
		again := e.do(t, "POST", "/events", body, "Idempotency-Key", key)
		if again.status != first.status || string(again.body) != string(first.body) ||
			again.header.Get("Location") != first.header.Get("Location") || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry with %s = %d %s %v, want the first answer %d %s, replayed", key, again.status, again.body, again.header, first.status, first.body)
		}
	}
	if got := e.sim.Stats().AddEvent.Created; got != 1 {
		t.Errorf("upstream created %d events, want 1", got)
	}

	for _, tc := range []struct {
		name, path, key, body string
		status                int
		code                  string
	}{
		{"same key, other body", "/events", "k1", `{"name":"Other","userId":1}`, 422, "idempotency_key_reused"},
		{"same key, other path", "/addEvent", "k1", body, 422, "idempotency_key_reused"},
		{"empty key", "/events", "", body, 400, "invalid_idempotency_key"},
		{"key with a space", "/events", "a b", body, 400, "invalid_idempotency_key"},
		{"key too long", "/events", strings.Repeat("k", 256), body, 400, "invalid_idempotency_key"},
		{"bad body: not kept", "/events", "k2", `{"name":"x","userId":"1"}`, 400, "invalid_field"},
		{"unknown user: not kept", "/events", "k3", `{"name":"x","userId":999}`, 422, "unknown_user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, "POST", tc.path, tc.body, "Idempotency-Key", tc.key)
			if a.status != tc.status || a.errorCode(t) != tc.code {
				t.Errorf("%d %s, want %d %s", a.status, a.body, tc.status, tc.code)
			}
		})
	}
	// A key whose request was refused may carry a corrected one.
	for _, key := range []string{"k2", "k3"} {
		if a := e.do(t, "POST", "/events", `{"name":"Fixed","userId":2}`, "Idempotency-Key", key); a.status != http.StatusCreated {
			t.Errorf("corrected request under %s = %d %s, want 201", key, a.status, a.body)
		}
	}
	if got := e.sim.Stats().AddEvent.Created; got != 3 {
		t.Errorf("upstream created %d events, want 3", got)
	}
}

// TestIdempotencyKeyInFlight: a retry while the first request holds the
// key gets 409 with Retry-After, on either contract.
func TestIdempotencyKeyInFlight(t *testing.T) {
	e := newEnv(t, testConfig())
	body := `{"name":"Slow","userId":1}`
	for _, path := range []string{"/events", "/addEvent"} {
		fp := idempotency.FingerprintOf([]byte("POST"), []byte(path), []byte(body))
		claim, err := e.idem.Begin(context.Background(), "\x00busy", fp, "event-77")
		if err != nil || claim.Outcome != idempotency.Started {
			t.Fatalf("claim: %+v %v", claim, err)
		}
		a := e.do(t, "POST", path, body, "Idempotency-Key", "busy")
		if a.status != http.StatusConflict || a.errorCode(t) != "idempotency_key_in_use" || a.header.Get("Retry-After") == "" {
			t.Errorf("POST %s while in flight = %d %s, want 409 idempotency_key_in_use with Retry-After", path, a.status, a.body)
		}
		// The first attempt failed upstream: the retry runs, under its ID.
		if err := e.idem.Abandon(context.Background(), "\x00busy", claim, true); err != nil {
			t.Fatal(err)
		}
		a = e.do(t, "POST", path, body, "Idempotency-Key", "busy")
		if a.status/100 != 2 || a.header.Get("Location") != "/events/event-77" {
			t.Errorf("POST %s after the failed attempt = %d %s %v, want it created as event-77", path, a.status, a.body, a.header)
		}
		e = newEnv(t, testConfig())
	}
}
