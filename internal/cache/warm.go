package cache

import (
	"cmp"
	"slices"
	"time"
)

// Warm is one entry handed from a running cache to a new one, so that a
// worker that replaces another starts with its predecessor's answers. The
// windows are what remained of them when the entry was exported.
type Warm struct {
	Key  string
	Body []byte
	// FreshFor is how long the entry stays fresh; zero when it only
	// remains servable as stale.
	FreshFor time.Duration
	// StaleFor is how long after FreshFor it may still be served stale.
	StaleFor time.Duration
	// Age is how long ago the entry was stored.
	Age time.Duration
}

// ExportLimits bound an export: at most Entries entries whose bodies add up
// to at most Bytes.
type ExportLimits struct {
	Entries int
	Bytes   int64
}

// candidate is an entry chosen by Export before its body is read again.
type candidate struct {
	key        string
	fresh      bool
	storedNano int64
	size       int
}

// Export sends the hot entries of the cache to send, in batches of at most
// batch.Entries entries or about batch.Bytes of bodies (a batch ends with
// the entry that reaches it), and returns how many entries and body bytes
// it sent. Hot
// means still servable: fresh entries first, then those only servable as
// stale, each group most recently stored first, until either limit is
// reached. Each entry is read again when its batch is made, so an entry
// invalidated meanwhile is left out. Export stops at the first error of
// send and returns it.
func (c *Cache) Export(lim, batch ExportLimits, send func([]Warm) error) (int, int64, error) {
	batch.Entries = max(batch.Entries, 1)
	var (
		n             int
		sent, inBatch int64
		out           []Warm
	)
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		if err := send(out); err != nil {
			return err
		}
		n, sent = n+len(out), sent+inBatch
		out, inBatch = nil, 0
		return nil
	}
	for _, cand := range c.hottest(lim) {
		w, ok := c.exportOne(cand.key)
		if !ok {
			continue
		}
		out = append(out, w)
		inBatch += int64(len(w.Body))
		if len(out) == batch.Entries || (batch.Bytes > 0 && inBatch >= batch.Bytes) {
			if err := flush(); err != nil {
				return n, sent, err
			}
		}
	}
	err := flush()
	return n, sent, err
}

// hottest picks the entries Export sends, in order, within lim.
func (c *Cache) hottest(lim ExportLimits) []candidate {
	if lim.Entries <= 0 || lim.Bytes <= 0 {
		return nil
	}
	now := c.now().UnixNano()
	var all []candidate
	it := c.store.Iterator()
	for it.SetNext() {
		info, err := it.Value()
		if err != nil {
			continue
		}
		rec, err := decode(info.Value())
		if err != nil || now >= rec.staleUntil {
			continue
		}
		all = append(all, candidate{
			key: info.Key(), fresh: now < rec.freshUntil,
			storedNano: rec.entry.Stored.UnixNano(), size: len(rec.entry.Body),
		})
	}
	slices.SortFunc(all, func(a, b candidate) int {
		if a.fresh != b.fresh {
			if a.fresh {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.storedNano, a.storedNano)
	})
	var (
		out   []candidate
		bytes int64
	)
	for _, cand := range all {
		if len(out) == lim.Entries {
			break
		}
		if bytes+int64(cand.size) > lim.Bytes {
			continue // a smaller entry further on may still fit
		}
		bytes += int64(cand.size)
		out = append(out, cand)
	}
	return out
}

// exportOne reads key's entry as Export sends it, and false when it is gone
// or no longer servable.
func (c *Cache) exportOne(key string) (Warm, bool) {
	rec, ok := c.lookup(key)
	now := c.now().UnixNano()
	if !ok || now >= rec.staleUntil {
		return Warm{}, false
	}
	fresh := max(rec.freshUntil-now, 0)
	return Warm{
		Key:      key,
		Body:     rec.entry.Body,
		FreshFor: time.Duration(fresh),
		StaleFor: time.Duration(rec.staleUntil - now - fresh),
		Age:      time.Duration(max(now-rec.entry.Stored.UnixNano(), 0)),
	}, true
}

// Import stores entries exported by another cache. Begin it before anything
// can invalidate the entries it will receive, that is before the worker
// applies its first invalidation: an entry is stored only when nothing was
// set, deleted or purged in its key's stripe since the import began, and no
// entry is stored under its key. So a write's invalidation that reaches
// this cache during the transfer wins over the older copy the transfer may
// still carry, and an answer this cache filled itself is never replaced.
type Import struct {
	c    *Cache
	gens [stripeCount]uint64
}

// ImportStats count what an Import did with the entries it was given.
type ImportStats struct {
	// Stored entries are now in the cache.
	Stored int
	// Superseded entries were refused because their key's stripe was
	// written or invalidated since the import began, or the key already
	// had an entry.
	Superseded int
	// Refused entries were of an unknown kind, past their windows, or too
	// large for a shard.
	Refused int
}

// BeginImport starts an import into c.
func (c *Cache) BeginImport() *Import {
	im := &Import{c: c}
	for i := range c.stripes {
		im.gens[i] = c.stripes[i].gen.Load()
	}
	return im
}

// Add stores entries, each with the windows it had left, cut to this
// cache's policy for its kind, and adds what it did to st.
func (im *Import) Add(entries []Warm, st *ImportStats) {
	for _, w := range entries {
		switch im.add(w) {
		case importStored:
			st.Stored++
		case importSuperseded:
			st.Superseded++
		default:
			st.Refused++
		}
	}
}

type importOutcome int

const (
	importRefused importOutcome = iota
	importStored
	importSuperseded
)

func (im *Import) add(w Warm) importOutcome {
	c := im.c
	pol, ok := c.cfg.Policy(KindOf(w.Key))
	if !ok {
		return importRefused
	}
	fresh := min(max(w.FreshFor, 0), pol.Fresh)
	stale := min(max(w.StaleFor, 0), pol.Stale)
	if fresh+stale <= 0 {
		return importRefused
	}
	now := c.now()
	rec := record{
		freshUntil: now.Add(fresh).UnixNano(),
		staleUntil: now.Add(fresh + stale).UnixNano(),
		entry:      Entry{Body: w.Body, ETag: etagOf(w.Body), Stored: time.Unix(0, now.Add(-w.Age).UnixNano())},
	}
	enc := encode(rec)
	if len(enc) > c.maxRecord(w.Key) {
		return importRefused // see store1: it would empty a shard
	}

	idx := c.stripeIndex(w.Key)
	s := &c.stripes[idx]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != im.gens[idx] {
		return importSuperseded
	}
	if _, err := c.store.Get(w.Key); err == nil {
		return importSuperseded
	}
	if err := c.store.Set(w.Key, enc); err != nil {
		return importRefused
	}
	return importStored
}
