package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// handoverEnv names the descriptor of the hand-over state in the
// environment of a supervisor that re-executed itself for an upgrade.
const handoverEnv = "AMEXD_HANDOVER_FD"

// pauseTimeout bounds how long the hand-over waits for the workers'
// readers and writers to stop at a message boundary.
const pauseTimeout = 10 * time.Second

// handoverState is what a supervisor passes to the binary it re-executes:
// descriptors by number (inherited across exec) and what it knew.
type handoverState struct {
	Started     time.Time                     `json:"started"`
	Generation  int                           `json:"generation"`
	Execs       int                           `json:"execs"` // counting the one under way
	Listeners   []handoverSocket              `json:"listeners"`
	Table       int                           `json:"table"`       // -1 without a shared table
	Idempotency int                           `json:"idempotency"` // -1 without an idempotency table
	Simulator   int                           `json:"simulator"`   // -1 without the embedded simulator
	Operator    int                           `json:"operator"`
	Metrics     int                           `json:"metrics"` // -1 without metrics_addr
	Slots       []handoverSlot                `json:"slots"`
	Workers     []handoverWorker              `json:"workers"`
	Own         string                        `json:"own"`    // the supervisor's own series, as offsets
	Series      map[int]slotmetrics.SlotState `json:"series"` // the aggregator's, per slot
}

type handoverSocket struct {
	FD   int    `json:"fd"`
	Addr string `json:"addr"`
}

type handoverSlot struct {
	Restarts int  `json:"restarts"`
	Degraded bool `json:"degraded"`
}

type handoverWorker struct {
	Slot       int           `json:"slot"`
	PID        int           `json:"pid"`
	FD         int           `json:"fd"`
	Pending    []byte        `json:"pending"`
	Generation int           `json:"generation"`
	Started    time.Time     `json:"started"`
	ReadyAt    time.Time     `json:"ready_at"`
	Stats      control.Stats `json:"stats"`
}

// handover re-executes the supervisor with the binary an upgrade installed
// its workers from, passing everything on. It returns only if that failed,
// after which this binary goes on supervising the same workers.
func (o *owner) handover() {
	bin := o.takeExec()
	if o.shutting {
		return
	}
	held, err := o.pause()
	if err == nil {
		err = o.exec(bin)
	}
	o.execErr = err.Error()
	o.log.Error("supervisor: re-execution failed; the workers run the new binary, the supervisor the old one", "binary", bin, "err", err)
	o.resume(held)
}

// pause stops every worker's reader at a message boundary and its writer
// after what it had queued, handling what they deliver meanwhile. It
// returns what resume needs to let the writers go.
func (o *owner) pause() ([]chan struct{}, error) {
	var held []chan struct{}
	deadline := time.After(pauseTimeout)
	for p := range o.procs {
		close(p.pausing)
		_ = p.codec.SetReadDeadline(time.Unix(1, 0))
	}
	for p := range o.procs {
		for waiting := true; waiting; {
			select {
			case <-p.paused:
				waiting = false
			case m := <-o.in.msgs:
				o.message(m)
			case <-deadline:
				return held, fmt.Errorf("worker %d's reader did not stop", p.pid)
			}
		}
	}
	// Invalidations under way get their acks queued (within fanOutTimeout)
	// before the writers flush and stop.
	o.fanOuts.Wait()
	for p := range o.procs {
		h := make(chan struct{})
		select {
		case p.out.hold <- h:
			<-h
			held = append(held, h)
		case <-deadline:
			return held, fmt.Errorf("worker %d's writer did not stop", p.pid)
		}
	}
	return held, nil
}

// resume undoes pause after a failed exec.
func (o *owner) resume(held []chan struct{}) {
	for p := range o.procs {
		select {
		case <-p.pausing:
			p.pausing, p.paused = make(chan struct{}), make(chan struct{}, 1)
			_ = p.codec.SetReadDeadline(time.Time{})
			go o.in.read(p)
		default:
		}
	}
	for _, h := range held {
		close(h)
	}
}

// exec writes the state and every descriptor it names across execve; it
// returns only on failure, with the descriptors closed on exec again.
func (o *owner) exec(bin string) error {
	st := handoverState{Started: o.started, Generation: o.gen, Execs: o.execs + 1, Table: -1, Idempotency: -1, Simulator: -1, Metrics: -1,
		Series: o.agg.Export()}
	var fds []int
	pass := func(c syscall.Conn) int {
		fd, err := rawFD(c)
		if err != nil {
			return -1
		}
		fds = append(fds, fd)
		return fd
	}
	passConn := func(c net.Conn) int {
		if sc, ok := c.(syscall.Conn); ok {
			return pass(sc)
		}
		fds = append(fds, -1)
		return -1
	}
	for _, ln := range o.listeners {
		st.Listeners = append(st.Listeners, handoverSocket{FD: pass(ln.File), Addr: ln.Addr})
	}
	if o.tableFile != nil {
		st.Table = pass(o.tableFile)
	}
	if o.idem.file != nil {
		st.Idempotency = pass(o.idem.file)
	}
	if o.sim != nil {
		st.Simulator = pass(o.sim.ln)
	}
	st.Operator = pass(o.op.api.Listener())
	if o.op.metricsLn != nil {
		st.Metrics = pass(o.op.metricsLn)
	}
	for _, sl := range o.slots {
		st.Slots = append(st.Slots, handoverSlot{Restarts: sl.restarts, Degraded: sl.degraded})
		if p := sl.cur; p != nil && p.is(stateReady) {
			st.Workers = append(st.Workers, handoverWorker{Slot: p.slot, PID: p.pid, FD: passConn(p.conn), Pending: p.codec.Pending(),
				Generation: p.gen, Started: p.started, ReadyAt: p.readyAt, Stats: p.stats})
		}
	}
	own, err := o.metrics.reg.Gather()
	if err != nil {
		return fmt.Errorf("gather own metrics: %w", err)
	}
	own = slices.DeleteFunc(slotmetrics.AddOffsets(own, o.metrics.offset), func(f *dto.MetricFamily) bool { return outlivesExec(f.GetName()) })
	if st.Own, err = slotmetrics.EncodeFamilies(own); err != nil {
		return err
	}
	if slices.Contains(fds, -1) {
		return errors.New("a descriptor to pass could not be read")
	}
	body, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode hand-over state: %w", err)
	}
	mfd, err := unix.MemfdCreate("amexd-handover", 0)
	if err != nil {
		return fmt.Errorf("hand-over state: %w", err)
	}
	defer unix.Close(mfd)
	if _, err := unix.Write(mfd, body); err != nil {
		return fmt.Errorf("hand-over state: %w", err)
	}
	if _, err := unix.Seek(mfd, 0, 0); err != nil {
		return fmt.Errorf("hand-over state: %w", err)
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("pass descriptor %d: %w", fd, err)
		}
	}
	defer func() {
		for _, fd := range fds {
			unix.CloseOnExec(fd)
		}
	}()
	env := append(os.Environ(), handoverEnv+"="+strconv.Itoa(mfd))
	o.log.Info("supervisor: re-executing", "binary", bin, "pid", os.Getpid(), "workers", len(st.Workers))
	err = syscall.Exec(bin, os.Args, env)
	return fmt.Errorf("exec %s: %w", bin, err)
}

// outlivesExec reports whether a family of the supervisor's own counts
// what survives its re-execution (the kernel's process accounting, the
// shared table), so that it needs no offset.
func outlivesExec(name string) bool {
	return strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "amexd_ratelimit_table_")
}

// rawFD is c's descriptor, without the blocking-mode switch of os.File.Fd.
func rawFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// takeHandover reads the state a re-executing supervisor left, if this
// process is one; it closes the state's descriptor and forgets the
// variable, so that workers and later upgrades do not see it.
func takeHandover() (*handoverState, error) {
	v, ok := os.LookupEnv(handoverEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(handoverEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", handoverEnv, v, err)
	}
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	var st handoverState
	if err := json.NewDecoder(f).Decode(&st); err != nil {
		return nil, fmt.Errorf("read hand-over state: %w", err)
	}
	return &st, nil
}

// inherit takes over descriptor fd, closed on exec again.
func inherit(fd int, name string) *os.File {
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), name)
}

// inheritConn is fd as a net.Conn (and its listener as a net.Listener).
func inheritConn(fd int, name string) (net.Conn, error) {
	f := inherit(fd, name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("inherit %s (fd %d): %w", name, fd, err)
	}
	return c, nil
}

func inheritListener(fd int, name string) (net.Listener, error) {
	f := inherit(fd, name)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherit %s (fd %d): %w", name, fd, err)
	}
	return ln, nil
}
