package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/amexd/amexd/internal/control"
)

// fanOutTimeout bounds how long an invalidation waits for one worker's
// applied answer; a worker that does not answer in time is not waited for.
const fanOutTimeout = time.Second

// fanOut applies from's invalidation in targets and, with a cluster bridge,
// on the other machines, then acknowledges it to from. It runs outside the
// owner loop: waiting for answers must not hold up anything else.
func (s *Supervisor) fanOut(from *proc, targets []*proc, m control.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), fanOutTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.invalidate(ctx, targets, m.Keys) })
	if s.bridge != nil {
		wg.Go(func() {
			if err := s.bridge.Invalidate(ctx, m.Keys); err != nil {
				s.log.Warn("supervisor: invalidation not confirmed by every machine", "err", err)
			}
		})
	}
	wg.Wait()
	if err := from.out.Send(control.Message{Type: control.TypeAck, ID: m.ID}); err != nil {
		s.reportOverflow(from, control.TypeAck)
	}
}

// reportOverflow has the loop replace p, whose queue was full when a
// fan-out sent it what; it does not wait, as the loop may be waiting for
// this fan-out (a hand-over's pause does).
func (s *Supervisor) reportOverflow(p *proc, what string) {
	go s.in.tell(func(o *owner) { o.overflowed(p, what) })
}

// invalidateLocal drops keys in every live worker, for the cluster bridge.
func (s *Supervisor) invalidateLocal(ctx context.Context, keys []string) {
	targets, _ := ask(s.in, func(o *owner) []*proc {
		o.noteInvalidation(keys)
		return o.live(nil)
	})
	s.invalidate(ctx, targets, keys)
}

// invalidate drops keys in targets, waiting for each to answer until ctx
// ends.
func (s *Supervisor) invalidate(ctx context.Context, targets []*proc, keys []string) {
	var wg sync.WaitGroup
	for _, p := range targets {
		wg.Go(func() {
			if _, err := request(ctx, p, control.Message{Type: control.TypeInvalidate, Keys: keys}); err != nil {
				s.log.Warn("supervisor: invalidation not applied", "slot", p.slot, "pid", p.pid, "err", err)
				if errors.Is(err, errQueueFull) {
					s.reportOverflow(p, control.TypeInvalidate)
				}
			}
		})
	}
	wg.Wait()
}

// request sends m to p and waits for the answer.
func request(ctx context.Context, p *proc, m control.Message) (control.Message, error) {
	reply, err := p.calls.Do(ctx, m)
	switch {
	case errors.Is(err, control.ErrClosed):
		return control.Message{}, fmt.Errorf("worker %d exited before answering %s", p.pid, m.Type)
	case err != nil:
		return control.Message{}, fmt.Errorf("worker %d did not answer %s: %w", p.pid, m.Type, err)
	}
	return reply, nil
}

// breakerChanged records p's breaker transition and, when propagation is on
// and the change is the worker's own, forces it on every other worker.
// Openings and recoveries propagate; half-open stays local, so that only
// one worker probes the upstream.
func (o *owner) breakerChanged(p *proc, c control.BreakerChange) {
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
	// A canary's breakers stay its own: a configuration under trial must
	// not open the old workers' circuits.
	propagate := o.cfg.Breaker.Propagate && !c.Forced && (c.To == control.StateOpen || c.To == control.StateClosed) && !o.onTrial(p)
	o.log.Info("supervisor: breaker changed", "slot", p.slot, "pid", p.pid, "breaker", c.Name, "from", c.From, "to", c.To, "forced", c.Forced, "propagate", propagate)
	if propagate {
		o.forceBreaker(p, c.Name, c.To)
		if o.bridge != nil {
			go o.bridge.Breaker(c.Name, c.To)
		}
	}
}

// forceBreaker sets breaker name to state in every live worker but skip,
// and returns how many were told.
func (o *owner) forceBreaker(skip *proc, name, state string) int {
	n := 0
	for _, q := range o.live(skip) {
		o.send(q, control.Message{Type: control.TypeBreaker, Breaker: &control.BreakerChange{Name: name, To: state, Forced: true}})
		n++
	}
	return n
}

// resetBreakers forces the named breakers (all known ones when names is
// empty) closed in every live worker and returns the names reset.
func (o *owner) resetBreakers(names []string) []string {
	if len(names) == 0 {
		for _, b := range o.clusterStatus().Summary {
			names = append(names, b.Name)
		}
	}
	for _, name := range names {
		o.forceBreaker(nil, name, control.StateClosed)
	}
	return names
}

// purge empties every live worker's cache and returns how many were told.
func (o *owner) purge() int {
	live := o.live(nil)
	for _, p := range live {
		o.send(p, control.Message{Type: control.TypePurge})
	}
	return len(live)
}

// clusterStatus is every live worker's breakers as of its latest heartbeat.
func (o *owner) clusterStatus() control.ClusterStatus {
	workers := make([]control.WorkerBreakers, 0, len(o.procs))
	for p := range o.procs {
		workers = append(workers, control.WorkerBreakers{
			Slot: p.slot, PID: p.pid, State: p.state.String(), LastHeartbeat: p.lastBeat,
			Breakers: append([]control.Breaker{}, p.stats.Breakers...),
		})
	}
	slices.SortFunc(workers, func(a, b control.WorkerBreakers) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.PID - b.PID
	})
	return control.ClusterStatus{Workers: workers, Summary: control.Summarize(workers)}
}
