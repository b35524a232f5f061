package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

func TestBaselineServesTheBytes(t *testing.T) {
	body := []byte(`[{"id":"event-1","name":"Launch","userId":1}]`)
	hdr := http.Header{"Content-Type": {"application/json; charset=UTF-8"}, "X-Cache": {"HIT"}}
	b, err := StartBaseline(body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/events", "/anything"} {
		got, gotHdr, err := Fetch(context.Background(), client, b.URL+path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Errorf("%s: body %q, want %q", path, got, body)
		}
		if gotHdr.Get("Content-Type") != hdr.Get("Content-Type") || gotHdr.Get("X-Cache") != "HIT" {
			t.Errorf("%s: headers %v, want those of %v", path, gotHdr, hdr)
		}
		if gotHdr.Get("Date") != "" {
			t.Errorf("%s: Fetch kept the Date header, which the baseline must not replay", path)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get(b.URL); err == nil {
		t.Error("baseline still answers after Close")
	}
}

func TestFetchRejectsNon200(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "no")
	}))
	defer srv.Close()
	if _, _, err := Fetch(context.Background(), srv.Client(), srv.URL); err == nil {
		t.Error("Fetch of a 502 succeeded, want an error")
	}
}

func TestSimulatedEvents(t *testing.T) {
	body, hdr, err := SimulatedEvents()
	if err != nil {
		t.Fatal(err)
	}
	var events []map[string]any
	if err := json.Unmarshal(body, &events); err != nil || len(events) == 0 {
		t.Errorf("simulated events %q: %v, want a non-empty JSON list", body, err)
	}
	if hdr.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", hdr.Get("Content-Type"))
	}
}

func TestMinimalHeader(t *testing.T) {
	body := []byte(`{"id":1}`)
	got := MinimalHeader(http.Header{
		"Content-Type":    {"application/json"},
		"X-Request-Id":    {"abc"},
		"X-Frame-Options": {"DENY"},
	}, body)
	want := http.Header{"Content-Type": {"application/json"}, "Content-Length": {"8"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MinimalHeader = %v, want %v", got, want)
	}
}
