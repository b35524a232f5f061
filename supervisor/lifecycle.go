package supervisor

import (
	"context"
	"errors"
	"strconv"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
)

// This file is the life of a slot, of its worker processes and of the
// supervisor itself: their states, and every change of them, each a method
// that only the owner loop runs (on an event, or because a job asked it).
//
// A slot (slotState; cur is its worker, or the last one that exited):
//
//	vacant     ─ the loop starts ──────────────► restarting  startVacant
//	vacant     ─ scaling up, a hand-over ──────► running     openSlot, occupy, adopted
//	restarting ─ restart due, worker started ──► running     respawnDue
//	restarting ─ the start failed ─────────────► restarting  crashed: backoff
//	running    ─ its worker exits unretired ───► restarting  exited, crashed: backoff
//	any        ─ a job's new worker is ready ──► running     install: the old one drains
//	any        ─ scaling down ─────────────────► removed     closeSlots
//
// Besides its state, a slot is degraded after degraded_after crashes within
// healthy_after, until its worker has served for healthy_after
// (clearDegraded), and is not recycled again for healthy_after after a
// recycling failed (holdRecycling).
//
// A worker process (procState; it starts in stateStarting, the zero value):
//
//	starting ─ its ready message ──► ready     becameReady (adopted: ready already)
//	ready    ─ retired ────────────► draining  retire: replaced, shut down, scaled away
//	any      ─ reaped ─────────────► exited    exited
//
// Workers are killed, and then reaped, when judge finds one starting past
// ready_timeout, draining past its deadline or silent past
// heartbeat_timeout (hung: asked for its stacks with SIGQUIT first, killed
// stackWait later), when retire finds one still starting, and when its
// control queue overflows.
//
// The supervisor's own state is four fields of the owner, each written here
// only: job, set by startJob (refused while shutting down, while a job runs
// or a re-execution is due) and cleared when the job returns; trialGen, set
// and cleared by a rolling plan's canary (beginTrial, endTrial); execAt,
// set by an upgrade's last step (execDue), brought forward (execNow) and
// cleared when taken (takeExec) or by stop; shutting, set by stop
// (shutdown, giveUp), after which nothing starts and the loop ends once
// every worker is reaped.

// procState is where a worker process is in its life.
type procState int

const (
	stateStarting procState = iota // started, not ready yet
	stateReady                     // serving
	stateDraining                  // told to drain; killed at drainBy
	stateExited                    // reaped
)

// String is the state as /status and /workers report it.
func (st procState) String() string {
	switch st {
	case stateStarting:
		return "starting"
	case stateReady:
		return "ready"
	case stateDraining:
		return "draining"
	}
	return "exited"
}

// is reports whether p is in state st.
func (p *proc) is(st procState) bool { return p.state == st }

// slotState is where a slot is in its life.
type slotState int

const (
	slotVacant     slotState = iota // no worker yet, and none due
	slotRunning                     // cur is its worker, in whatever state
	slotRestarting                  // a worker starts at respawnAt
)

// slot is one worker position: a listening socket and the worker serving
// it. The owner loop alone reads and writes it.
type slot struct {
	index    int
	state    slotState
	cur      *proc // its worker, or the last one that exited
	cfg      config.Config
	gen      int
	restarts int
	backoff  time.Duration
	crashes  []time.Time
	degraded bool
	// respawnAt is when a worker starts, while restarting.
	respawnAt time.Time
	// last is the slot's latest replacement; nil before the first.
	last *replacement
	// recycleAfter holds recycling off after a failed one.
	recycleAfter time.Time
}

// serving reports whether sl's worker is ready.
func (sl *slot) serving() bool { return sl.cur != nil && sl.cur.is(stateReady) }

// worker is slot's worker, nil when it has none or there is no such slot.
func (o *owner) worker(slot int) *proc {
	if slot < 0 || slot >= len(o.slots) {
		return nil
	}
	return o.slots[slot].cur
}

// replacement is why and when a slot's worker was last replaced.
type replacement struct {
	reason string
	pid    int
	at     time.Time
}

// The reasons a worker is replaced, as /workers and the metrics give them.
const (
	reasonCrash    = "crash"
	reasonHang     = "hang"
	reasonReload   = "reload"
	reasonUpgrade  = "upgrade"
	reasonRequests = "requests"
	reasonMemory   = "memory"
	reasonRollback = "rollback"
)

// stackWait is how long a hung worker has to print its goroutine stacks
// after SIGQUIT before it is killed without them.
const stackWait = 2 * time.Second

// openSlot adds a vacant slot of configuration cfg and generation gen.
func (o *owner) openSlot(cfg config.Config, gen int) *slot {
	sl := &slot{index: len(o.slots), cfg: cfg, gen: gen}
	o.slots = append(o.slots, sl)
	return sl
}

// closeSlots removes the slots from n on.
func (o *owner) closeSlots(n int) { o.slots = o.slots[:n] }

// occupy makes p, a worker started for sl, its worker.
func (o *owner) occupy(sl *slot, p *proc) {
	sl.state, sl.cur, sl.cfg, sl.gen, sl.respawnAt = slotRunning, p, p.cfg, p.gen, time.Time{}
}

// adoptSlots takes the restart counts and degraded marks a hand-over gave.
func (o *owner) adoptSlots(hs []handoverSlot) {
	for i, st := range hs {
		if i < len(o.slots) {
			o.slots[i].restarts, o.slots[i].degraded = st.Restarts, st.Degraded
		}
	}
}

// adopted makes p, a worker the binary before a re-execution saw ready at
// readyAt, the worker of its slot.
func (o *owner) adopted(p *proc, readyAt time.Time, stats control.Stats) {
	p.state, p.readyAt, p.lastBeat, p.stats = stateReady, readyAt, time.Now(), stats
	close(p.ready)
	o.occupy(o.slots[p.slot], p)
}

// startVacant has every slot without a worker start one now.
func (o *owner) startVacant(now time.Time) {
	for _, sl := range o.slots {
		if sl.state == slotVacant {
			sl.state, sl.respawnAt = slotRestarting, now
		}
	}
	o.respawnDue(now)
}

// respawnDue starts the worker of every slot whose restart time came.
func (o *owner) respawnDue(now time.Time) {
	for _, sl := range o.slots {
		if sl.state != slotRestarting || now.Before(sl.respawnAt) {
			continue
		}
		p, err := o.spawn(sl.index, sl.cfg, sl.gen, "")
		if err != nil {
			o.log.Error("supervisor: cannot start worker", "slot", sl.index, "err", err)
			o.crashed(sl, 0, now)
			continue
		}
		o.occupy(sl, p)
	}
}

// crashed counts a crash of sl's worker that lived for lived and schedules
// the next start.
func (o *owner) crashed(sl *slot, lived time.Duration, now time.Time) {
	sc := sl.cfg.Supervisor
	sl.backoff = nextBackoff(sl.backoff, lived, sc.RestartMin, sc.RestartMax, sc.HealthyAfter)
	sl.restarts++
	o.metrics.restarts.WithLabelValues(strconv.Itoa(sl.index)).Inc()
	sl.crashes = append(recentOnly(sl.crashes, now, sc.HealthyAfter), now)
	if len(sl.crashes) >= sc.DegradedAfter && !sl.degraded {
		sl.degraded = true
		o.log.Error("supervisor: slot degraded", "slot", sl.index, "crashes", len(sl.crashes), "within", sc.HealthyAfter.String())
	}
	sl.state, sl.respawnAt = slotRestarting, now.Add(sl.backoff)
	o.scheduleRespawn()
}

// scheduleRespawn sets the respawn timer to the earliest restart due.
func (o *owner) scheduleRespawn() {
	var next time.Time
	for _, sl := range o.slots {
		if sl.state == slotRestarting && (next.IsZero() || sl.respawnAt.Before(next)) {
			next = sl.respawnAt
		}
	}
	if !next.IsZero() && o.respawn != nil {
		o.respawn.Reset(max(time.Until(next), 0))
	}
}

// install makes p, a job's new worker, the worker of slot and retires the
// one it replaces.
func (o *owner) install(slot int, p *proc, why string) bool {
	if o.shutting || p.is(stateExited) || slot >= len(o.slots) {
		return false
	}
	sl := o.slots[slot]
	old := sl.cur
	o.occupy(sl, p)
	if old != nil {
		o.log.Info("supervisor: worker replaced", "slot", slot, "old", old.pid, "new", p.pid, "why", why)
		o.replaced(sl, old.pid, why)
		o.retire(old, p.cfg.ShutdownTimeout)
	}
	return true
}

// replaced records that the worker pid of sl was replaced for reason.
func (o *owner) replaced(sl *slot, pid int, reason string) {
	sl.last = &replacement{reason: reason, pid: pid, at: time.Now()}
	o.metrics.replacements.WithLabelValues(reason).Inc()
}

// clearDegraded clears the degraded mark of every slot whose worker has
// served for healthy_after.
func (o *owner) clearDegraded(now time.Time) {
	for _, sl := range o.slots {
		if sl.degraded && sl.serving() && now.Sub(sl.cur.readyAt) >= sl.cfg.Supervisor.HealthyAfter {
			sl.degraded = false
			sl.crashes = nil
			o.log.Info("supervisor: slot recovered", "slot", sl.index)
		}
	}
}

// holdRecycling keeps slot from being recycled for d.
func (o *owner) holdRecycling(slot int, d time.Duration) {
	if slot < len(o.slots) {
		o.slots[slot].recycleAfter = time.Now().Add(d)
	}
}

// becameReady records p's ready message, with its first figures when it
// has them.
func (o *owner) becameReady(p *proc, stats *control.Stats) {
	if !p.readyAt.IsZero() {
		return
	}
	p.readyAt, p.lastBeat = time.Now(), time.Now()
	if stats != nil {
		p.stats = *stats
	}
	if p.is(stateStarting) {
		p.state = stateReady
	}
	close(p.ready)
	o.log.Info("supervisor: worker ready", "slot", p.slot, "pid", p.pid, "after", p.readyAt.Sub(p.started).Round(time.Millisecond).String())
	o.notifyReady()
}

// retire asks p to drain; it is killed if it has not exited by timeout.
// A worker still starting serves nothing and is killed at once.
func (o *owner) retire(p *proc, timeout time.Duration) {
	switch p.state {
	case stateExited, stateDraining:
		return
	case stateStarting:
		_ = p.process.Kill()
		return
	}
	p.state, p.drainBy = stateDraining, time.Now().Add(timeout)
	o.send(p, control.Message{Type: control.TypeDrain})
}

// exited records a reaped worker; a slot's current worker that exits
// without having been retired is a crash, restarted after a backoff.
func (o *owner) exited(e exit) {
	p := e.p
	p.state, p.exitErr = stateExited, e.err
	delete(o.procs, p)
	close(p.exited)
	o.warmEnded(p)
	o.log.Info("supervisor: worker exited", "slot", p.slot, "pid", p.pid, "status", exitStatus(e.err))
	if o.worker(p.slot) != p || o.shutting {
		return // retired, or its slot was scaled away
	}
	sl := o.slots[p.slot]
	now := time.Now()
	reason := reasonCrash
	if !p.quitAt.IsZero() {
		reason = reasonHang
		o.log.Error("supervisor: hung worker exited on SIGQUIT; its goroutine stacks are in the log just above", "slot", p.slot, "pid", p.pid)
	}
	o.replaced(sl, p.pid, reason)
	o.crashed(sl, now.Sub(p.started), now)
	o.log.Error("supervisor: worker exited unexpectedly", "slot", sl.index, "pid", p.pid, "err", exitStatus(e.err),
		"restart_in", sl.backoff.String(), "restarts", sl.restarts, "degraded", sl.degraded)
}

// judge kills the workers not ready in time, past their drain deadline or
// hung. After a stall of the supervisor itself, a worker's time counts from
// awakeSince: its silence was the supervisor's deafness.
func (o *owner) judge(now time.Time) {
	sc := o.cfg.Supervisor
	for p := range o.procs {
		switch {
		case p.is(stateDraining) && now.After(p.drainBy):
			o.log.Warn("supervisor: worker did not drain in time, killing it", "slot", p.slot, "pid", p.pid)
			_ = p.process.Kill()
		case p.is(stateStarting) && now.Sub(later(p.started, o.awakeSince)) > sc.ReadyTimeout:
			o.log.Error("supervisor: worker not ready in time, killing it", "slot", p.slot, "pid", p.pid, "ready_timeout", sc.ReadyTimeout.String())
			_ = p.process.Kill()
		case o.quitOverdue(p, now):
		case p.is(stateReady) && p.quitAt.IsZero() && now.Sub(later(p.lastBeat, o.awakeSince)) > sc.HeartbeatTimeout:
			o.hung(p, now)
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// hung asks a worker whose request path stopped answering for its
// goroutine stacks: Go prints them to stderr, which is the log, on SIGQUIT
// and exits. SIGCONT lets a stopped worker do so; one that cannot is
// killed after stackWait (see quitOverdue).
func (o *owner) hung(p *proc, now time.Time) {
	o.log.Error("supervisor: worker hung; asking for its goroutine stacks (SIGQUIT), then replacing it",
		"slot", p.slot, "pid", p.pid, "silent_for", now.Sub(p.lastBeat).Round(time.Millisecond).String())
	p.quitAt = now
	if err := p.process.Signal(syscall.SIGQUIT); err != nil {
		o.log.Error("supervisor: hung worker could not be sent SIGQUIT; killing it without stacks", "slot", p.slot, "pid", p.pid, "err", err)
		_ = p.process.Kill()
		return
	}
	_ = p.process.Signal(syscall.SIGCONT)
}

// quitOverdue kills a hung worker that did not exit on SIGQUIT in time.
func (o *owner) quitOverdue(p *proc, now time.Time) bool {
	if p.quitAt.IsZero() || now.Sub(p.quitAt) < stackWait {
		return false
	}
	o.log.Error("supervisor: hung worker did not answer SIGQUIT; killing it without stacks", "slot", p.slot, "pid", p.pid, "waited", stackWait.String())
	p.quitAt = time.Time{}
	_ = p.process.Kill()
	return true
}

// overflowed kills a worker that stopped reading its control channel; its
// slot restarts it like a crashed one.
func (o *owner) overflowed(p *proc, what string) {
	if p.is(stateExited) {
		return
	}
	o.log.Error("supervisor: worker not reading its control channel, replacing it", "slot", p.slot, "pid", p.pid, "queued", queueLen, "dropped", what)
	_ = p.process.Kill()
}

// ErrReloadInProgress is returned by a reload or upgrade requested while
// another runs.
var ErrReloadInProgress = errors.New("a reload or upgrade is already in progress")

// job is a reload, upgrade, scaling or recycling: a sequence of steps in
// its own goroutine that changes slots only by asking the owner. Shutdown
// cancels it.
type job struct {
	kind   string
	cancel context.CancelFunc
}

// startJob runs run as the owner's job unless one is running, a
// re-execution is due or shutdown began; done, when not nil, receives its
// result.
func (o *owner) startJob(kind string, run func(ctx context.Context) error, done chan<- error) {
	reply := func(err error) {
		if done != nil {
			done <- err
		}
	}
	switch {
	case o.shutting:
		reply(errShuttingDown)
		return
	case o.job != nil || !o.execAt.IsZero():
		o.log.Warn("supervisor: "+kind+" refused", "err", ErrReloadInProgress)
		reply(ErrReloadInProgress)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{kind: kind, cancel: cancel}
	o.job = j
	in := o.in // the job runs off the loop: it takes the inbox, not the owner
	o.jobs.Go(func() {
		err := run(ctx)
		cancel()
		in.tell(func(o *owner) {
			if o.job == j {
				o.job = nil
			}
		})
		reply(err)
	})
}

// beginTrial marks the workers of slot 0 and generation gen as a canary
// under watch, whose breaker changes stay their own.
func (o *owner) beginTrial(gen int) { o.trialGen = gen }

// endTrial ends the canary's watch.
func (o *owner) endTrial() { o.trialGen = 0 }

// onTrial reports whether p is a canary under watch.
func (o *owner) onTrial(p *proc) bool { return o.trialGen != 0 && p.slot == 0 && p.gen == o.trialGen }

// execDue has the supervisor re-execute itself with bin at the first tick
// from at on; it returns the number that re-execution will have.
func (o *owner) execDue(bin string, at time.Time) int {
	o.execAt, o.execBinary, o.execErr = at, bin, ""
	return o.execs + 1
}

// execNow brings a due re-execution forward to the next tick.
func (o *owner) execNow() {
	if !o.execAt.IsZero() {
		o.execAt = time.Now()
	}
}

// takeExec returns the binary of the re-execution due, which is then no
// longer due.
func (o *owner) takeExec() string {
	bin := o.execBinary
	o.execAt, o.execBinary = time.Time{}, ""
	return bin
}

// stop begins the end of the supervisor: the job running is cancelled, no
// re-execution is due and nothing starts any more.
func (o *owner) stop() {
	o.shutting = true
	o.takeExec()
	if o.job != nil {
		o.job.cancel()
	}
}

// shutdown cancels a running reload or upgrade, tells systemd, and drains
// every worker; nothing is started afterwards.
func (o *owner) shutdown() {
	if o.shutting {
		return
	}
	o.stop()
	o.notify.send("STOPPING=1")
	for p := range o.procs {
		o.retire(p, o.cfg.ShutdownTimeout)
	}
}

// giveUp ends the supervisor with err after killing every worker.
func (o *owner) giveUp(err error) {
	if o.shutting {
		return
	}
	o.log.Error("supervisor: giving up", "err", err)
	o.fatal = err
	o.stop()
	for p := range o.procs {
		_ = p.process.Kill()
	}
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
