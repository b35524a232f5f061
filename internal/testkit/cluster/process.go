package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a child the cluster started and ends by its PID.
type process struct {
	cmd     *exec.Cmd
	log     string
	exited  chan struct{}
	waitErr error
}

// startProcess starts name with args, its output appended to logPath. The
// kernel sends it SIGKILL if the starting thread dies, so a killed test
// leaves no process behind.
func startProcess(logPath string, env []string, name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM, waits up to timeout, then kills. It returns an error
// when the process had to be killed.
func (p *process) stop(timeout time.Duration) error {
	if p.done() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s still running %s after SIGTERM; killed", p.cmd.Path, timeout)
	}
}

// tail returns the end of the process's log.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	const keep = 3000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// waitUntil polls cond until it holds, p exits, ctx ends or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		if p != nil && p.done() {
			return fmt.Errorf("%s exited (%v):\n%s", p.cmd.Path, p.waitErr, p.tail())
		}
		select {
		case <-ctx.Done():
			if p != nil {
				return fmt.Errorf("not ready after %s: %w\n%s", timeout, ctx.Err(), p.tail())
			}
			return fmt.Errorf("not ready after %s: %w", timeout, ctx.Err())
		case <-t.C:
		}
	}
}
