package supervisor

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/bridge"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/ratelimit"
	"github.com/amexd/amexd/internal/reuseport"
	"github.com/amexd/amexd/internal/slotmetrics"
)

// owner is the state of the slots and processes. One goroutine, loop,
// holds it and is its only reader and writer; everything else sends it
// events on its inbox or asks it with ask and tell.
type owner struct {
	// Set at start and shared with the goroutines around the loop, all
	// safe for concurrent use.
	log     *slog.Logger
	notify  notifier
	metrics *supervisorMetrics
	agg     *slotmetrics.Aggregator
	start   startFunc
	bridge  *bridge.Bridge
	op      *opServer // passed on by a re-execution
	in      inbox
	off     offLoop
	jobs    sync.WaitGroup // the jobs it started, waited for once the loop has returned
	// fanOuts counts invalidations being applied, whose acks a hand-over
	// must send before it re-executes.
	fanOuts sync.WaitGroup

	// What the workers inherit or use: a listening socket per slot (a
	// scaling adds and removes them), the shared tables and the embedded
	// simulator (a reload may add them).
	listeners []*reuseport.Listener
	table     *ratelimit.Table
	tableFile *os.File
	idem      idempotencyTable
	sim       *simServer

	started time.Time     // when the supervisor started, before any re-execution
	cfg     config.Config // as given to workers: Upstream.URL resolved
	gen     int
	slots   []*slot
	procs   map[*proc]struct{} // every worker process not yet reaped
	fatal   error              // why the supervisor gives up, once it does
	// transfers are the warm starts under way, by the ID of their export
	// request; invalidated are the latest invalidations they check.
	transfers    map[uint64]*transfer
	nextTransfer uint64
	invalidated  []invalidation
	readySent    bool
	outageSince  time.Time

	// The supervisor's own state, written in lifecycle.go only.
	shutting bool
	job      *job // the job running, if any
	// trialGen is the generation a canary (slot 0) runs while it is
	// watched; 0 when none is.
	trialGen int
	// execAt is when the supervisor re-executes itself with execBinary,
	// the last step of an upgrade; zero when none is due.
	execAt     time.Time
	execBinary string
	// execs counts the re-executions of this process so far, execErr is
	// the last failure.
	execs   int
	execErr string

	respawn      *time.Timer   // fires when the next slot's restart is due
	every        time.Duration // tick interval
	lastTick     time.Time
	awakeSince   time.Time // when the loop last resumed from a stall of its own
	watchdog     time.Duration
	lastWatchdog time.Time
}

// offLoop is the work the owner loop starts but must not do itself, as it
// waits: the jobs it starts on its own (on a signal, for a worker due for
// recycling) and invalidation fan-outs. The Supervisor does it, and it
// reaches the loop only with ask and tell.
type offLoop interface {
	reloadJob(ctx context.Context) error
	upgradeJob(ctx context.Context) error
	recycleJob(slot int, cfg config.Config, gen int, reason string) func(context.Context) error
	fanOut(from *proc, targets []*proc, m control.Message)
}

// loop runs the owner until shutdown has drained every worker, and returns
// why the supervisor gave up, or nil.
func (o *owner) loop(ctx context.Context, sigs <-chan os.Signal) error {
	// Workers are forked from this thread and an upgrade execs on it: a
	// worker's Pdeathsig fires when the thread that forked it ends, and
	// exec ends every other thread.
	runtime.LockOSThread()
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	o.respawn = time.NewTimer(time.Hour)
	defer o.respawn.Stop()
	o.lastTick, o.awakeSince = time.Now(), time.Now()
	o.startVacant(o.lastTick)
	o.notifyReady() // workers adopted after an upgrade are ready already
	stop := ctx.Done()
	for !o.shutting || len(o.procs) > 0 {
		select {
		case e := <-o.in.exits:
			o.exited(e)
		case m := <-o.in.msgs:
			o.message(m)
		case f := <-o.in.cmds:
			f(o)
		case <-tick.C:
			o.tick(time.Now())
		case <-o.respawn.C:
			if !o.shutting {
				o.respawnDue(time.Now())
			}
		case sig := <-sigs:
			o.signal(sig)
		case <-stop:
			stop = nil
			o.log.Info("supervisor: shutting down", "reason", context.Cause(ctx).Error())
			o.shutdown()
		}
	}
	o.log.Info("supervisor: all workers drained")
	return o.fatal
}

func (o *owner) signal(sig os.Signal) {
	switch sig {
	case syscall.SIGHUP:
		o.startJob("reload", o.off.reloadJob, nil)
	case syscall.SIGUSR2:
		o.startJob("upgrade", o.off.upgradeJob, nil)
	default:
		o.log.Info("supervisor: shutting down", "signal", sig.String())
		o.shutdown()
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// message handles one message from a worker.
func (o *owner) message(pm procMsg) {
	p, m := pm.p, pm.m
	if pm.closed {
		p.ctlClosed = true
		return
	}
	switch m.Type {
	case control.TypeReady:
		o.becameReady(p, m.Stats)
	case control.TypeHeartbeat:
		p.lastBeat = time.Now()
		if m.Stats != nil {
			p.stats = *m.Stats
		}
	case control.TypeBreaker:
		if m.Breaker != nil {
			o.breakerChanged(p, *m.Breaker)
		}
	case control.TypeInvalidate:
		targets := o.live(p)
		o.noteInvalidation(m.Keys)
		off := o.off
		o.fanOuts.Go(func() { off.fanOut(p, targets, m) })
	case control.TypeEntries:
		o.relayEntries(p, m)
	case control.TypeShare:
		for _, q := range o.live(p) {
			o.send(q, control.Message{Type: control.TypeShare, Shared: m.Shared})
		}
	case control.TypeCluster:
		cs := o.clusterStatus()
		o.send(p, control.Message{Type: control.TypeCluster, ID: m.ID, Cluster: &cs})
	default:
		o.log.Warn("supervisor: unknown control message", "type", m.Type, "pid", p.pid)
	}
}

// send queues m for p; a worker whose queue is full is replaced.
func (o *owner) send(p *proc, m control.Message) {
	if err := p.out.Send(m); err != nil {
		o.overflowed(p, m.Type)
	}
}

// tick judges the workers (see judge) and does what is due: a
// re-execution, restarts, a recycling. It first reads what is queued, and
// after a stall of the supervisor itself (a gap between ticks of half the
// heartbeat timeout or more) it gives the workers a full timeout from the
// moment it resumed: their silence was the supervisor's deafness.
func (o *owner) tick(now time.Time) {
	if gap := now.Sub(o.lastTick); gap > max(2*o.every+100*time.Millisecond, o.cfg.Supervisor.HeartbeatTimeout/2) {
		o.awakeSince = now
		o.log.Warn("supervisor: resumed after a stall; heartbeats are judged from now", "stalled_for", gap.Round(time.Millisecond).String())
	}
	o.lastTick = now
	for o.drainMessages() {
	}
	o.judge(now)
	if o.shutting {
		return
	}
	if !o.execAt.IsZero() && !now.Before(o.execAt) {
		o.handover()
	}
	o.respawnDue(now)
	o.recycleDue(now)
	o.watchSlots(now)
	o.feedWatchdog(now)
}

// drainMessages handles one queued worker message, if there is one.
func (o *owner) drainMessages() bool {
	select {
	case m := <-o.in.msgs:
		o.message(m)
		return true
	default:
		return false
	}
}

// ask runs f in the owner loop and returns its result; ok is false when
// the loop has ended. It must not be called from the loop itself.
func ask[T any](in inbox, f func(*owner) T) (v T, ok bool) {
	reply := make(chan T, 1)
	select {
	case in.cmds <- func(o *owner) { reply <- f(o) }:
		return <-reply, true
	case <-in.done:
		return v, false
	}
}

// tell runs f in the owner loop without waiting for it.
func (in inbox) tell(f func(*owner)) {
	post(in, in.cmds, f)
}
