package supervisor

import (
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/control"
)

// transfer is a warm start under way: the hot cache entries of from, a
// running worker, relayed to to, a new one, before to serves.
type transfer struct {
	from, to *proc
	began    time.Time
	entries  int
	bytes    int64
	dropped  int // entries left out because a write invalidated their key
}

// invalidation is a set of keys a write made stale, as the owner saw it go
// out to the workers.
type invalidation struct {
	at   time.Time
	keys []string
}

// warmSource picks where a new worker of slot gets its entries: the slot's
// current worker when it serves (a reload, a recycling), else the serving
// sibling with the most entries (a crash, a new slot); nil when none serves
// or warm starts are off.
func (o *owner) warmSource(slot int, maxEntries int) *proc {
	if maxEntries <= 0 || o.shutting {
		return nil
	}
	if slot < len(o.slots) && o.slots[slot].serving() {
		return o.slots[slot].cur
	}
	var best *proc
	for _, sl := range o.slots {
		if sl.index != slot && sl.serving() && (best == nil || sl.cur.stats.Cache.Entries > best.stats.Cache.Entries) {
			best = sl.cur
		}
	}
	return best
}

// startWarm asks from for its hot entries on behalf of to, whose config
// message said a transfer follows. to is already among the workers an
// invalidation reaches, and from reads its cache after every invalidation
// queued for it before this request: a write during the transfer reaches
// to itself, whose import then refuses the older copy.
func (o *owner) startWarm(to, from *proc) {
	o.nextTransfer++
	id := o.nextTransfer
	o.transfers[id] = &transfer{from: from, to: to, began: time.Now()}
	w := to.cfg.Supervisor.Warm
	o.send(from, control.Message{Type: control.TypeExport, ID: id,
		Export: &control.ExportRequest{MaxEntries: w.MaxEntries, MaxBytes: int64(w.MaxBytes)}})
	o.log.Info("supervisor: warm start begins", "slot", to.slot, "pid", to.pid, "from_slot", from.slot, "from_pid", from.pid)
}

// relayEntries passes one entries message of a transfer on to its new
// worker, without the keys invalidated lately, and ends the transfer with
// its last message.
func (o *owner) relayEntries(from *proc, m control.Message) {
	t := o.transfers[m.ID]
	if t == nil || t.from != from {
		return
	}
	if len(m.Entries) > 0 {
		kept := o.withoutInvalidated(t, m.Entries)
		for _, e := range kept {
			t.bytes += int64(len(e.Body))
		}
		t.entries += len(kept)
		o.send(t.to, control.Message{Type: control.TypeEntries, Entries: kept})
	}
	if m.Done {
		o.endWarm(m.ID, m.Error)
	}
}

// withoutInvalidated drops the entries whose keys were invalidated since a
// fan-out started before the transfer could have been sent: such a
// fan-out's targets were chosen before the new worker existed, so its
// invalidation may reach the source after the source read the entry.
func (o *owner) withoutInvalidated(t *transfer, entries []control.CacheEntry) []control.CacheEntry {
	since := t.began.Add(-fanOutTimeout)
	stale := map[string]bool{}
	for _, inv := range o.invalidated {
		if !inv.at.Before(since) {
			for _, k := range inv.keys {
				stale[k] = true
			}
		}
	}
	if len(stale) == 0 {
		return entries
	}
	kept := entries[:0:0]
	for _, e := range entries {
		if stale[e.Key] {
			t.dropped++
			continue
		}
		kept = append(kept, e)
	}
	return kept
}

// endWarm tells the new worker the transfer is over, logs and counts it.
func (o *owner) endWarm(id uint64, failure string) {
	t := o.transfers[id]
	if t == nil {
		return
	}
	delete(o.transfers, id)
	from := fmt.Sprintf("slot %d pid %d", t.from.slot, t.from.pid)
	o.send(t.to, control.Message{Type: control.TypeEntries, Done: true, Error: failure,
		Transfer: &control.Transfer{Entries: t.entries, Bytes: t.bytes, From: from}})
	o.metrics.warmEntries.Add(float64(t.entries))
	attrs := []any{"slot", t.to.slot, "pid", t.to.pid, "from", from, "entries", t.entries, "bytes", t.bytes,
		"dropped_invalidated", t.dropped, "took", time.Since(t.began).Round(time.Millisecond).String()}
	if failure != "" {
		o.log.Warn("supervisor: warm start incomplete", append(attrs, "err", failure)...)
		return
	}
	o.log.Info("supervisor: warm start done", attrs...)
}

// warmEnded ends the transfers p took part in, once p has exited.
func (o *owner) warmEnded(p *proc) {
	for id, t := range o.transfers {
		switch p {
		case t.from:
			o.endWarm(id, fmt.Sprintf("source worker %d exited", p.pid))
		case t.to:
			delete(o.transfers, id)
		}
	}
}

// noteInvalidation remembers keys going out to the workers for as long as
// a transfer may need them.
func (o *owner) noteInvalidation(keys []string) {
	now := time.Now()
	keep := o.invalidated[:0]
	for _, inv := range o.invalidated {
		if now.Sub(inv.at) < o.cfg.Supervisor.Warm.Timeout+2*fanOutTimeout {
			keep = append(keep, inv)
		}
	}
	o.invalidated = append(keep, invalidation{at: now, keys: keys})
}
