package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/operator"
)

// tmux drives a private tmux server (its own socket, killed when the test
// ends) so that amexctl top runs in a real terminal.
type tmux struct {
	bin, sock string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	bin, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux not found: CI installs it from .ci/packages")
		}
		t.Skip("tmux not installed")
	}
	tm := &tmux{bin: bin, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { _ = exec.Command(bin, "-S", tm.sock, "kill-server").Run() })
	// A session that outlives the tests' own keeps the server up: without
	// it the server exits with the last session, and a new-session sent
	// while it is exiting fails with "server exited unexpectedly".
	if out, err := tm.run("new-session", "-d", "-s", "keep", "cat"); err != nil {
		t.Fatalf("tmux new-session: %v %s", err, out)
	}
	return tm
}

// buildAmexctl builds cmd/amexctl into dir.
func buildAmexctl(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "amexctl")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/amexctl").CombinedOutput(); err != nil {
		t.Fatalf("build amexctl: %v\n%s", err, out)
	}
	return bin
}

func (tm *tmux) run(args ...string) (string, error) {
	out, err := exec.Command(tm.bin, append([]string{"-S", tm.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// TestTopInTmux runs amexctl top in a tmux pane against a live amexd under
// traffic: the screen shows every worker with its requests per second, and
// q (then, in a second run, Ctrl-C) ends it with status 0.
func TestTopInTmux(t *testing.T) {
	tm := newTmux(t)
	dir := t.TempDir()
	amexctl := buildAmexctl(t, dir)
	d := start(t, "-workers", "2")
	ws, err := operator.Call(t.Context(), d.op, operator.GetWorkers, operator.None{})
	if err != nil {
		t.Fatal(err)
	}
	stopTraffic := steadyTraffic(t.Context(), d.URL)
	defer stopTraffic()

	for _, key := range []string{"q", "C-c"} {
		t.Run(key, func(t *testing.T) {
			status := filepath.Join(dir, "status-"+key)
			session := "top-" + strings.ReplaceAll(key, "-", "")
			cmd := fmt.Sprintf("%s --socket %s top --interval 500ms; echo $? > %s", amexctl, d.Socket, status)
			if out, err := tm.run("new-session", "-d", "-s", session, "-x", "120", "-y", "24", cmd); err != nil {
				t.Fatalf("tmux new-session: %v %s", err, out)
			}
			// Every worker's row, with a rate measured (a number, not "-").
			rows := make([]*regexp.Regexp, len(ws.Workers))
			for i, w := range ws.Workers {
				rows[i] = regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+%d\s+ready\s+[0-9]+\.[0-9]\s`, w.Slot, w.PID))
			}
			var screen string
			shown := waitUntil(t.Context(), 30*time.Second, nil, func() bool {
				screen, _ = tm.run("capture-pane", "-p", "-t", session)
				for _, re := range rows {
					if !re.MatchString(screen) {
						return false
					}
				}
				return strings.Contains(screen, "SLOT") && strings.Contains(screen, "q or Ctrl-C to quit")
			})
			if !shown {
				t.Fatalf("top never showed every worker with a rate; screen:\n%s", screen)
			}
			if out, err := tm.run("send-keys", "-t", session, key); err != nil {
				t.Fatalf("send-keys %s: %v %s", key, err, out)
			}
			var code string
			exited := waitUntil(t.Context(), 15*time.Second, nil, func() bool {
				b, err := os.ReadFile(status)
				code = strings.TrimSpace(string(b))
				return err == nil && code != ""
			})
			if !exited {
				screen, _ = tm.run("capture-pane", "-p", "-t", session)
				t.Fatalf("top still running 15s after %s; screen:\n%s", key, screen)
			}
			if n, err := strconv.Atoi(code); err != nil || n != 0 {
				t.Errorf("top exited with status %q after %s, want 0", code, key)
			}
		})
	}
}

// TestTopWithoutTerminal: piped, top prints -n frames and stops.
func TestTopWithoutTerminal(t *testing.T) {
	dir := t.TempDir()
	amexctl := buildAmexctl(t, dir)
	d := start(t, "-workers", "2")
	client := fresh()
	for range 20 {
		if code, _ := get(t, client, d.url("/events")); code != http.StatusOK {
			t.Fatalf("GET /events: %d", code)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, amexctl, "--socket", d.Socket, "top", "-n", "2", "--interval", "200ms").CombinedOutput()
	if err != nil {
		t.Fatalf("amexctl top -n 2: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "SLOT  PID"); n != 2 {
		t.Errorf("%d frames, want 2:\n%s", n, out)
	}
	if strings.Contains(string(out), "\x1b[") {
		t.Errorf("escape sequences in piped output:\n%q", out)
	}
}
