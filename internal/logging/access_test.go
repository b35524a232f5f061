package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// writes records every Write separately.
type writes struct {
	mu  sync.Mutex
	all [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, bytes.Clone(p))
	return len(p), nil
}

func (w *writes) joined() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Join(w.all, nil)
}

func newTestAccessLog(t *testing.T, format string) (*AccessLog, *writes) {
	t.Helper()
	w := &writes{}
	// An hour: nothing is written by the interval during a test.
	l, err := NewAccessLog(w, format, time.Hour, nil, slog.Int("slot", 1), slog.Int("pid", 42))
	if err != nil {
		t.Fatal(err)
	}
	return l, w
}

// clientText is client-controlled text with everything that could break a
// line or fake a field.
const clientText = "/x\"y\\z\n{\"fake\":1}\r\t\x1b[31m\x00\xff end"

func TestAccessLogJSONLine(t *testing.T) {
	l, w := newTestAccessLog(t, "json")
	at := time.Date(2026, 12, 1, 10, 0, 0, 123e6, time.UTC)
	l.Log(&Request{Time: at, ID: "abc", Method: "GET", Path: clientText, Status: 503, Bytes: 99,
		Duration: 1500 * time.Microsecond, IP: "192.0.2.1", Cache: "HIT"})
	if len(w.joined()) != 0 {
		t.Fatal("a line was written before a flush")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out := w.joined()
	if bytes.Count(out, []byte("\n")) != 1 || !bytes.HasSuffix(out, []byte("\n")) {
		t.Fatalf("want exactly one line, got %q", out)
	}
	var line map[string]any
	if err := json.Unmarshal(out, &line); err != nil {
		t.Fatalf("not JSON: %q: %v", out, err)
	}
	want := map[string]any{
		"time": "2026-12-01T10:00:00.123Z", "level": "WARN", "msg": "request", "slot": 1.0, "pid": 42.0,
		"request_id": "abc", "method": "GET", "path": strings.ToValidUTF8(clientText, "\uFFFD"),
		"status": 503.0, "bytes": 99.0, "ms": 1.5, "ip": "192.0.2.1", "cache": "HIT",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %#v, want %#v", k, line[k], v)
		}
	}
	if len(line) != len(want) {
		t.Errorf("line has %d fields, want %d: %v", len(line), len(want), line)
	}
}

func TestAccessLogTextEscapesClientText(t *testing.T) {
	l, w := newTestAccessLog(t, "text")
	l.Log(&Request{Time: time.Now(), ID: "abc", Method: "GET", Path: clientText, Status: 200, IP: "192.0.2.1"})
	l.Log(&Request{Time: time.Now(), ID: "abd", Method: "GET", Path: hostile, Status: 200, IP: "192.0.2.1"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out := string(w.joined())
	body := strings.Replace(strings.TrimSuffix(out, "\n"), "\n", "", 1)
	if strings.ContainsAny(body, "\n\r\t\x1b\x00\x07\u202e") || strings.Count(out, "\n") != 2 {
		t.Fatalf("control characters reached the line: %q", out)
	}
	for _, want := range []string{" INF request slot=1 pid=42 request_id=abc method=GET path=", ` status=200 `, ` cache=""`} {
		if !strings.Contains(out, want) {
			t.Errorf("line %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, " fake") || !strings.Contains(out, `\n`) || !strings.Contains(out, `\x1b`) {
		t.Errorf("path not quoted with escapes: %q", out)
	}
}

// Lines are written in whole lines of at most flushSize bytes, so that
// processes sharing one pipe never interleave, and none is lost when many
// goroutines log at once.
func TestAccessLogWritesWholeLinesAndLosesNone(t *testing.T) {
	l, w := newTestAccessLog(t, "json")
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.Log(&Request{Time: time.Now(), ID: fmt.Sprintf("%d-%d", g, i), Method: "GET", Path: "/users/1", Status: 200})
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range w.all {
		if len(p) > flushSize || p[len(p)-1] != '\n' {
			t.Fatalf("a write of %d bytes does not end a line within %d bytes", len(p), flushSize)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(w.joined()))
	for sc.Scan() {
		var line struct {
			ID string `json:"request_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		seen[line.ID] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct lines, want %d", len(seen), goroutines*each)
	}
	if len(w.all) < 2 {
		t.Errorf("%d writes: a full buffer should be written without waiting for Close", len(w.all))
	}
}

func TestAccessLogFlushesOnInterval(t *testing.T) {
	w := &writes{}
	l, err := NewAccessLog(w, "json", time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Log(&Request{Time: time.Now(), ID: "tick", Status: 200})
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(w.joined(), []byte(`"tick"`)) {
		if time.Now().After(deadline) {
			t.Fatal("the line was not written by the flush interval")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewAccessLogRejectsBadInput(t *testing.T) {
	if _, err := NewAccessLog(&writes{}, "xml", time.Second, nil); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := NewAccessLog(&writes{}, "json", 0, nil); err == nil {
		t.Error("a zero flush interval accepted")
	}
}

func TestFileFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/access.log"
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	// What logrotate's default (create) mode does: move the file away.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{path + ".1": "one\n", path: "two\n"} {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", p, got, err, want)
		}
	}
}

// full is a writer on a full disk until room is made: it takes the first
// room bytes of a write, then fails.
type full struct {
	writes
	room int
}

func (f *full) Write(p []byte) (int, error) {
	if len(p) <= f.room {
		f.room -= len(p)
		return f.writes.Write(p)
	}
	n := f.room
	f.room = 0
	if n > 0 {
		_, _ = f.writes.Write(p[:n])
	}
	return n, syscall.ENOSPC
}

func TestAccessLogCountsDroppedLinesAndWarnsOnceAMinute(t *testing.T) {
	var warnings bytes.Buffer
	warn := slog.New(slog.NewJSONHandler(&warnings, nil))
	w := &full{}
	l, err := NewAccessLog(w, "json", time.Hour, warn)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return clock }
	logN := func(prefix string, n int) {
		for i := range n {
			l.Log(&Request{Time: clock, ID: fmt.Sprintf("%s-%d", prefix, i), Status: 200})
		}
	}

	logN("full", 3)
	if err := l.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("flush on a full disk: %v, want ENOSPC", err)
	}
	clock = clock.Add(30 * time.Second)
	logN("still-full", 2)
	_ = l.Flush()
	if got := l.Dropped(); got != 5 {
		t.Errorf("dropped %d lines, want 5", got)
	}
	if n := strings.Count(warnings.String(), `"level":"WARN"`); n != 1 {
		t.Errorf("%d warnings within a minute, want 1:\n%s", n, warnings.String())
	}
	if !strings.Contains(warnings.String(), "no space left on device") {
		t.Errorf("the warning lacks the error:\n%s", warnings.String())
	}

	// Room for one line and a half: the torn line counts as dropped.
	line := len(l.appendLine(nil, &Request{Time: clock, ID: "room-0", Status: 200}))
	w.room = line + line/2
	clock = clock.Add(31 * time.Second)
	logN("room", 2)
	_ = l.Flush()
	if got := l.Dropped(); got != 6 {
		t.Errorf("dropped %d lines, want 6", got)
	}
	if n := strings.Count(warnings.String(), `"level":"WARN"`); n != 2 {
		t.Errorf("%d warnings after a minute, want 2:\n%s", n, warnings.String())
	}

	// Space is back: lines are written again.
	w.room = 1 << 20
	logN("back", 2)
	if err := l.Close(); err != nil {
		t.Fatalf("close with room: %v", err)
	}
	got := string(w.joined())
	for _, id := range []string{"room-0", "back-0", "back-1"} {
		if !strings.Contains(got, `"`+id+`"`) {
			t.Errorf("line %s not written:\n%s", id, got)
		}
	}
	if strings.Contains(got, "full-") {
		t.Errorf("dropped lines were written later:\n%s", got)
	}
}

// A line's time and milliseconds read as time.Format and strconv would
// write them, across seconds, zones and the formats' edge cases.
func TestAccessLogTimeAndMillisMatchTheStandardFormats(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("east", 5*3600+30*60), time.FixedZone("west", -8*3600)}
	base := time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC)
	offsets := []time.Duration{0, time.Millisecond - 1, time.Millisecond, 999999999, time.Second, 1500 * time.Millisecond, 2*time.Second + 7*time.Millisecond}
	for _, format := range []string{"json", "text"} {
		l, _ := newTestAccessLog(t, format)
		layout := "2006-01-02T15:04:05.000Z07:00"
		if format == "text" {
			layout = time.TimeOnly + ".000"
		}
		for _, off := range offsets {
			for _, z := range zones {
				at := base.Add(off).In(z)
				if got, want := string(l.stamp.append(nil, at, format == "json")), at.Format(layout); got != want {
					t.Errorf("%s %v: %q, want %q", format, at, got, want)
				}
			}
		}
	}
	durations := []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond, 1500 * time.Microsecond,
		1010 * time.Microsecond, 1234567 * time.Microsecond, 20 * time.Millisecond, time.Hour + 3*time.Microsecond, -1500 * time.Microsecond, 1<<63 - 1}
	for us := range 20000 {
		durations = append(durations, time.Duration(us)*time.Microsecond)
	}
	for _, d := range durations {
		if got, want := string(appendMillis(nil, d)), strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', -1, 64); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

// BenchmarkAccessLogJSONLine is one request's line: encoded into the
// buffer, written out (to io.Discard) every 4 KiB.
func BenchmarkAccessLogJSONLine(b *testing.B) {
	l, err := NewAccessLog(io.Discard, "json", time.Hour, nil, slog.Int("slot", 1), slog.Int("pid", 42))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := Request{ID: "5f3a9c0d1e2b4a68", Method: "GET", Path: "/users/1", Status: 200, Bytes: 84,
		Duration: 137 * time.Microsecond, IP: "127.0.0.1", Cache: "HIT"}
	b.ReportAllocs()
	for b.Loop() {
		r.Time = time.Now()
		l.Log(&r)
	}
}
