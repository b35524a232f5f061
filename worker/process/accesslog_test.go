package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/amexd/amexd/internal/simulator"
)

// lockedBuffer is a bytes.Buffer safe for the access log's flusher.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestAccessLogLineCarriesTheAnswer(t *testing.T) {
	cfg := testConfig()
	cfg.Log.Access = true
	cfg.Log.Format = "json"
	sim, err := simulator.New(cfg.Simulator)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(sim)
	defer up.Close()
	cfg.Upstream.URL = up.URL
	var out lockedBuffer
	w, err := Build(context.Background(), cfg, Options{Slot: 3, PID: 7, AccessOut: &out})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.App.Handler())
	paths := []string{"/users/1", "/users/1", "/nowhere"}
	ids := map[string]int{}
	for _, p := range paths {
		res, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		ids[res.Header.Get("X-Request-ID")] = res.StatusCode
	}
	srv.Close()
	if err := w.CloseAccessLog(); err != nil {
		t.Fatal(err)
	}
	w.Close()

	out.mu.Lock()
	defer out.mu.Unlock()
	sc := bufio.NewScanner(&out.b)
	var lines []map[string]any
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		if line["msg"] == "request" {
			lines = append(lines, line)
		}
	}
	if len(lines) != len(paths) {
		t.Fatalf("%d request lines for %d requests: %v", len(lines), len(paths), lines)
	}
	for i, line := range lines {
		id, _ := line["request_id"].(string)
		status, ok := ids[id]
		if !ok || line["status"] != float64(status) || line["path"] != paths[i] || line["slot"] != 3.0 || line["pid"] != 7.0 {
			t.Errorf("line %d = %v; answers by request ID: %v", i, line, ids)
		}
	}
	if lines[0]["cache"] != "MISS" || lines[1]["cache"] != "HIT" || lines[2]["status"] != float64(http.StatusNotFound) {
		t.Errorf("cache status or 404 not recorded: %v", lines)
	}
}
