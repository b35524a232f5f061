package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// errShuttingDown refuses a start once shutdown began.
var errShuttingDown = errors.New("supervisor is shutting down")

// process is a started worker process as the owner sees it.
type process interface {
	Pid() int
	Signal(sig os.Signal) error
	Kill() error
	Wait() error
}

// workerSpec is what a worker process inherits: fd 3 = listener, fd 4 =
// its end of the control channel, fd 5 = the rate-limit table and fd 6 =
// the idempotency table (when not nil).
type workerSpec struct {
	slot     int
	binary   string // the executable; "" is the supervisor's own
	listener *os.File
	table    *os.File
	idem     *os.File
}

// startFunc starts a worker process and returns it with the supervisor's
// end of its control channel. It is the seam the unit tests replace.
type startFunc func(spec workerSpec) (process, net.Conn, error)

// spawn starts a worker for slot with cfg and sends it its configuration.
// Nothing starts once shutdown began.
func (o *owner) spawn(slot int, cfg config.Config, gen int, binary string) (*proc, error) {
	if o.shutting {
		return nil, errShuttingDown
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode worker config: %w", err)
	}
	spec := workerSpec{slot: slot, binary: binary, listener: o.listeners[slot].File}
	if cfg.RateLimit.UsesTable() {
		spec.table = o.tableFile
	}
	spec.idem = o.idem.file
	pr, conn, err := o.start(spec)
	if err != nil {
		return nil, fmt.Errorf("start worker for slot %d: %w", slot, err)
	}
	codec := control.NewCodec(conn)
	src := o.warmSource(slot, cfg.Supervisor.Warm.MaxEntries)
	// The config goes out before anything else can be queued, so that it
	// is always the first message the worker reads.
	if err := codec.Send(control.Message{Type: control.TypeConfig, Slot: slot, Generation: gen, Config: body, Warm: src != nil}); err != nil {
		_ = pr.Kill()
		status := exitStatus(pr.Wait())
		codec.Close()
		return nil, fmt.Errorf("worker for slot %d ended before it took its configuration (%s): %w", slot, status, err)
	}
	p := o.track(slot, gen, cfg, pr, conn, codec, time.Now())
	p.maxRequests = requestLimit(cfg.Supervisor)
	o.log.Info("supervisor: worker started", "slot", slot, "pid", p.pid, "generation", gen)
	if src != nil {
		o.startWarm(p, src)
	}
	return p, nil
}

// track makes a started (or, after an upgrade, adopted) worker process
// one of the owner's, with its reader, writer and reaper.
func (o *owner) track(slot, gen int, cfg config.Config, pr process, conn net.Conn, codec *control.Codec, started time.Time) *proc {
	p := &proc{
		slot: slot, gen: gen, pid: pr.Pid(), cfg: cfg, process: pr, conn: conn, codec: codec, started: started,
		ready: make(chan struct{}), exited: make(chan struct{}),
		pausing: make(chan struct{}), paused: make(chan struct{}, 1),
		lastBeat: time.Now(),
	}
	log := o.log // the writer goroutine runs off the loop
	p.out = newPeer(codec, func(m control.Message, err error) {
		log.Debug("supervisor: message not delivered", "slot", slot, "pid", p.pid, "type", m.Type, "err", err)
	})
	p.calls = control.NewRequests(p.out)
	o.procs[p] = struct{}{}
	go o.in.reap(p)
	go o.in.read(p)
	return p
}

// execStart runs `binary worker -slot N` with the spec's descriptors.
func execStart(spec workerSpec) (process, net.Conn, error) {
	parentEnd, childEnd, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	defer childEnd.Close()
	bin := spec.binary
	if bin == "" {
		bin = "/proc/self/exe"
	}
	cmd := exec.Command(bin, "worker", "-slot", strconv.Itoa(spec.slot))
	cmd.Args[0] = os.Args[0]
	cmd.Env = workerEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{spec.listener, childEnd, spec.table}
	if spec.idem != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, spec.idem)
	}
	// Workers die with the supervisor even if it is killed outright; the
	// owner loop, which forks them, is locked to one OS thread, the one an
	// upgrade execs on, so that no thread exit fires this early.
	// Its own process group: a terminal's Ctrl-C reaches the supervisor
	// alone, which then drains the workers in order instead of racing them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		parentEnd.Close()
		return nil, nil, err
	}
	return execProcess{cmd.Process}, parentEnd, nil
}

// execProcess is an os.Process as a process.
type execProcess struct{ p *os.Process }

func (e execProcess) Pid() int                   { return e.p.Pid }
func (e execProcess) Signal(sig os.Signal) error { return e.p.Signal(sig) }
func (e execProcess) Kill() error                { return e.p.Kill() }

func (e execProcess) Wait() error {
	st, err := e.p.Wait()
	if err != nil {
		return err
	}
	if !st.Success() {
		return &exec.ExitError{ProcessState: st}
	}
	return nil
}

func socketpair() (parent net.Conn, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socketpair: %w", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "control")
	defer pf.Close()
	child = os.NewFile(uintptr(fds[1]), "control")
	parent, err = net.FileConn(pf)
	if err != nil {
		child.Close()
		return nil, nil, fmt.Errorf("control socketpair: %w", err)
	}
	return parent, child, nil
}

// workerEnv is the supervisor's environment without what systemd meant for
// the supervisor alone.
func workerEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		out = append(out, kv)
	}
	return out
}
