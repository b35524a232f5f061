package worker

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/logging"
)

// logLines is a log destination that hands each line to the test as it is
// written, so a test waits for a line instead of sleeping.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// await returns the first line that has every one of want, failing the
// test if none comes within a generous bound.
func (l logLines) await(t *testing.T, want ...string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-l:
			if containsAll(line, want) {
				return line
			}
		case <-timeout:
			t.Fatalf("no log line with %q within 30s", want)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// TestAccessLogEscapesClientText sends the terminal escapes in a
// path to a worker that logs to a terminal (tint with colour).
func TestAccessLogEscapesClientText(t *testing.T) {
	cfg := testConfig()
	cfg.Log.Access = true
	lines := make(logLines, 100)
	log, err := logging.New(lines, "tint", "info")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, cfg, log)
	const path = "/users/%1b%5d0;PWNED%07%1b%5b2J%0Aforged%5Cx1b"
	if a := e.do(t, "GET", path, ""); a.status != http.StatusBadRequest {
		t.Fatalf("GET %s = %d, want 400", path, a.status)
	}
	line := lines.await(t, "PWNED")
	sgr := regexp.MustCompile(`\x1b\[[0-9;]*m`)
	if rest := sgr.ReplaceAllString(line, ""); strings.ContainsAny(rest, "\x1b\x07") || strings.Count(line, "\n") != 1 {
		t.Fatalf("the access log passed the client's escapes to the terminal: %q", line)
	}
	if !strings.Contains(line, `\u001b]0;PWNED\u0007\u001b[2J\nforged\x5cx1b`) {
		t.Errorf("the path is not shown escaped: %q", line)
	}
}

// TestClientDisconnectIs499 half-closes a real TCP connection after its
// request, as `printf 'GET /users ...' | nc -q 2` does, while the upstream
// has not answered: the worker must log a client disconnect at info and
// count a 499, not an error and a 500.
func TestClientDisconnectIs499(t *testing.T) {
	reached := make(chan struct{}, 10)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "released", http.StatusServiceUnavailable)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) }) // runs before up.Close

	cfg := testConfig()
	cfg.Log.Access = true
	cfg.Upstream.URL = up.URL
	lines := make(logLines, 100)
	log, err := logging.New(lines, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	e, err := build(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	srv := httptest.NewServer(e.app.Handler())
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /users HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	<-reached
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}

	var entry map[string]any
	if err := json.Unmarshal([]byte(lines.await(t, `"client disconnected"`)), &entry); err != nil {
		t.Fatal(err)
	}
	if entry["level"] != "INFO" || entry["status"] != float64(499) || entry["path"] != "/users" {
		t.Errorf("disconnect logged as %v, want INFO with status 499 and the path", entry)
	}
	access := lines.await(t, `"msg":"request"`)
	if !strings.Contains(access, `"level":"INFO"`) || !strings.Contains(access, `"status":499`) {
		t.Errorf("access log line %s, want INFO with status 499", access)
	}
	// The client's read side is still open: it sees the 499 too.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 499") {
		t.Errorf("status line %q (%v), want 499", status, err)
	}
	exposition, err := e.series.Exposition()
	if err != nil {
		t.Fatal(err)
	}
	metrics := string(exposition)
	if !strings.Contains(metrics, `code="499"`) || regexp.MustCompile(`amexd_http_requests_total\{code="5`).MatchString(metrics) {
		t.Errorf("metrics should count the disconnect as 499 and no 5xx:\n%s", grep(metrics, "amexd_http_requests_total"))
	}
	for {
		select {
		case line := <-lines:
			if strings.Contains(line, `"level":"ERROR"`) {
				t.Errorf("a client disconnect logged an error: %s", line)
			}
			continue
		default:
		}
		break
	}
}

func grep(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestInvalidUTF8Refused posts a name that is not UTF-8 to both create
// paths: it must be refused, not stored as U+FFFD.
func TestInvalidUTF8Refused(t *testing.T) {
	e := newEnv(t, testConfig())
	for _, path := range []string{"/events", "/addEvent"} {
		for _, body := range []string{
			"{\"name\":\"\xff\xfe\",\"userId\":1}",
			"{\"name\":\"ok\",\"userId\":1,\"details\":\"caf\xe9\"}",
			`{"name":"\ud800","userId":1}`,
		} {
			a := e.do(t, "POST", path, body)
			if a.status != http.StatusBadRequest {
				t.Fatalf("POST %s %q = %d %s, want 400", path, body, a.status, a.body)
			}
			if code := a.errorCode(t); code != "invalid_field" {
				t.Errorf("POST %s %q: code %q, want invalid_field", path, body, code)
			}
		}
	}
	if got := e.sim.Stats().AddEvent.Created; got != 0 {
		t.Errorf("upstream created %d events from invalid UTF-8", got)
	}
}
