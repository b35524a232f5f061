package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestNewFormats(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "auto", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shown", "k", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("auto on a non-terminal should write one JSON line, got %q: %v", buf.String(), err)
	}
	if line["msg"] != "shown" || line["k"] != float64(1) {
		t.Errorf("line = %v", line)
	}

	buf.Reset()
	log, err = New(&buf, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("plain")
	if out := buf.String(); !strings.Contains(out, "plain") || strings.Contains(out, "\x1b[") {
		t.Errorf("text format should be uncoloured tint output, got %q", out)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ format, level string }{{"xml", "info"}, {"json", "loud"}} {
		if _, err := New(&bytes.Buffer{}, tc.format, tc.level); err == nil {
			t.Errorf("New(%q, %q) succeeded, want an error", tc.format, tc.level)
		}
	}
}

// hostile holds what a client can put in a path, a header or a body: a
// terminal title change, a screen clear, a forged second log line, a
// literal escape that a quoting handler could turn into a real one,
// invalid UTF-8 and a bidirectional override.
const hostile = "/users/\x1b]0;PWNED\x07\x1b[2J\nlevel=ERROR msg=forged \\x1b[31m \xff\xfe \u202e"

func TestTextLogsEscapeClientText(t *testing.T) {
	for _, format := range []string{"text", "tint"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(&buf, format, "info")
			if err != nil {
				t.Fatal(err)
			}
			log.With("peer", hostile).Info(hostile, "path", hostile, "err", errors.New(hostile),
				slog.Group("req", "id", hostile))
			out := buf.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Fatalf("want one line, got %q", out)
			}
			// tint's own colours are SGR sequences (ESC [ digits ; m); any
			// other escape came from the client.
			if rest := sgr.ReplaceAllString(out, ""); strings.ContainsAny(rest, "\x1b\x07\u202e") || !utf8.ValidString(rest) {
				t.Fatalf("a control character, invalid UTF-8 or a bidi override reached the log: %q", out)
			}
			if n := strings.Count(out, "PWNED"); n != 5 {
				t.Fatalf("the client text appears %d times, want 5 (escaped, not dropped): %q", n, out)
			}
		})
	}
}

var sgr = regexp.MustCompile(`\x1b\[[0-9;]*m`)

func TestEscapeKeepsPlainText(t *testing.T) {
	for in, want := range map[string]string{
		"/users/42":           "/users/42",
		"café naïve":          "café naïve",
		"a\x1bb":              `a\u001bb`,
		"tab\tnl\ncr\r":       `tab\tnl\ncr\r`,
		`back\slash`:          `back\x5cslash`,
		"bad\xffbyte":         `bad\xffbyte`,
		"bidi\u202eoverride":  `bidi\u202eoverride`,
		"del\x7f c1\u009b":    `del\u007f c1\u009b`,
		"emoji 🙂 stays as is": "emoji 🙂 stays as is",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJSONDurationsAreReadable(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("waited", "after", 11*time.Millisecond, slog.Group("g", "d", 90*time.Second))
	var line struct {
		After string
		G     struct{ D string }
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	if line.After != "11ms" || line.G.D != "1m30s" {
		t.Errorf("durations written as %q and %q, want 11ms and 1m30s: %s", line.After, line.G.D, buf.String())
	}
}
