package cluster

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/operator"
)

// buildCommand builds the command pkg, with the supervisor's version set
// when version is not empty, and returns the binary's path.
func buildCommand(t *testing.T, pkg, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	args := []string{"build", "-o", out}
	if version != "" {
		args = append(args, "-ldflags", "-X github.com/amexd/amexd/internal/version.Version="+version)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestRollingUpgrade: one host after the other gets a new amexd binary and
// is upgraded in place with `amexctl upgrade`, under reads and writes
// through HAProxy: no request fails, and every host ends on the new
// version with the supervisor's PID unchanged.
func TestRollingUpgrade(t *testing.T) {
	c := start(t, 3, simConfig(), noLimit...)
	const version = "cluster-upgrade-v2"
	next := buildCommand(t, "../../../cmd/amexd", version)
	amexctl := buildCommand(t, "../../../cmd/amexctl", "")
	pids := map[int]int{}
	for _, h := range c.Hosts {
		pids[h.Index] = h.PID()
	}

	l := startLoad(c.LB, append([]string{"POST /events"}, readPaths...), 8)
	l.waitMore(t, 100)
	for _, h := range c.Hosts {
		if err := Install(next, h.Binary); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		out, err := exec.CommandContext(ctx, amexctl, "--socket", h.Socket, "--timeout", "2m", "upgrade").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("amexctl upgrade on host %d: %v\n%s", h.Index, err, out)
		}
		t.Logf("host %d: %s", h.Index, out)
		l.waitMore(t, 100)
	}
	counts := l.finish()
	t.Logf("reads and writes through HAProxy during the rolling upgrade of 3 hosts: %v %q", counts, l.errs)
	for status, n := range counts {
		if status != http.StatusOK && status != http.StatusCreated {
			t.Errorf("%d requests answered %d (0: no answer), want none", n, status)
		}
	}
	for _, h := range c.Hosts {
		st, err := operator.Call(context.Background(), h.Operator(), operator.GetStatus, operator.None{})
		if err != nil {
			t.Fatalf("host %d status: %v", h.Index, err)
		}
		if !strings.HasPrefix(st.Version, version) || st.PID != pids[h.Index] || !st.Healthy {
			t.Errorf("host %d after the upgrade: version %q pid %d healthy %v, want %q, pid %d, healthy",
				h.Index, st.Version, st.PID, st.Healthy, version, pids[h.Index])
		}
	}
}
