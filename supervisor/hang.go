package supervisor

import (
	"syscall"
	"time"
)

// stackWait is how long a hung worker has to print its goroutine stacks
// after SIGQUIT before it is killed without them.
const stackWait = 2 * time.Second

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
	reasonRequests = "requests"
	reasonMemory   = "memory"
	reasonRollback = "rollback"
)

// replaced records that the worker pid of sl was replaced for reason.
func (o *owner) replaced(sl *slot, pid int, reason string) {
	sl.last = &replacement{reason: reason, pid: pid, at: time.Now()}
	o.metrics.replacements.WithLabelValues(reason).Inc()
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
