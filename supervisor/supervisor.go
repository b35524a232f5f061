package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/ratelimit"
)

// Worker lifecycle states as /status and /workers report them.
const (
	stateStarting = "starting"
	stateReady    = "ready"
	stateDraining = "draining"
	stateExited   = "exited"
)

// fanOutTimeout bounds how long an invalidation waits for one worker's
// applied answer; a worker that does not answer in time is not waited for.
const fanOutTimeout = time.Second

// ErrReloadInProgress is returned by a reload requested while another runs.
var ErrReloadInProgress = errors.New("reload already in progress")

// Supervisor runs the worker processes of one daemon.
type Supervisor struct {
	log     *slog.Logger
	src     config.Source
	started time.Time
	notify  notifier
	metrics *supervisorMetrics
	agg     *aggregator

	listeners []*listener
	table     *ratelimit.Table
	tableFile *os.File
	idem      idempotencyTable
	sim       *simServer
	bridge    *bridge // relays to other machines when Redis is the shared store
	op        *opServer
	reloadMu  sync.Mutex
	fatal     chan error

	mu          sync.Mutex
	cfg         config.Config // as given to workers: Upstream.URL resolved
	gen         int
	slots       []*slot
	procs       map[*proc]struct{} // every worker process not yet reaped
	shutting    bool
	outageSince time.Time
}

// slot is one worker position: a listening socket and the worker serving it.
type slot struct {
	index int
	ln    *listener
	// op serialises starting and replacing the slot's worker, so a respawn
	// after a crash and a reload never both install a worker.
	op sync.Mutex

	// Guarded by Supervisor.mu.
	cur      *proc
	cfg      config.Config
	gen      int
	restarts int
	backoff  time.Duration
	crashes  []time.Time
	degraded bool
}

// proc is one worker process.
type proc struct {
	slot    int
	gen     int
	pid     int
	cmd     *exec.Cmd
	codec   *control.Codec
	started time.Time
	ready   chan struct{} // closed on the worker's ready message
	exited  chan struct{} // closed once the process is reaped

	// Guarded by Supervisor.mu.
	state    string
	readyAt  time.Time
	lastBeat time.Time
	stats    control.Stats
	exitErr  error
	calls    *control.Requests
	// ctlClosed is set when the worker's control channel ended.
	ctlClosed bool
}

// Run supervises the daemon's workers until SIGTERM or SIGINT (or ctx's
// end), after which it drains them and returns nil. SIGHUP reloads the
// configuration from src. It returns an error when it cannot start (sockets,
// shared table, simulator) or when no slot could serve for
// cfg.Supervisor.OutageLimit; the workers are killed then.
func Run(ctx context.Context, src config.Source, cfg config.Config, log *slog.Logger) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	s := &Supervisor{
		log:     log,
		src:     src,
		started: time.Now(),
		notify:  notifier{log: log},
		fatal:   make(chan error, 1),
		procs:   map[*proc]struct{}{},
		gen:     1,
	}
	s.metrics = newSupervisorMetrics()
	s.agg = newAggregator()
	defer s.closeResources()
	if err := s.open(cfg); err != nil {
		return err
	}

	slotCtx, stopSlots := context.WithCancel(context.Background())
	defer stopSlots()
	var wg sync.WaitGroup
	for _, sl := range s.slots {
		wg.Go(func() { s.keepSlot(slotCtx, sl) })
	}
	wg.Go(func() { s.watch(slotCtx) })
	wg.Go(func() { s.notifyReady(slotCtx) })
	defer wg.Wait()

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				go func() { _, _ = s.Reload(ctx) }()
				continue
			}
			log.Info("supervisor: shutting down", "signal", sig.String())
		case <-ctx.Done():
			log.Info("supervisor: shutting down", "reason", ctx.Err())
		case err := <-s.fatal:
			log.Error("supervisor: giving up", "err", err)
			stopSlots()
			s.killAll()
			return err
		}
		s.notify.send("STOPPING=1")
		stopSlots()
		s.drainAll()
		return nil
	}
}

// open creates everything the workers inherit or use, then the slots.
func (s *Supervisor) open(cfg config.Config) error {
	n := cfg.WorkerCount()
	lns, err := openListeners(cfg.Listen, n)
	if err != nil {
		return err
	}
	s.listeners = lns
	if err := s.ensureTable(cfg); err != nil {
		return err
	}
	if cfg, err = s.resolveUpstream(cfg); err != nil {
		return err
	}
	s.cfg = cfg
	for i := range n {
		s.slots = append(s.slots, &slot{index: i, ln: lns[i], cfg: cfg, gen: s.gen})
		// A slot's restart counter exists from the start at 0, so that
		// rate() and increase() see its first restart.
		s.metrics.restarts.WithLabelValues(strconv.Itoa(i))
	}
	if cfg.RateLimit.Store == "redis" {
		forced := func(name, state string) { s.forceBreaker(nil, name, state) }
		if s.bridge, err = startBridge(cfg.RateLimit.RedisURL, s.log, func(ctx context.Context, keys []string) { s.invalidateLocal(ctx, nil, keys) }, forced); err != nil {
			return err
		}
	}
	if s.op, err = startOperator(s, cfg); err != nil {
		return err
	}
	s.log.Info("supervisor: started", "pid", os.Getpid(), "workers", n, "listen", lns[0].addr, "socket", s.op.path, "upstream", cfg.Upstream.URL)
	return nil
}

// resolveUpstream points an empty upstream URL at the embedded simulator,
// starting it on first use.
func (s *Supervisor) resolveUpstream(cfg config.Config) (config.Config, error) {
	if cfg.Upstream.URL != "" {
		return cfg, nil
	}
	if s.sim == nil {
		sim, err := startSimulator(cfg.Simulator)
		if err != nil {
			return cfg, err
		}
		s.sim = sim
		s.log.Info("supervisor: embedded simulator started", "url", sim.url)
	}
	cfg.Upstream.URL = s.sim.url
	return cfg, nil
}

func (s *Supervisor) closeResources() {
	if s.op != nil {
		s.op.close()
	}
	if s.bridge != nil {
		s.bridge.close()
	}
	if s.sim != nil {
		s.sim.close()
	}
	for _, ln := range s.listeners {
		ln.file.Close()
	}
	if s.table != nil {
		s.table.Close()
		s.tableFile.Close()
	}
	s.idem.close()
}

// keepSlot keeps a worker running in sl until ctx ends, respawning it with
// backoff when it exits without having been retired.
func (s *Supervisor) keepSlot(ctx context.Context, sl *slot) {
	var dead *proc
	for {
		sl.op.Lock()
		s.mu.Lock()
		cur, cfg, gen := sl.cur, sl.cfg, sl.gen
		s.mu.Unlock()
		if cur == nil || cur == dead {
			if ctx.Err() != nil {
				sl.op.Unlock()
				return
			}
			p, err := s.spawn(sl.index, cfg, gen)
			if err != nil {
				sl.op.Unlock()
				s.log.Error("supervisor: cannot start worker", "slot", sl.index, "err", err)
				s.mu.Lock()
				delay := s.recordCrash(sl, 0)
				s.mu.Unlock()
				if !sleep(ctx, delay) {
					return
				}
				continue
			}
			s.mu.Lock()
			sl.cur = p
			s.mu.Unlock()
			cur = p
		}
		sl.op.Unlock()

		select {
		case <-cur.exited:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		if s.shutting {
			s.mu.Unlock()
			return
		}
		if sl.cur != cur {
			s.mu.Unlock()
			continue // replaced by a reload: watch the successor
		}
		dead = cur
		delay := s.recordCrash(sl, time.Since(cur.started))
		restarts, degraded, exitErr := sl.restarts, sl.degraded, cur.exitErr
		s.mu.Unlock()
		s.log.Error("supervisor: worker exited unexpectedly", "slot", sl.index, "pid", cur.pid, "err", exitErr,
			"restart_in", delay, "restarts", restarts, "degraded", degraded)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// recordCrash counts a crash of sl's worker that lived for lived and returns
// how long to wait before the next start. The caller holds s.mu.
func (s *Supervisor) recordCrash(sl *slot, lived time.Duration) time.Duration {
	sc := sl.cfg.Supervisor
	now := time.Now()
	sl.backoff = nextBackoff(sl.backoff, lived, sc.RestartMin, sc.RestartMax, sc.HealthyAfter)
	sl.restarts++
	s.metrics.restarts.WithLabelValues(strconv.Itoa(sl.index)).Inc()
	sl.crashes = append(recentOnly(sl.crashes, now, sc.HealthyAfter), now)
	if len(sl.crashes) >= sc.DegradedAfter && !sl.degraded {
		sl.degraded = true
		s.log.Error("supervisor: slot degraded", "slot", sl.index, "crashes", len(sl.crashes), "within", sc.HealthyAfter)
	}
	return sl.backoff
}

// nextBackoff is the restart delay after a crash: min first, doubling up to
// max, and min again once a worker lived healthyAfter.
func nextBackoff(prev, lived, min, max, healthyAfter time.Duration) time.Duration {
	if prev == 0 || lived >= healthyAfter {
		return min
	}
	return clamp(2*prev, min, max)
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return time.Duration(max(int64(lo), min(int64(d), int64(hi))))
}

func recentOnly(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	out := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < window {
			out = append(out, t)
		}
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// spawn starts a worker for slot with cfg and sends it its configuration.
func (s *Supervisor) spawn(slotIndex int, cfg config.Config, gen int) (*proc, error) {
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode worker config: %w", err)
	}
	parentEnd, childEnd, err := socketpair()
	if err != nil {
		return nil, err
	}
	defer childEnd.Close()

	cmd := exec.Command("/proc/self/exe", "worker", "-slot", strconv.Itoa(slotIndex))
	cmd.Args[0] = os.Args[0]
	cmd.Env = workerEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{s.listeners[slotIndex].file, childEnd}
	if cfg.RateLimit.UsesTable() && s.tableFile != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.tableFile)
	}
	cmd.ExtraFiles = s.idem.extraFiles(cmd.ExtraFiles)
	// Workers die with the supervisor even if it is killed outright.
	// Its own process group: a terminal's Ctrl-C reaches the supervisor
	// alone, which then drains the workers in order instead of racing them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		parentEnd.Close()
		return nil, fmt.Errorf("start worker for slot %d: %w", slotIndex, err)
	}
	// The config goes out before the worker is visible to fan-outs, so
	// that it is always the first message the worker reads.
	codec := control.NewCodec(parentEnd)
	if err := codec.Send(control.Message{Type: control.TypeConfig, Slot: slotIndex, Generation: gen, Config: body}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		parentEnd.Close()
		return nil, fmt.Errorf("configure worker for slot %d: %w", slotIndex, err)
	}
	now := time.Now()
	p := &proc{
		slot: slotIndex, gen: gen, pid: cmd.Process.Pid, cmd: cmd,
		codec: codec, started: now,
		ready: make(chan struct{}), exited: make(chan struct{}),
		state: stateStarting, lastBeat: now, calls: control.NewRequests(codec),
	}
	s.mu.Lock()
	s.procs[p] = struct{}{}
	s.mu.Unlock()
	go s.reap(p)
	go s.readLoop(p)
	s.log.Info("supervisor: worker started", "slot", slotIndex, "pid", p.pid, "generation", gen)
	return p, nil
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

// reap waits for p to exit and releases whatever waits on it.
func (s *Supervisor) reap(p *proc) {
	err := p.cmd.Wait()
	p.codec.Close()
	s.mu.Lock()
	p.state = stateExited
	p.exitErr = err
	delete(s.procs, p)
	s.mu.Unlock()
	p.calls.Close()
	close(p.exited)
	s.log.Info("supervisor: worker exited", "slot", p.slot, "pid", p.pid, "status", exitStatus(err))
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// readLoop handles p's messages until its channel closes.
// readLoop handles p's messages until its control channel ends. A worker
// closes the channel once it has drained, before it exits: from then on it
// answers nothing, so requests to it fail at once rather than waiting for
// the process to be reaped.
func (s *Supervisor) readLoop(p *proc) {
	for {
		m, err := p.codec.Receive()
		if err != nil {
			s.mu.Lock()
			p.ctlClosed = true
			s.mu.Unlock()
			p.calls.Close()
			return
		}
		s.handle(p, m)
	}
}

func (s *Supervisor) handle(p *proc, m control.Message) {
	switch m.Type {
	case control.TypeReady:
		s.mu.Lock()
		first := p.readyAt.IsZero()
		if first {
			p.readyAt = time.Now()
			p.lastBeat = p.readyAt
			if p.state == stateStarting {
				p.state = stateReady
			}
		}
		s.mu.Unlock()
		if first {
			close(p.ready)
			s.log.Info("supervisor: worker ready", "slot", p.slot, "pid", p.pid, "after", time.Since(p.started).Round(time.Millisecond))
		}
	case control.TypeHeartbeat:
		s.mu.Lock()
		p.lastBeat = time.Now()
		if m.Stats != nil {
			p.stats = *m.Stats
		}
		s.mu.Unlock()
	case control.TypeBreaker:
		if m.Breaker != nil {
			s.breakerChanged(p, *m.Breaker)
		}
	case control.TypeInvalidate:
		go s.fanOut(p, m)
	case control.TypeShare:
		for _, q := range s.live(p) {
			if err := q.codec.Send(control.Message{Type: control.TypeShare, Shared: m.Shared}); err != nil {
				s.log.Debug("supervisor: share not delivered", "pid", q.pid, "err", err)
			}
		}
	case control.TypeCluster:
		go func() {
			cs := s.clusterStatus()
			if err := p.codec.Send(control.Message{Type: control.TypeCluster, ID: m.ID, Cluster: &cs}); err != nil {
				s.log.Warn("supervisor: cluster answer failed", "pid", p.pid, "err", err)
			}
		}()
	case control.TypeApplied, control.TypeStats, control.TypeProfile:
		p.calls.Deliver(m)
	default:
		s.log.Warn("supervisor: unknown control message", "type", m.Type, "pid", p.pid)
	}
}

// request sends m to p and waits for the answer.
func (s *Supervisor) request(ctx context.Context, p *proc, m control.Message) (control.Message, error) {
	reply, err := p.calls.Do(ctx, m)
	switch {
	case errors.Is(err, control.ErrClosed):
		return control.Message{}, fmt.Errorf("worker %d exited before answering %s", p.pid, m.Type)
	case err != nil:
		return control.Message{}, fmt.Errorf("worker %d did not answer %s: %w", p.pid, m.Type, err)
	}
	return reply, nil
}

// live returns every worker process not yet reaped, except skip.
func (s *Supervisor) live(skip *proc) []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*proc, 0, len(s.procs))
	for p := range s.procs {
		if p != skip && p.state != stateExited && !p.ctlClosed {
			out = append(out, p)
		}
	}
	return out
}

// fanOut applies from's invalidation in every other live worker and, with
// a cluster bridge, on the other machines, then acknowledges it to from.
func (s *Supervisor) fanOut(from *proc, m control.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), fanOutTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.invalidateLocal(ctx, from, m.Keys) })
	if s.bridge != nil {
		wg.Go(func() {
			if err := s.bridge.invalidate(ctx, m.Keys); err != nil {
				s.log.Warn("supervisor: invalidation not confirmed by every machine", "err", err)
			}
		})
	}
	wg.Wait()
	if err := from.codec.Send(control.Message{Type: control.TypeAck, ID: m.ID}); err != nil {
		s.log.Warn("supervisor: invalidation ack failed", "pid", from.pid, "err", err)
	}
}

// invalidateLocal drops keys in every live worker but skip, waiting for
// each to answer until ctx ends.
func (s *Supervisor) invalidateLocal(ctx context.Context, skip *proc, keys []string) {
	var wg sync.WaitGroup
	for _, p := range s.live(skip) {
		wg.Go(func() {
			if _, err := s.request(ctx, p, control.Message{Type: control.TypeInvalidate, Keys: keys}); err != nil {
				s.log.Warn("supervisor: invalidation not applied", "slot", p.slot, "pid", p.pid, "err", err)
			}
		})
	}
	wg.Wait()
}

// breakerChanged records p's breaker transition and, when propagation is on
// and the change is the worker's own, forces it on every other worker.
// Openings and recoveries propagate; half-open stays local, so that only
// one worker probes the upstream.
func (s *Supervisor) breakerChanged(p *proc, c control.BreakerChange) {
	s.mu.Lock()
	found := false
	for i := range p.stats.Breakers {
		if p.stats.Breakers[i].Name == c.Name {
			p.stats.Breakers[i].State = c.To
			found = true
		}
	}
	if !found {
		p.stats.Breakers = append(p.stats.Breakers, control.Breaker{Name: c.Name, State: c.To})
	}
	propagate := s.cfg.Breaker.Propagate && !c.Forced && (c.To == control.StateOpen || c.To == control.StateClosed)
	s.mu.Unlock()
	s.log.Info("supervisor: breaker changed", "slot", p.slot, "pid", p.pid, "breaker", c.Name, "from", c.From, "to", c.To, "forced", c.Forced, "propagate", propagate)
	if propagate {
		s.forceBreaker(p, c.Name, c.To)
		if s.bridge != nil {
			go s.bridge.breaker(c.Name, c.To)
		}
	}
}

// forceBreaker sets breaker name to state in every live worker but skip,
// and returns how many were told.
func (s *Supervisor) forceBreaker(skip *proc, name, state string) int {
	n := 0
	for _, q := range s.live(skip) {
		if err := q.codec.Send(control.Message{Type: control.TypeBreaker, Breaker: &control.BreakerChange{Name: name, To: state, Forced: true}}); err != nil {
			s.log.Warn("supervisor: breaker force failed", "pid", q.pid, "err", err)
			continue
		}
		n++
	}
	return n
}

// clusterStatus is every live worker's breakers as of its latest heartbeat.
func (s *Supervisor) clusterStatus() control.ClusterStatus {
	s.mu.Lock()
	workers := make([]control.WorkerBreakers, 0, len(s.procs))
	for p := range s.procs {
		workers = append(workers, control.WorkerBreakers{
			Slot: p.slot, PID: p.pid, State: p.state, LastHeartbeat: p.lastBeat,
			Breakers: append([]control.Breaker{}, p.stats.Breakers...),
		})
	}
	s.mu.Unlock()
	sortWorkers(workers)
	return control.ClusterStatus{Workers: workers, Summary: control.Summarize(workers)}
}

// watch kills workers that hang or never get ready, clears degraded marks,
// and ends the supervisor after an outage longer than the limit.
func (s *Supervisor) watch(ctx context.Context) {
	s.mu.Lock()
	every := clamp(s.cfg.Supervisor.HeartbeatInterval/4, 20*time.Millisecond, time.Second)
	s.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check(time.Now())
		}
	}
}

func (s *Supervisor) check(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return
	}
	sc := s.cfg.Supervisor
	for p := range s.procs {
		switch {
		case p.state == stateStarting && now.Sub(p.started) > sc.ReadyTimeout:
			s.log.Error("supervisor: worker not ready in time, killing it", "slot", p.slot, "pid", p.pid, "ready_timeout", sc.ReadyTimeout)
			_ = p.cmd.Process.Kill()
		case p.state == stateReady && now.Sub(p.lastBeat) > sc.HeartbeatTimeout:
			s.log.Error("supervisor: worker hung, killing it", "slot", p.slot, "pid", p.pid, "silent_for", now.Sub(p.lastBeat).Round(time.Millisecond))
			_ = p.cmd.Process.Kill()
		}
	}
	serving, degraded := 0, 0
	for _, sl := range s.slots {
		if sl.cur != nil && sl.cur.state == stateReady {
			serving++
			if sl.degraded && now.Sub(sl.cur.readyAt) >= sc.HealthyAfter {
				sl.degraded = false
				sl.crashes = nil
				s.log.Info("supervisor: slot recovered", "slot", sl.index)
			}
		}
		if sl.degraded {
			degraded++
		}
	}
	s.metrics.liveWorkers.Set(float64(len(s.procs)))
	s.metrics.degradedSlots.Set(float64(degraded))
	switch {
	case serving > 0:
		s.outageSince = time.Time{}
	case s.outageSince.IsZero():
		s.outageSince = now
	case now.Sub(s.outageSince) > sc.OutageLimit:
		select {
		case s.fatal <- fmt.Errorf("no worker could serve for %s", now.Sub(s.outageSince).Round(time.Second)):
		default:
		}
	}
}

// retire drains p and waits for it to exit, killing it after timeout.
func (s *Supervisor) retire(p *proc, timeout time.Duration) {
	s.mu.Lock()
	if p.state != stateExited {
		p.state = stateDraining
	}
	s.mu.Unlock()
	if err := p.codec.Send(control.Message{Type: control.TypeDrain}); err != nil {
		s.log.Warn("supervisor: drain request failed", "slot", p.slot, "pid", p.pid, "err", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		s.log.Warn("supervisor: worker did not drain in time, killing it", "slot", p.slot, "pid", p.pid, "timeout", timeout)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// drainAll retires every worker at once, within the shutdown timeout.
func (s *Supervisor) drainAll() {
	s.mu.Lock()
	s.shutting = true
	timeout := s.cfg.ShutdownTimeout
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range s.live(nil) {
		wg.Go(func() { s.retire(p, timeout) })
	}
	wg.Wait()
	s.log.Info("supervisor: all workers drained")
}

func (s *Supervisor) killAll() {
	s.mu.Lock()
	s.shutting = true
	s.mu.Unlock()
	for _, p := range s.live(nil) {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// notifyReady tells systemd READY=1 once every slot has a ready worker, and
// then keeps its watchdog fed while at least one slot serves: a degraded
// slot must not get the healthy ones restarted with it, and a total outage
// is handled by supervisor.outage_limit.
func (s *Supervisor) notifyReady(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	for !s.allServing() {
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	t.Stop()
	s.log.Info("supervisor: all workers ready", "after", time.Since(s.started).Round(time.Millisecond))
	s.notify.send("READY=1")
	s.notify.watchdog(ctx, s.anyServing)
}

// anyServing reports whether some slot has a ready worker.
func (s *Supervisor) anyServing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		if sl.cur != nil && sl.cur.state == stateReady {
			return true
		}
	}
	return false
}

func (s *Supervisor) allServing() bool {
	ok, _ := s.health()
	return ok
}

// health reports whether every slot has a ready worker, and if not why.
func (s *Supervisor) health() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var reasons []string
	for _, sl := range s.slots {
		switch {
		case sl.cur == nil:
			reasons = append(reasons, fmt.Sprintf("slot %d: no worker", sl.index))
		case sl.cur.state != stateReady:
			reasons = append(reasons, fmt.Sprintf("slot %d: worker %d is %s", sl.index, sl.cur.pid, sl.cur.state))
		}
		if sl.degraded {
			reasons = append(reasons, fmt.Sprintf("slot %d: degraded (%d crashes)", sl.index, len(sl.crashes)))
		}
	}
	if s.shutting {
		reasons = append(reasons, "shutting down")
	}
	return len(reasons) == 0, strings.Join(reasons, "; ")
}
