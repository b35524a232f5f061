package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// amexctl pprof fetches a worker's profile through the operator socket,
// and go tool pprof reads it.
func TestAmexctlPprof(t *testing.T) {
	d := start(t, "-workers", "2")
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // in go tool pprof -top's output
	}{
		{[]string{"pprof", "0", "cpu", "--seconds", "5"}, "Type: cpu"},
		{[]string{"pprof", "1", "heap"}, "Type: inuse_space"},
		{[]string{"pprof", "0", "goroutine"}, "Type: goroutine"},
	} {
		file := filepath.Join(dir, strings.Join(tc.args, "-")+".pprof")
		args := append([]string{"--socket", d.Socket}, append(tc.args, "-o", file)...)
		out, err := exec.Command(amexctl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("amexctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "wrote "+file) {
			t.Errorf("amexctl %s said %q", strings.Join(tc.args, " "), out)
		}
		top, err := exec.Command("go", "tool", "pprof", "-top", file).CombinedOutput()
		if err != nil || !strings.Contains(string(top), tc.want) {
			t.Errorf("go tool pprof -top %s: %v, want %q in:\n%s", file, err, tc.want, top)
		}
	}
	// A slot that does not exist is a clear error, not a file.
	bad := filepath.Join(dir, "bad.pprof")
	out, err := exec.Command(amexctl, "--socket", d.Socket, "pprof", "7", "heap", "-o", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no worker in slot 7") {
		t.Errorf("pprof of slot 7: %v, %q; want a failure naming the slot", err, out)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a failed pprof wrote a file")
	}
}
