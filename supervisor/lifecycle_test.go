package supervisor

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// workerStarted matches the supervisor's log line for a started worker,
// as JSON or text.
var workerStarted = regexp.MustCompile(`supervisor: worker started"?[ ,].*pid"?[=:](\d+).*generation"?[=:](\d+)`)

// started returns the pids of the workers of generation gen the
// supervisor logged as started.
func (d *testDaemon) started(gen int) map[int]bool {
	out := map[int]bool{}
	for _, m := range workerStarted.FindAllStringSubmatch(d.stderr.String(), -1) {
		if m[2] == strconv.Itoa(gen) {
			pid, _ := strconv.Atoi(m[1])
			out[pid] = true
		}
	}
	return out
}

// gone waits until every pid has exited and been reaped (by anyone).
func gone(t *testing.T, pids map[int]bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for pid := range pids {
		for syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			if time.Now().After(deadline) {
				t.Errorf("worker %d still exists after the supervisor exited", pid)
				break
			}
			time.Sleep(20 * time.Millisecond) // polling for the process to go away
		}
	}
}

// TestSigtermDuringReload: shutdown cancels a reload; the supervisor exits
// 0, no worker is left behind, and systemd hears no READY=1 after
// STOPPING=1.
func TestSigtermDuringReload(t *testing.T) { sigtermDuring(t, "/reload", "a reload") }

// sigtermDuring sends SIGTERM while the operator request at path (a reload
// or an upgrade, described by what) is starting workers of generation 2.
func sigtermDuring(t *testing.T, path, what string) {
	n := listenNotify(t)
	d := startDaemon(t, kinds[0], 3, []string{"NOTIFY_SOCKET=" + n.path, "FAKE_RELOAD_READY_DELAY=700ms"})
	n.expect(t, "READY=1")
	seen := d.pids()
	answered := make(chan int, 1)
	go func() {
		code, _ := d.call(http.MethodPost, path, nil)
		answered <- code
	}()
	d.waitFor("a worker of generation 2 starting", 10*time.Second, func() bool { return len(d.started(2)) > 0 })
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		if d.err != nil {
			t.Errorf("exit after SIGTERM during %s: %v, want 0", what, d.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("supervisor did not exit after SIGTERM during %s", what)
	}
	if code := <-answered; code == http.StatusOK {
		t.Errorf("%s interrupted by SIGTERM answered 200", what)
	}
	for pid := range d.started(2) {
		seen[pid] = true
	}
	gone(t, seen)
	noReadyAfterStopping(t, n)
}

// TestStoppedWorkerStallsNoOther: while one worker is stopped, the others
// keep serving writes whose invalidations fan out to it; only the stopped
// one is replaced.
func TestStoppedWorkerStallsNoOther(t *testing.T) {
	d := startDaemon(t, kinds[0], 3, nil)
	ws := d.workers()
	victim := ws[0].PID
	others := map[int]bool{ws[1].PID: true, ws[2].PID: true}
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(victim, syscall.SIGCONT) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if resp, err := c.Post("http://"+d.addr+"/invalidate", "", nil); err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	d.waitFor("the stopped worker replaced", 20*time.Second, d.allReady(3, map[int]bool{victim: true}))
	close(stop)
	wg.Wait()
	for _, w := range d.workers() {
		if w.Slot != 0 && !others[w.PID] {
			t.Errorf("slot %d now runs worker %d: a healthy worker was replaced", w.Slot, w.PID)
		}
	}
}

// TestSupervisorStallKillsNoWorker: a stall of the supervisor longer than
// heartbeat_timeout (SIGSTOP) is not taken for hung workers.
func TestSupervisorStallKillsNoWorker(t *testing.T) {
	d := startDaemon(t, kinds[0], 2, nil) // heartbeat_timeout 1s
	before := d.pids()
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // the stall under test: longer than heartbeat_timeout
	resumed := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The heartbeats queued during the stall may be read before the first
	// tick measures the gap, so both are waited for.
	d.waitFor("heartbeats after the stall, and the stall noticed", 10*time.Second, func() bool {
		if !strings.Contains(d.stderr.String(), "resumed after a stall") {
			return false
		}
		ws := d.workers()
		if len(ws) != 2 {
			return false
		}
		for _, w := range ws {
			if !w.LastHeartbeat.After(resumed) {
				return false
			}
		}
		return true
	})
	after := d.workers()
	if len(after) != 2 {
		t.Errorf("%d workers after the stall, want 2", len(after))
	}
	for _, w := range after {
		if !before[w.PID] || w.Restarts != 0 {
			t.Errorf("slot %d: worker %d, %d restarts after the supervisor's stall; want the same worker", w.Slot, w.PID, w.Restarts)
		}
	}
}

// noReadyAfterStopping reads what the supervisor told systemd until it is
// quiet and fails on a READY=1 after STOPPING=1.
func noReadyAfterStopping(t *testing.T, n *notifySocket) {
	t.Helper()
	stopped := false
	for {
		select {
		case m := <-n.msgs:
			if stopped && strings.Contains(m, "READY=1") {
				t.Errorf("%q sent after STOPPING=1", m)
			}
			stopped = stopped || strings.HasPrefix(m, "STOPPING=1")
			continue
		case <-time.After(200 * time.Millisecond):
			// The supervisor has exited: nothing more is coming.
		}
		break
	}
	if !stopped {
		t.Error("no STOPPING=1")
	}
}
