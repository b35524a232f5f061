package control

import "time"

// A warm start moves the hot cache entries of a running worker (the
// predecessor of a slot, or a sibling) to a new one before the new one
// serves:
//
//	supervisor → source   export (ID, Export)
//	source → supervisor   entries (ID, Entries) …, then entries (ID, Done, Transfer or Error)
//	supervisor → new      entries (Entries) …, then entries (Done, Transfer or Error)
//
// The new worker's config message has Warm set when a transfer follows.
// The source reads each entry when it sends it, after every invalidation it
// received before the export request; the new worker refuses an entry whose
// key it invalidated since it started, so a write during the transfer wins.
const (
	TypeExport  = "export"
	TypeEntries = "entries"
)

// ExportRequest bounds what a source worker sends.
type ExportRequest struct {
	MaxEntries int   `json:"max_entries"`
	MaxBytes   int64 `json:"max_bytes"`
}

// CacheEntry is one cache entry of a warm start, with what remained of its
// windows when the source read it.
type CacheEntry struct {
	Key  string `json:"key"`
	Body []byte `json:"body"`
	// Fresh is how long the entry stays fresh; zero if it is only stale.
	Fresh time.Duration `json:"fresh_ns,omitempty"`
	// Stale is how long after Fresh it may still be served stale.
	Stale time.Duration `json:"stale_ns,omitempty"`
	// Age is how long ago the source stored it.
	Age time.Duration `json:"age_ns,omitempty"`
}

// Transfer sums up a warm start, on its last entries message.
type Transfer struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// From names the source, such as "slot 1 pid 4242".
	From string `json:"from,omitempty"`
}

// Exporter is the source side of a warm start. Export sends the worker's
// hot cache entries, within req, to send in batches no larger than batch,
// and returns how many entries and body bytes it sent; it stops at send's
// first error.
type Exporter interface {
	Export(req, batch ExportRequest, send func([]CacheEntry) error) (int, int64, error)
}

// Importer is the receiving side of a warm start. Serve calls Import for
// every batch and Warmed once, for the last message, in the order received
// among the other requests; failure is empty when the transfer completed.
type Importer interface {
	Import(entries []CacheEntry)
	Warmed(t Transfer, failure string)
}

// One entries message carries at most warmBatchEntries entries, or stops
// with the entry that brings its bodies past warmBatchBytes, so that no
// control line grows with the size of the cache.
const (
	warmBatchEntries = 512
	warmBatchBytes   = 1 << 20
)

// export answers an export request: batches under m's ID, then the sum.
func (w *Worker) export(h Exporter, m Message) {
	if m.Export == nil {
		w.send(Message{Type: TypeEntries, ID: m.ID, Done: true, Error: "export request without limits"})
		return
	}
	batch := ExportRequest{MaxEntries: warmBatchEntries, MaxBytes: warmBatchBytes}
	n, bytes, err := h.Export(*m.Export, batch, func(entries []CacheEntry) error {
		return w.codec.Send(Message{Type: TypeEntries, ID: m.ID, Entries: entries})
	})
	done := Message{Type: TypeEntries, ID: m.ID, Done: true, Transfer: &Transfer{Entries: n, Bytes: bytes}}
	if err != nil {
		done.Error = err.Error()
	}
	w.send(done)
}

// importBatch hands a relayed batch to h, and the sum when it is the last.
func importBatch(h Importer, m Message) {
	if len(m.Entries) > 0 {
		h.Import(m.Entries)
	}
	if m.Done {
		t := Transfer{}
		if m.Transfer != nil {
			t = *m.Transfer
		}
		h.Warmed(t, m.Error)
	}
}
