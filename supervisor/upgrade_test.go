package supervisor

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/simulator"
)

// versionVar is the variable the -ldflags of a release build set to the
// version /status reports.
const versionVar = "github.com/amexd/amexd/internal/version.Version"

// versions builds amexd as v1 and v2 (the same code, told apart by the
// version -ldflags set), v2 again as another file (v2b, stripped) and
// amexctl, once per test run.
var versions = struct {
	once             sync.Once
	v1, v2, v2b, ctl string
	err              error
}{}

func upgradeBinaries(t *testing.T) (v1, v2, ctl string) {
	t.Helper()
	realAmexd(t)
	versions.once.Do(func() {
		dir := filepath.Dir(amexdBin)
		build := func(out, pkg string, args ...string) {
			if versions.err != nil {
				return
			}
			cmd := exec.Command("go", append(append([]string{"build"}, args...), "-o", out, pkg)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				versions.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
		}
		versions.v1, versions.v2, versions.ctl = filepath.Join(dir, "amexd-v1"), filepath.Join(dir, "amexd-v2"), filepath.Join(dir, "amexctl")
		versions.v2b = filepath.Join(dir, "amexd-v2b")
		build(versions.v1, "../cmd/amexd", "-ldflags", "-X "+versionVar+"=v1")
		build(versions.v2, "../cmd/amexd", "-ldflags", "-X "+versionVar+"=v2")
		build(versions.v2b, "../cmd/amexd", "-ldflags", "-s -X "+versionVar+"=v2")
		build(versions.ctl, "../cmd/amexctl")
	})
	if versions.err != nil {
		t.Fatal(versions.err)
	}
	return versions.v1, versions.v2, versions.ctl
}

// install puts src at dst the way a package manager does: a new file
// renamed over the old one, which the running processes keep using.
func install(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// installWrapper installs at path a new "binary": a shell script that runs
// worker, shell commands, when started as a worker, and then (unless they
// exit) execs bin with the same arguments.
func installWrapper(t *testing.T, path, bin, worker string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = worker ]; then %s; fi\nexec %s \"$@\"\n", worker, bin)
	wrapper := filepath.Join(t.TempDir(), "v2")
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	install(t, wrapper, path)
}

// installed copies src to a fresh directory and returns the daemon kind
// that runs it from there.
func installed(t *testing.T, src string) (kind, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "amexd")
	install(t, src, path)
	return kind{"installed", func(*testing.T) (string, []string) { return path, nil }}, path
}

// amexctl runs the CLI against d and returns its exit status and output.
func (d *testDaemon) amexctl(ctl string, args ...string) (int, string) {
	cmd := exec.Command(ctl, append([]string{"--socket", d.sock}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return 0, string(out)
}

func (d *testDaemon) status() operator.Status {
	d.t.Helper()
	st, err := operator.Call(context.Background(), d.op, operator.GetStatus, operator.None{})
	if err != nil {
		d.t.Fatal(err)
	}
	return st
}

// remaining sends one request from source address ip and returns the
// rate limit left.
func remaining(t *testing.T, addr, ip string) int {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}}
	resp, err := c.Get("http://" + addr + "/users")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	n, err := strconv.Atoi(resp.Header.Get("X-RateLimit-Remaining"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /users from %s: %d, X-RateLimit-Remaining %q", ip, resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
	}
	return n
}

// counters reads every counter, histogram and summary series of /metrics.
func (d *testDaemon) counters() map[string]float64 {
	d.t.Helper()
	text, err := d.op.Metrics(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	monotonic := map[string]bool{}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(text)))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			monotonic[f[2]] = f[3] == "counter" || f[3] == "histogram" || f[3] == "summary"
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		name := line[:i]
		family := name
		if j := strings.IndexByte(family, '{'); j >= 0 {
			family = family[:j]
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(family, "_bucket"), "_count"), "_sum")
		if !monotonic[family] && !monotonic[base] || strings.Contains(name, "quantile=") {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func exeOf(t *testing.T, pid int) string {
	t.Helper()
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// runsImage reports whether process pid runs the same executable image as
// the file bin, by content, wherever either lies now.
func runsImage(t *testing.T, pid int, bin string) bool {
	t.Helper()
	sum := func(path string) [sha256.Size]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	return sum("/proc/"+strconv.Itoa(pid)+"/exe") == sum(bin)
}

// sameVersionBinary is v2 built again as another file, reporting the same
// version (built by upgradeBinaries).
func sameVersionBinary(t *testing.T) string {
	t.Helper()
	upgradeBinaries(t)
	return versions.v2b
}

// TestUpgradeAnswersOnceTheNewImageRuns: amexctl upgrade exits 0 only when
// the supervisor runs the new file too, even when old and new report the
// same version, so that only the re-execution tells them apart.
func TestUpgradeAnswersOnceTheNewImageRuns(t *testing.T) {
	_, v2, ctl := upgradeBinaries(t)
	v2b := sameVersionBinary(t)
	k, path := installed(t, v2)
	d := startDaemon(t, k, 2, nil)
	for i, bin := range []string{v2b, v2} {
		install(t, bin, path)
		code, out := d.amexctl(ctl, "upgrade")
		if code != 0 {
			t.Fatalf("amexctl upgrade %d = %d: %s", i+1, code, out)
		}
		st := d.status()
		if !strings.HasPrefix(st.Version, "v2") || st.Execs != i+1 || st.ExecError != "" {
			t.Errorf("right after upgrade %d: version %q, execs %d, exec error %q; want v2, %d, none", i+1, st.Version, st.Execs, st.ExecError, i+1)
		}
		pids := []int{d.cmd.Process.Pid}
		for _, w := range st.Workers {
			pids = append(pids, w.PID)
		}
		if len(pids) != 3 {
			t.Errorf("right after upgrade %d: %d workers, want 2", i+1, len(pids)-1)
		}
		for _, pid := range pids {
			if exe := exeOf(t, pid); exe != path || !runsImage(t, pid, bin) {
				t.Errorf("right after upgrade %d: process %d runs %q, want the file just installed at %s", i+1, pid, exe, path)
			}
		}
	}
}

// TestUpgradeUnderLoad: amexctl upgrade with v2 installed over v1, under
// GETs and POSTs on keep-alive and new connections, fails no request;
// afterwards every process runs v2 from the installed path, the supervisor
// kept its PID, a client's rate limit carried over and no counter went back.
func TestUpgradeUnderLoad(t *testing.T) {
	v1, v2, ctl := upgradeBinaries(t)
	k, path := installed(t, v1)
	// The upstream runs outside the supervisor: the embedded simulator lives
	// in the supervisor's process, so calls in flight to it when the
	// supervisor re-executes fail (see docs/service.md), which is not the
	// upgrade of a real deployment.
	simCfg := simulator.DefaultConfig()
	simCfg.AddFail, simCfg.ListErrorRate = 0, 0
	sim, err := simulator.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(sim)
	t.Cleanup(up.Close)
	d := startDaemon(t, k, 2, nil, "-ratelimit.store", "shared", "-ratelimit.rate", "100000-M",
		"-upstream.url", up.URL, "-log.access=false")
	before := d.status()
	if !strings.HasPrefix(before.Version, "v1") {
		t.Fatalf("started version %q, want v1", before.Version)
	}
	const client = "127.0.0.7"
	for range 59 {
		remaining(t, d.addr, client)
	}
	left := remaining(t, d.addr, client) // the 60th request
	l := startLoad(d.addr, getReq("/users"),
		loadReq{method: http.MethodPost, path: "/events", body: `{"name":"upgrade","userId":1}`, want: http.StatusCreated})
	d.waitFor("load running", 10*time.Second, func() bool { return l.ok.Load() > 100 })
	counted := d.counters()

	install(t, v2, path)
	code, out := d.amexctl(ctl, "upgrade")
	d.waitFor("load after the upgrade", 10*time.Second, func() bool { return l.ok.Load() > 200 })
	ok, failed, lastErr := l.end()
	if code != 0 {
		t.Fatalf("amexctl upgrade = %d: %s", code, out)
	}
	t.Logf("amexctl upgrade: %s; %d requests ok, %d failed", strings.TrimSpace(out), ok, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the upgrade (last: %v)", failed, ok+failed, lastErr)
	}
	after := d.status()
	if !strings.HasPrefix(after.Version, "v2") || after.PID != before.PID || after.Generation <= before.Generation {
		t.Errorf("after the upgrade: version %q pid %d generation %d; want v2, pid %d, generation above %d",
			after.Version, after.PID, after.Generation, before.PID, before.Generation)
	}
	pids := []int{after.PID}
	for _, w := range after.Workers {
		pids = append(pids, w.PID)
	}
	for _, pid := range pids {
		if exe := exeOf(t, pid); exe != path {
			t.Errorf("process %d runs %q, want %q", pid, exe, path)
		}
	}
	if got := remaining(t, d.addr, client); got != left-1 {
		t.Errorf("rate limit left after the upgrade = %d, want %d (it was %d before)", got, left-1, left)
	}
	now := d.counters()
	for name, v := range counted {
		if now[name] < v {
			t.Errorf("%s went back from %v to %v", name, v, now[name])
		}
	}
}

// TestUpgradeRefused: a v2 that exits at start, or that refuses the
// configuration, changes nothing; amexctl upgrade exits 1 with the reason.
func TestUpgradeRefused(t *testing.T) {
	v1, v2, ctl := upgradeBinaries(t)
	k, path := installed(t, v1)
	file := filepath.Join(t.TempDir(), "amexd.yaml")
	if err := os.WriteFile(file, []byte("fanout: 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, k, 2, nil, "-config", file)
	before := d.pids()
	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'amexd v2: cannot start: missing library' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	install(t, broken, path)
	if code, out := d.amexctl(ctl, "upgrade"); code != 1 || !strings.Contains(out, "missing library") {
		t.Errorf("upgrade to a v2 that exits at start: exit %d, %q; want 1 with its reason", code, out)
	}
	install(t, v2, path)
	if err := os.WriteFile(file, []byte("fanout: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := d.amexctl(ctl, "upgrade"); code != 1 || !strings.Contains(out, "fanout") {
		t.Errorf("upgrade to a v2 refusing the configuration: exit %d, %q; want 1 naming fanout", code, out)
	}
	st := d.status()
	if !strings.HasPrefix(st.Version, "v1") || !st.Healthy {
		t.Errorf("after refused upgrades: version %q, healthy %v; want v1 serving", st.Version, st.Healthy)
	}
	after := d.pids()
	if len(after) != 2 {
		t.Errorf("%d workers after refused upgrades, want 2", len(after))
	}
	for pid := range after {
		if !before[pid] {
			t.Errorf("a refused upgrade replaced a worker (new pid %d)", pid)
		}
	}
}

// TestUpgradeRollsBack: when v2's workers do not get ready, the slots go
// back to v1 workers, v1 keeps serving, and amexctl upgrade says why.
func TestUpgradeRollsBack(t *testing.T) {
	v1, _, ctl := upgradeBinaries(t)
	k, path := installed(t, v1)
	d := startDaemon(t, k, 2, nil)
	keep := filepath.Join(t.TempDir(), "amexd-v1")
	install(t, v1, keep)
	installWrapper(t, path, keep, "echo 'v2 worker: cannot bind' >&2; exit 3")
	code, out := d.amexctl(ctl, "upgrade")
	if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "exit status 3") {
		t.Errorf("upgrade whose workers fail: exit %d, %q; want 1, rolled back, with the reason", code, out)
	}
	d.waitFor("every slot serving", 10*time.Second, d.allReady(2, nil))
	st := d.status()
	if !strings.HasPrefix(st.Version, "v1") || !st.Healthy {
		t.Errorf("after the rollback: version %q, healthy %v; want v1 serving", st.Version, st.Healthy)
	}
	if len(st.Workers) != 2 {
		t.Errorf("%d workers after the rollback, want 2", len(st.Workers))
	}
	// The failing binary is a script, so a worker from it would run a shell;
	// the image tells which binary a worker runs, its path does not (v1's is
	// deleted, replaced by the script).
	for _, w := range st.Workers {
		if !runsImage(t, w.PID, v1) {
			t.Errorf("slot %d (pid %d) runs %s, not the v1 image", w.Slot, w.PID, exeOf(t, w.PID))
		}
	}
	if resp, err := http.Get("http://" + d.addr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("serving after the rollback: %v", err)
	} else {
		resp.Body.Close()
	}
}

// TestUpgradeCanaryRollsBack: a new binary whose workers start but answer
// every request 500 is caught by the canary on slot 0, which goes back to
// the running binary; slot 1 never runs the new one, the supervisor stays
// on its generation, and amexctl upgrade says why. The daemon is this test
// binary (a fake supervisor and workers), installed at a path of its own.
func TestUpgradeCanaryRollsBack(t *testing.T) {
	_, _, ctl := upgradeBinaries(t)
	keep := filepath.Join(t.TempDir(), "amexd-fake")
	install(t, os.Args[0], keep)
	path := filepath.Join(t.TempDir(), "amexd")
	install(t, keep, path)
	k := kind{"installed fake", func(*testing.T) (string, []string) { return path, []string{"supervise"} }}
	d := startDaemon(t, k, 2, nil, "-supervisor.canary", "2s")
	before := d.status()
	l := startLoad(d.addr, getReq("/healthz"))
	defer l.end()
	d.waitFor("load running", 10*time.Second, func() bool { return l.ok.Load() > 50 })

	installWrapper(t, path, keep, "export FAKE_WORKER_ERRORS=1")
	code, out := d.amexctl(ctl, "upgrade")
	if code != 1 || !strings.Contains(out, "upgrade rolled back: canary slot 0 answered") || !strings.Contains(out, "with a 5xx") {
		t.Errorf("upgrade to a binary whose workers fail: exit %d, %q; want 1 and the canary's verdict", code, out)
	}
	d.waitFor("every slot serving", 10*time.Second, d.allReady(2, nil))
	after := d.status()
	if after.PID != before.PID || after.Generation != before.Generation {
		t.Errorf("after the rollback: pid %d generation %d, want %d and %d", after.PID, after.Generation, before.PID, before.Generation)
	}
	for _, w := range after.Workers {
		if exe := exeOf(t, w.PID); exe == keep {
			t.Errorf("slot %d (pid %d) runs the failing build", w.Slot, w.PID)
		}
	}
	if after.Workers[1].PID != before.Workers[1].PID {
		t.Errorf("slot 1 was replaced (pid %d, then %d): the canary must stop the upgrade at slot 0", before.Workers[1].PID, after.Workers[1].PID)
	}
	if n := d.counters()["amexd_supervisor_upgrades_total{result=\"rolled_back\"}"]; n != 1 {
		t.Errorf("amexd_supervisor_upgrades_total{result=\"rolled_back\"} = %v, want 1", n)
	}
}

// TestSigtermDuringUpgrade: shutdown cancels an upgrade; nothing is left
// behind and no READY=1 follows STOPPING=1.
func TestSigtermDuringUpgrade(t *testing.T) { sigtermDuring(t, "/upgrade", "an upgrade") }
