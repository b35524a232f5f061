package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/testkit/freeport"
)

// Spawn timings: how long amexd may take to answer /healthz, and to exit
// after SIGTERM before it is killed.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
)

// ModuleRoot walks up from dir to the first directory holding a go.mod.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod in this directory or above")
		}
		dir = parent
	}
}

// BuildAmexd builds ./cmd/amexd of the module holding the working directory
// into outDir and returns the binary's path; the go tool's output is in the
// error when the build fails.
func BuildAmexd(ctx context.Context, outDir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("build amexd: %w", err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		return "", fmt.Errorf("build amexd: %w", err)
	}
	bin := filepath.Join(outDir, "amexd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/amexd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build amexd in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// SpawnOptions say how to start amexd.
type SpawnOptions struct {
	// Binary is the amexd executable.
	Binary string
	// Dir holds the daemon's log and operator socket; it must exist.
	Dir string
	// Workers is the worker count; 0 leaves amexd's default (one per CPU).
	Workers int
	// Args are extra flags, such as -simulator.preload_events.
	Args []string
}

// Daemon is an amexd started by Spawn. Stop it once it is no longer needed.
type Daemon struct {
	// URL is the base URL of its public listener on 127.0.0.1.
	URL string
	// Socket is the path of its operator socket.
	Socket  string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	log     *os.File
}

// Spawn starts amexd on a free 127.0.0.1 port with its embedded simulator,
// the rate limit raised out of the way and access logs off (opts.Args come
// last and override these), and returns once the operator socket reports
// every slot serving. If amexd exits or does not answer in time
// it is stopped and the error carries the end of its log.
func Spawn(ctx context.Context, opts SpawnOptions) (*Daemon, error) {
	port, err := freeport.On("127.0.0.1") // taken meanwhile, Spawn fails with amexd's log
	if err != nil {
		return nil, fmt.Errorf("spawn amexd: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logf, err := os.Create(filepath.Join(opts.Dir, fmt.Sprintf("amexd-%d.log", port)))
	if err != nil {
		return nil, fmt.Errorf("spawn amexd: %w", err)
	}
	socket := filepath.Join(opts.Dir, fmt.Sprintf("amexd-%d.sock", port))
	args := []string{
		"-listen", addr,
		"-ratelimit.rate", "16000000-M",
		"-log.access=false",
		"-control.socket", socket,
	}
	if opts.Workers > 0 {
		args = append(args, "-workers", strconv.Itoa(opts.Workers))
	}
	args = append(args, opts.Args...)
	cmd := exec.Command(opts.Binary, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("spawn amexd: %w", err)
	}
	d := &Daemon{URL: "http://" + addr, Socket: socket, cmd: cmd, exited: make(chan struct{}), log: logf}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	if err := d.waitHealthy(ctx); err != nil {
		stopErr := d.Stop()
		return nil, errors.Join(fmt.Errorf("spawn amexd %s: %w\n%s", args, err, d.LogTail()), stopErr)
	}
	return d, nil
}

func (d *Daemon) waitHealthy(ctx context.Context) error {
	exited := func() bool {
		select {
		case <-d.exited:
			return true
		default:
			return false
		}
	}
	var last string
	healthy := waitFor(ctx, startTimeout, func() bool {
		if exited() {
			return true
		}
		a, err := operator.NewClient(d.Socket).Do(ctx, http.MethodGet, operator.GetHealth.Path, nil)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("%d %s", a.Code, bytes.TrimSpace(a.Body))
		return a.Code == http.StatusOK
	})
	switch {
	case exited():
		return fmt.Errorf("exited before it was healthy: %v", d.waitErr)
	case !healthy:
		return fmt.Errorf("not healthy after %s (last: %s)", startTimeout, last)
	}
	return nil
}

// Stop sends SIGTERM, waits for amexd to drain and exit, and kills it if it
// is still running after stopTimeout. A daemon that already exited is not
// an error here. Stop may be called more than once.
func (d *Daemon) Stop() error {
	defer d.log.Close()
	return stopProcess("amexd", d.cmd.Process, d.exited)
}

// stopProcess sends p SIGTERM unless exited is closed already, waits for
// exited, and kills p if it is still running after stopTimeout; name is
// for the error.
func stopProcess(name string, p *os.Process, exited <-chan struct{}) error {
	select {
	case <-exited:
		return nil
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(stopTimeout):
		p.Kill() //nolint:errcheck // it may exit between the timeout and the kill
		<-exited
		return fmt.Errorf("stop %s: still running %s after SIGTERM, killed", name, stopTimeout)
	}
}

// Log returns everything amexd wrote so far.
func (d *Daemon) Log() (string, error) {
	b, err := os.ReadFile(d.log.Name())
	if err != nil {
		return "", fmt.Errorf("read amexd log: %w", err)
	}
	return string(b), nil
}

// LogTail returns the last lines amexd wrote, for error messages.
func (d *Daemon) LogTail() string {
	b, err := os.ReadFile(d.log.Name())
	if err != nil {
		return ""
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
