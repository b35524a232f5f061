package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
