package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// fakeAmexd answers the routes the scenarios use, 503 with Retry-After for
// every other write so the writes check has both outcomes to count.
func fakeAmexd(t *testing.T) *httptest.Server {
	t.Helper()
	var writes atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"id":"event-1","name":"Launch","userId":1}]`)
	})
	mux.HandleFunc("GET /users/1", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"id":1}`)
	})
	mux.HandleFunc("POST /events", func(w http.ResponseWriter, _ *http.Request) {
		if writes.Add(1)%2 == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestRunCachedReportsBaselineRatio(t *testing.T) {
	srv := fakeAmexd(t)
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"-target", srv.URL, "-duration", "1s", "-rate", "50", "-connections", "4", "cached"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	for _, want := range []string{"cached ", "baseline ", "amexd/baseline = ", "serving the 45 bytes of the target's GET /events"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunWritesJSON(t *testing.T) {
	srv := fakeAmexd(t)
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"-target", srv.URL, "-duration", "1s", "-rate", "20", "-connections", "1", "-json", "writes"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	var res struct {
		Reports []struct {
			Name     string         `json:"name"`
			Requests int            `json:"requests"`
			Status   map[string]int `json:"status"`
			Notes    []string       `json:"notes"`
		} `json:"reports"`
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("decode %q: %v", out.String(), err)
	}
	if len(res.Reports) != 1 {
		t.Fatalf("got %d reports, want 1", len(res.Reports))
	}
	rep := res.Reports[0]
	if rep.Status["201"]+rep.Status["503"] != rep.Requests || rep.Status["503"] == 0 {
		t.Errorf("status %v for %d requests, want 201 and 503 only", rep.Status, rep.Requests)
	}
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "503 without Retry-After: 0") {
		t.Errorf("notes %q, want the Retry-After check", rep.Notes)
	}
}

func TestRunRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-target", "http://192.168.1.10:3000", "cached"}, "not a loopback address"},
		{[]string{"-target", "http://127.0.0.1:1", "chaos"}, "not implemented in this tool yet"},
		{[]string{"-target", "http://127.0.0.1:1", "nosuch"}, "unknown scenario"},
		{[]string{"-duration", "0s", "cached"}, "must be positive"},
		{[]string{"-scale", "fanout"}, "not supported"},
		{[]string{"-hosts", "0", "cluster"}, "-hosts 0: must be at least 1"},
		{[]string{"-shared", "memcached", "cluster"}, `-shared "memcached": want redis or none`},
		{[]string{}, "exactly one scenario"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestMixedTargeterBlend(t *testing.T) {
	tr := mixedTargeter("http://127.0.0.1:1")
	counts := map[string]int{}
	for range 1000 {
		var tgt vegeta.Target
		if err := tr(&tgt); err != nil {
			t.Fatal(err)
		}
		counts[tgt.Method+" "+strings.TrimPrefix(tgt.URL, "http://127.0.0.1:1")]++
	}
	reads := counts["GET /events"] + counts["GET /users/1"]
	if reads != 900 || counts["GET /events/user/1"] != 80 || counts["POST /events"] != 20 {
		t.Errorf("blend over 1000 requests = %v, want 900 reads, 80 user events, 20 writes", counts)
	}
}

func TestScaleWorkers(t *testing.T) {
	for _, tc := range []struct {
		cpus int
		want []int
	}{
		{1, []int{1, 2}},
		{2, []int{1, 2, 3, 4}},
		{4, []int{1, 2, 3, 4, 5, 6, 7, 8}},
		{6, []int{1, 2, 4, 6, 8, 12}},
		{16, []int{1, 2, 4, 8, 16, 32}},
	} {
		got := scaleWorkers(tc.cpus)
		if len(got) != len(tc.want) {
			t.Errorf("scaleWorkers(%d) = %v, want %v", tc.cpus, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("scaleWorkers(%d) = %v, want %v", tc.cpus, got, tc.want)
				break
			}
		}
	}
}

func TestRunWritesHTMLPage(t *testing.T) {
	srv := fakeAmexd(t)
	page := filepath.Join(t.TempDir(), "run.html")
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"-target", srv.URL, "-duration", "1s", "-rate", "20", "-connections", "1", "--html", page, "writes"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"<h2>writes</h2>", "<td>writes</td>", `id="amexbench-data"`, `"status":{"201":`, "503 without Retry-After: 0"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if _, err := os.Stat(page + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}
