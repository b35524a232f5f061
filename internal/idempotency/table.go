package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/amexd/amexd/internal/shm"
)

// Layout of the shared mapping: a 64-byte header, the key entries in
// buckets of bucketSize, then the answers' ring.
const (
	tableMagic   = 0x31504d4458454d41 // "AMEXDMP1" read as a little-endian word
	tableVersion = 1
	headerBytes  = 64

	// EntryBytes is the shared memory one key takes.
	EntryBytes = 128
	bucketSize = 8
	maxRefLen  = 31
)

type tableHeader struct {
	magic    uint64
	version  uint64
	buckets  uint64
	ringSize uint64
	// head is the ring's log position: every answer ever written took the
	// bytes [pos, pos+len) of an endless log, stored at pos mod ringSize.
	head uint64
	// evicted counts keys dropped before their TTL ended.
	evicted uint64
	_       [2]uint64
}

// entry is one key. A writer that dies half way leaves nothing wrong
// behind: an entry's state is written last, after the fields it governs,
// and set to empty first when the entry changes key.
type entry struct {
	key       [16]byte
	fp        Fingerprint
	state     uint32
	status    uint32
	expiresMs int64
	leaseMs   int64
	token     uint64
	bodyPos   uint64
	bodyLen   uint32
	bodySum   uint32
	refLen    uint8
	ref       [maxRefLen]byte
}

var _ [EntryBytes - unsafe.Sizeof(entry{})]struct{} // entry must be EntryBytes

// Table is a Store in a shared memory mapping that the supervisor creates
// (NewTable) and every worker maps (OpenTable), so that a retry reaching
// another worker finds its key. Operations take a lock on the mapping: an
// open-file-description lock across processes, which the kernel releases
// when its holder dies, and a mutex within one. They cost a few
// microseconds and are made only for writes that carry a key.
//
// Its memory is bounded: MaxKeys entries and a ring of MaxBytes for the
// answers. When a key's bucket is full, the entry that expires first is
// dropped; when the ring wraps, the oldest answers are overwritten. A key
// whose answer was overwritten is not lost: its retry runs again under the
// same reference, which the upstream replays.
type Table struct {
	mem     []byte
	hdr     *tableHeader
	entries []entry
	ring    []byte
	f       *os.File // this table's own open file description, for the lock
	ttl     time.Duration
	lease   time.Duration

	mu  sync.Mutex
	now func() time.Time

	closeOnce sync.Once
	closeErr  error
}

// NewTable creates a table for cfg in a new memfd and maps it. The file has
// close-on-exec set: pass it to a child explicitly (exec.Cmd.ExtraFiles).
// The caller owns both results and closes them when done.
func NewTable(cfg Config) (*Table, *os.File, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("idempotency: new table: %w", err)
	}
	buckets := uint64(cfg.MaxKeys / bucketSize)
	size := int64(headerBytes) + int64(buckets)*bucketSize*EntryBytes + cfg.MaxBytes
	f, mem, err := shm.Create("amexd-idempotency", size)
	if err != nil {
		return nil, nil, fmt.Errorf("idempotency: new table: %w", err)
	}
	hdr := (*tableHeader)(unsafe.Pointer(&mem[0]))
	hdr.version, hdr.buckets, hdr.ringSize = tableVersion, buckets, uint64(cfg.MaxBytes)
	hdr.magic = tableMagic
	_ = shm.Unmap(mem)
	t, err := OpenTable(f, cfg)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return t, f, nil
}

// OpenTable maps a table made by NewTable, typically inherited by a worker
// as a file descriptor, with cfg's TTL and lease; the sizes are the
// table's own. The caller keeps f; the table holds its own descriptor.
func OpenTable(f *os.File, cfg Config) (*Table, error) {
	if f == nil {
		return nil, errors.New("idempotency: open table: no file")
	}
	// A description of its own, so that this table's lock excludes every
	// other table on the file, in this process too.
	own, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("idempotency: open table: %w", err)
	}
	t, err := mapTable(own, cfg)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("idempotency: open table %s: %w", f.Name(), err)
	}
	return t, nil
}

func mapTable(f *os.File, cfg Config) (*Table, error) {
	mem, err := shm.Map(f, headerBytes, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	size := int64(len(mem))
	hdr := (*tableHeader)(unsafe.Pointer(&mem[0]))
	entriesEnd := uint64(headerBytes) + hdr.buckets*bucketSize*EntryBytes
	switch {
	case hdr.magic != tableMagic:
		err = fmt.Errorf("bad magic %#x, not an idempotency table", hdr.magic)
	case hdr.version != tableVersion:
		err = fmt.Errorf("table version %d, this build reads version %d", hdr.version, tableVersion)
	case hdr.buckets == 0 || hdr.ringSize == 0 || entriesEnd+hdr.ringSize != uint64(size):
		err = fmt.Errorf("header says %d buckets and %d ring bytes but the file is %d bytes", hdr.buckets, hdr.ringSize, size)
	}
	if err != nil {
		_ = shm.Unmap(mem)
		return nil, err
	}
	return &Table{
		mem:     mem,
		hdr:     hdr,
		entries: unsafe.Slice((*entry)(unsafe.Pointer(&mem[headerBytes])), int(hdr.buckets*bucketSize)),
		ring:    mem[entriesEnd:],
		f:       f,
		ttl:     cfg.TTL,
		lease:   cfg.Lease,
		now:     time.Now,
	}, nil
}

// Close unmaps the table and closes its descriptor; calling it again
// returns the first result.
func (t *Table) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.closeErr = errors.Join(shm.Unmap(t.mem), t.f.Close())
		t.mem, t.entries, t.ring, t.hdr = nil, nil, nil, nil
	})
	return t.closeErr
}

// TableStats describes a table's occupancy.
type TableStats struct {
	Keys, MaxKeys int
	// Evicted counts keys, from every process, dropped before their TTL
	// ended for want of room since the table was created.
	Evicted uint64
}

// Stats counts the live keys; it reads every entry, so call it for
// metrics, not per request.
func (t *Table) Stats(context.Context) (TableStats, error) {
	unlock, err := t.lock()
	if err != nil {
		return TableStats{}, err
	}
	defer unlock()
	now := t.nowMs()
	st := TableStats{MaxKeys: len(t.entries), Evicted: t.hdr.evicted}
	for i := range t.entries {
		if live(&t.entries[i], now) {
			st.Keys++
		}
	}
	return st, nil
}

// lock takes the table for the calling goroutine, across processes.
func (t *Table) lock() (func(), error) {
	t.mu.Lock()
	if t.mem == nil {
		t.mu.Unlock()
		return nil, errors.New("idempotency: table closed")
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: 0, Len: 1}
	for {
		err := unix.FcntlFlock(t.f.Fd(), unix.F_OFD_SETLKW, &lk)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			t.mu.Unlock()
			return nil, fmt.Errorf("idempotency: lock table: %w", err)
		}
	}
	return func() {
		lk.Type = unix.F_UNLCK
		_ = unix.FcntlFlock(t.f.Fd(), unix.F_OFD_SETLK, &lk)
		t.mu.Unlock()
	}, nil
}

// Begin implements Store.
func (t *Table) Begin(_ context.Context, key string, fp Fingerprint, ref string) (Claim, error) {
	if len(ref) > maxRefLen {
		return Claim{}, fmt.Errorf("idempotency: reference %q is longer than %d bytes", ref, maxRefLen)
	}
	unlock, err := t.lock()
	if err != nil {
		return Claim{}, err
	}
	defer unlock()
	now := t.nowMs()
	kh := keyHash(key)
	e := t.find(kh, now)
	var rec *record
	if e != nil {
		rec = &record{FP: e.fp, State: e.state, LeaseMs: e.leaseMs, Ref: string(e.ref[:e.refLen])}
	}
	outcome, use := decide(rec, fp, ref, now)
	if outcome == Replay {
		if body, ok := t.body(e); ok {
			return Claim{Outcome: Replay, Ref: use, Answer: Answer{Status: int(e.status), Body: body}}, nil
		}
		outcome = Started // the answer was overwritten: run again, replayed upstream
	}
	if outcome != Started {
		return Claim{Outcome: outcome}, nil
	}
	if e == nil {
		if e = t.victim(kh, now); e == nil {
			return Claim{}, ErrFull
		}
		e.state = stateEmpty
		e.key, e.fp = kh, fp
	}
	c := Claim{Outcome: Started, Ref: use, token: newToken()}
	e.token, e.leaseMs, e.bodyLen = c.token, now+t.lease.Milliseconds(), 0
	e.expiresMs = now + t.ttl.Milliseconds()
	e.refLen = uint8(copy(e.ref[:], use))
	e.state = stateInFlight
	return c, nil
}

// Complete implements Store. An answer too large for the ring is not kept:
// the key then behaves as after Abandon with retry.
func (t *Table) Complete(_ context.Context, key string, c Claim, a Answer) error {
	unlock, err := t.lock()
	if err != nil {
		return err
	}
	defer unlock()
	now := t.nowMs()
	e := t.owned(keyHash(key), c, now)
	if e == nil {
		return ErrNotOwner
	}
	if uint64(len(a.Body)) > t.hdr.ringSize/4 {
		e.leaseMs, e.state = 0, stateFailed
		return nil
	}
	e.bodyPos, e.bodyLen, e.bodySum = t.append(a.Body), uint32(len(a.Body)), crc32.ChecksumIEEE(a.Body)
	e.status = uint32(a.Status)
	e.expiresMs = now + t.ttl.Milliseconds()
	e.state = stateDone
	return nil
}

// Abandon implements Store.
func (t *Table) Abandon(_ context.Context, key string, c Claim, retry bool) error {
	unlock, err := t.lock()
	if err != nil {
		return err
	}
	defer unlock()
	e := t.owned(keyHash(key), c, t.nowMs())
	if e == nil {
		return ErrNotOwner
	}
	if retry {
		e.leaseMs, e.state = 0, stateFailed
	} else {
		e.state = stateEmpty
	}
	return nil
}

// find returns kh's live entry, or nil.
func (t *Table) find(kh [16]byte, now int64) *entry {
	for _, e := range t.bucket(kh) {
		if e.key == kh && live(e, now) {
			return e
		}
	}
	return nil
}

// owned returns kh's entry if the claim still owns it.
func (t *Table) owned(kh [16]byte, c Claim, now int64) *entry {
	e := t.find(kh, now)
	if e == nil || e.state != stateInFlight || e.token != c.token || c.token == 0 {
		return nil
	}
	return e
}

// victim returns the entry of kh's bucket a new key may take: a free one,
// else the one that expires first among those not in flight, which is
// then counted as evicted; nil when every entry is in flight.
func (t *Table) victim(kh [16]byte, now int64) *entry {
	var oldest *entry
	for _, e := range t.bucket(kh) {
		if !live(e, now) {
			return e
		}
		if e.state == stateInFlight && e.leaseMs > now {
			continue
		}
		if oldest == nil || e.expiresMs < oldest.expiresMs {
			oldest = e
		}
	}
	if oldest != nil {
		t.hdr.evicted++
	}
	return oldest
}

func (t *Table) bucket(kh [16]byte) []*entry {
	b := binary.LittleEndian.Uint64(kh[:8]) % t.hdr.buckets
	out := make([]*entry, bucketSize)
	for i := range out {
		out[i] = &t.entries[b*bucketSize+uint64(i)]
	}
	return out
}

// append writes body into the ring and returns its log position. A body
// never straddles the ring's end: it starts again at the beginning.
func (t *Table) append(body []byte) uint64 {
	size := t.hdr.ringSize
	pos := t.hdr.head
	if off := pos % size; off+uint64(len(body)) > size {
		pos += size - off
	}
	copy(t.ring[pos%size:], body)
	t.hdr.head = pos + uint64(len(body))
	return pos
}

// body returns e's answer if the ring still holds it intact.
func (t *Table) body(e *entry) ([]byte, bool) {
	n := uint64(e.bodyLen)
	if t.hdr.head > e.bodyPos+t.hdr.ringSize || e.bodyPos+n > t.hdr.head {
		return nil, false
	}
	off := e.bodyPos % t.hdr.ringSize
	body := append([]byte(nil), t.ring[off:off+n]...)
	return body, crc32.ChecksumIEEE(body) == e.bodySum
}

func (t *Table) nowMs() int64 { return t.now().UnixMilli() }

func live(e *entry, now int64) bool { return e.state != stateEmpty && e.expiresMs > now }

func keyHash(key string) [16]byte {
	sum := sha256.Sum256([]byte(key))
	var kh [16]byte
	copy(kh[:], sum[:16])
	return kh
}

var _ Store = (*Table)(nil)
