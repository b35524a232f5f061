package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/config"
)

// step replaces one slot's worker with one of configuration cfg and
// generation gen, from binary ("" for the running one); why is logged.
type step struct {
	slot   int
	cfg    config.Config
	gen    int
	binary string
	why    string
}

// plan is a rolling replacement: reload, upgrade and rollback are each
// one, differing only in their steps.
type plan struct {
	what  string // "reload", "upgrade" or "rollback", for logs and errors
	steps []step
	// canary, when positive and the plan has more than one step, is how
	// long the first step's worker (slot 0) is watched before the others
	// are replaced; back is what slot 0 returns to if it does worse.
	canary time.Duration
	back   step
	// tolerant plans log a failed step and go on with the next.
	tolerant bool
}

// stepError is a plan's step that failed: its slot's new worker did not
// get ready, and the slot keeps the worker it had.
type stepError struct {
	slot int
	err  error
}

func (e *stepError) Error() string { return fmt.Sprintf("slot %d: %v", e.slot, e.err) }

func (e *stepError) Unwrap() error { return e.err }

// roll runs p's steps in order and returns how many completed. A failed
// step stops it (unless p is tolerant) with a *stepError; the canary's
// verdict against it is an error wrapping ErrRolledBack. While the canary
// is watched, the trial generation marks its worker, so that its breaker
// changes stay its own: roll alone sets and clears it.
func (s *Supervisor) roll(ctx context.Context, p plan) (int, error) {
	trial := p.canary > 0 && len(p.steps) > 1
	if trial {
		gen := p.steps[0].gen
		if _, ok := ask(s.in, func(o *owner) bool { o.beginTrial(gen); return true }); !ok {
			return 0, errShuttingDown
		}
	}
	endTrial := func() {
		if trial {
			s.in.tell(func(o *owner) { o.endTrial() })
			trial = false
		}
	}
	defer endTrial()
	for i, st := range p.steps {
		if err := s.replaceSlot(ctx, st.slot, st.cfg, st.gen, st.binary, st.why); err != nil {
			if p.tolerant {
				s.log.Error("supervisor: "+p.what+" of a slot failed", "slot", st.slot, "err", err)
				continue
			}
			return i, &stepError{slot: st.slot, err: err}
		}
		if i == 0 && trial {
			err := s.canary(ctx, p.what, p.canary, p.back.cfg, p.back.gen)
			endTrial()
			if err != nil {
				return i, err
			}
		}
	}
	return len(p.steps), nil
}
