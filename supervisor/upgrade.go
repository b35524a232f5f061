package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/operator"
	buildversion "github.com/amexd/amexd/internal/version"
)

// ErrUpgradeRefused marks an upgrade refused before anything changed: the
// new binary did not start or refused the configuration.
var ErrUpgradeRefused = errors.New("upgrade refused")

// checkTimeout bounds the new binary's check run.
const checkTimeout = 15 * time.Second

// execDelay is how long the supervisor waits, after the workers run the
// new binary, for the operator's answer to go out before it re-executes
// (exec closes the connection it goes out on). The operator socket's
// handler brings the re-execution forward once it has sent the answer;
// the delay only serves when that never happens (the client went away).
const execDelay = 2 * time.Second

// checkPrefix starts the line `amexd check` prints when it would start.
const checkPrefix = "configuration ok for amexd "

// version is the build's version and commit, as /status reports it.
func version() string { return buildversion.String() }

// CheckOK is the line `amexd check` prints when the configuration is good.
func CheckOK() string { return checkPrefix + version() }

// binaryPath is the path the supervisor was started from, where an upgrade
// expects the new binary; a replaced file is still found by its name.
func binaryPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary: %w", err)
	}
	return strings.TrimSuffix(p, " (deleted)"), nil
}

// checkBinary runs `bin check` with the supervisor's own flags and
// environment and returns the version it reports.
func checkBinary(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"check"}, os.Args[1:]...)...)
	cmd.Env = workerEnv(os.Environ())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, checkPrefix); ok && err == nil {
			return v, nil
		}
	}
	if err == nil {
		err = errors.New("it does not say its configuration is ok")
	}
	if text != "" {
		return "", fmt.Errorf("%s check: %w: %s", bin, err, lastLines(text, 3))
	}
	return "", fmt.Errorf("%s check: %w", bin, err)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// Upgrade replaces every worker with one of the binary now installed at
// the supervisor's path, ready before drain as a reload does, and then has
// the supervisor re-execute itself with it in place (same PID). The binary
// is checked first: if it does not start with the configuration, the error
// wraps ErrUpgradeRefused and nothing changed. Slot 0's new worker is
// watched for supervisor.canary as a reload's is; if it does worse than the
// old workers it goes back to the running binary and the error wraps
// ErrRolledBack. If a new worker does not get ready, the slots already
// replaced go back to the running binary and the error says why.
func (s *Supervisor) Upgrade(ctx context.Context) (operator.Upgraded, error) {
	var up operator.Upgraded
	err := s.runJob(ctx, "upgrade", func(ctx context.Context) error {
		var err error
		up, err = s.upgrade(ctx)
		return err
	})
	return up, err
}

// upgradeJob is the upgrade a SIGUSR2 starts: with no answer to send, the
// re-execution follows at once.
func (s *Supervisor) upgradeJob(ctx context.Context) error {
	_, err := s.upgrade(ctx)
	if err == nil {
		s.in.tell(func(o *owner) { o.execNow() })
	}
	return err
}

func (s *Supervisor) upgrade(ctx context.Context) (operator.Upgraded, error) {
	began := time.Now()
	up, err := s.upgradeSteps(ctx)
	switch {
	case errors.Is(err, ErrUpgradeRefused):
		s.metrics.upgrades.WithLabelValues("refused").Inc()
		s.log.Error("supervisor: upgrade refused, nothing changed", "err", err)
	case err != nil:
		s.metrics.upgrades.WithLabelValues("rolled_back").Inc()
		s.log.Error("supervisor: upgrade failed, the running binary keeps serving", "err", err)
	default:
		up.DurationMs = time.Since(began).Milliseconds()
		s.metrics.upgrades.WithLabelValues("ok").Inc()
		s.log.Info("supervisor: workers upgraded; re-executing", "binary", up.Binary, "version", up.Version,
			"generation", up.Generation, "took", time.Since(began).Round(time.Millisecond).String())
	}
	return up, err
}

func (s *Supervisor) upgradeSteps(ctx context.Context) (operator.Upgraded, error) {
	bin, err := binaryPath()
	if err != nil {
		return operator.Upgraded{}, fmt.Errorf("%w: %w", ErrUpgradeRefused, err)
	}
	v, err := checkBinary(ctx, bin)
	if err != nil {
		return operator.Upgraded{}, fmt.Errorf("%w: %w", ErrUpgradeRefused, err)
	}
	s.log.Info("supervisor: new binary checked", "binary", bin, "version", v)
	type prepared struct {
		cfg      config.Config
		gen      int
		previous []config.Config
	}
	pr, ok := ask(s.in, func(o *owner) prepared {
		o.gen++
		o.notify.send("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
		pr := prepared{cfg: o.cfg, gen: o.gen}
		for _, sl := range o.slots {
			pr.previous = append(pr.previous, sl.cfg)
		}
		return pr
	})
	if !ok {
		return operator.Upgraded{}, errShuttingDown
	}
	up := operator.Upgraded{PID: os.Getpid(), Binary: bin, FromVersion: version(), Version: v, Generation: pr.gen}
	pl := plan{what: "upgrade", canary: pr.cfg.Supervisor.Canary, back: step{cfg: pr.cfg, gen: pr.gen - 1, why: reasonRollback}}
	for i := range pr.previous {
		pl.steps = append(pl.steps, step{slot: i, cfg: pr.cfg, gen: pr.gen, binary: bin, why: reasonUpgrade})
	}
	if done, err := s.roll(ctx, pl); err != nil {
		if _, failed := errors.AsType[*stepError](err); failed {
			if ctx.Err() == nil {
				s.rollBack(ctx, pr.previous[:done])
			}
			err = fmt.Errorf("new worker for %w; rolled back to %s", err, version())
		}
		s.readyAgain()
		return up, err
	}
	execs, ok := ask(s.in, func(o *owner) int { return o.execDue(bin, time.Now().Add(execDelay)) })
	if !ok {
		return up, errShuttingDown
	}
	up.Execs = execs
	return up, nil
}

// rollBack puts the running binary's workers back in the slots an upgrade
// replaced, each with the configuration it had.
func (s *Supervisor) rollBack(ctx context.Context, previous []config.Config) {
	gen, ok := ask(s.in, func(o *owner) int { o.gen++; return o.gen })
	if !ok {
		return
	}
	pl := plan{what: "rollback", tolerant: true}
	for i, cfg := range previous {
		pl.steps = append(pl.steps, step{slot: i, cfg: cfg, gen: gen, why: reasonRollback})
	}
	_, _ = s.roll(ctx, pl)
}

// readyAgain ends the RELOADING=1 an upgrade began, unless shutting down.
func (s *Supervisor) readyAgain() {
	s.in.tell(func(o *owner) {
		if !o.shutting {
			o.notify.send("READY=1")
		}
	})
}
