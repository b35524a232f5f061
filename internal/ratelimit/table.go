// Package ratelimit provides amexd's rate-limit stores behind ulule/limiter's
// limiter.Store: a lock-free table in shared memory that every worker of one
// machine maps (so a client gets one budget, not one per worker), ulule's
// in-memory store, and ulule's Redis store wrapped with a per-call timeout and a
// failure policy for deployments across several machines.
package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/amexd/amexd/internal/shm"
	"github.com/cespare/xxhash/v2"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/common"
)

// Layout of the shared mapping: a 128-byte header, then Slots slots of
// SlotBytes bytes each, then the overflow sketch: overflowRows rows of width
// 8-byte cells. Every field is a 64-bit word accessed with sync/atomic once
// the table is shared.
const (
	tableMagic   = 0x31544c5258454d41 // "AMEXRLT1" read as a little-endian word
	tableVersion = 2
	headerBytes  = 128

	// overflowRows is the number of cells a key without a slot is counted
	// in; minOverflowWidth is the smallest row, so that a few hundred keys
	// without a slot rarely share all their cells with another key.
	overflowRows     = 4
	minOverflowWidth = 1024
	cellBytes        = 8

	// SlotBytes is the shared memory one slot takes: a key word and a state word.
	SlotBytes = 16
	// MaxTableSlots bounds CreateTable (256 MiB of slots).
	MaxTableSlots = 1 << 24
	// MaxTableLimit is the largest rate limit the table can count to: the count
	// saturates one above it, so Reached stays exact up to this limit.
	MaxTableLimit = countMask - 2

	// probeLength bounds open addressing: a key lives in one of the probeLength
	// slots that follow its home slot, which keeps every operation O(1).
	probeLength = 32

	countBits = 24
	countMask = 1<<countBits - 1
	// reservedCount in a state word marks a slot being handed to another key;
	// the expiry field then holds the time of the reservation.
	reservedCount = countMask
	maxCount      = countMask - 1

	// maxPeriod keeps window expiries inside the 40-bit expiry field.
	maxPeriod = 30 * 24 * time.Hour
	maxNowMs  = 1<<(64-countBits) - 1 - int64(maxPeriod/time.Millisecond)

	// staleReservationMs is how long a reservation may stay unfinished before
	// another process takes the slot over: a worker killed between the three
	// steps of a reclaim must not lose the slot for good.
	staleReservationMs = 1000

	// maxAttempts bounds the retries of one operation that keeps losing races
	// for slots; each lost race is another caller's progress.
	maxAttempts = 64

	// maxWaits and pendingSleep bound how long a new key waits for a reclaim
	// in its probe range to finish: a quarter of the waits yield, the rest
	// sleep, about 5 ms in all.
	maxWaits     = 64
	pendingSleep = 100 * time.Microsecond
)

// header is the table's first 128 bytes.
type header struct {
	magic   uint64
	version uint64
	slots   uint64
	probe   uint64
	epochMs uint64
	seed    uint64
	// full counts the hits counted in the overflow sketch.
	full uint64
	// width is the overflow sketch's row length.
	width uint64
	// lastLogMs (table time plus one, 0 for never) and loggedFull (full then) let the
	// processes sharing the table log its pressure once per interval in all.
	lastLogMs  uint64
	loggedFull uint64
	_          [6]uint64
}

// slot is one entry of the table.
//
// key is the key's 64-bit hash, 0 while the slot has never been used; it is
// set from 0 by CAS, and after that changes only while the state word holds a
// reservation, so it never returns to 0.
//
// state packs the window's expiry (milliseconds since the table's epoch, high 40
// bits) and the count (low 24 bits). Every write to a slot's state makes the word
// strictly larger, for the slot's whole life across all keys and processes: a
// new window expires after the old one did, a count only grows, a reservation
// (count field all ones, expiry field = now) is written only over an expired
// state, and the state that ends a reclaim expires after the reservation time.
// Because a state value never recurs, a CAS on the state word cannot succeed
// against a value read before a reclaim (no ABA), and that is what makes the
// reclaim protocol safe:
//
//  1. CAS state: expired → reservation   (only one process wins the slot)
//  2. CAS key:   old key → new key       (nobody else changes the key now)
//  3. CAS state: reservation → new key's first window
//
// A writer for key h reads the state, then checks key == h, then CASes the
// state. If its CAS succeeds the state did not change since the read, so no
// reclaim ran in between, and the key was h throughout.
type slot struct {
	key   uint64
	state uint64
}

// Table is a fixed-size, lock-free hash table of fixed-window counters in a
// shared memory mapping; it implements limiter.Store. Any number of goroutines
// and processes may use the same mapping at once: all updates are atomic
// compare-and-swap loops on 64-bit words, so a process that dies mid-update
// leaves nothing locked.
//
// Keys are stored as 64-bit hashes (xxhash with a random seed kept in the
// header, so clients cannot aim for collisions). Two keys with the same hash
// share one counter; with k live keys the chance that any two collide is about
// k²/2⁶⁵, under 10⁻¹⁰ for a million clients.
//
// A new key takes a free slot in its probe range, or else one whose window
// has expired. When there is neither, the table is full for it, and a full
// table never means unlimited: the key is counted in the overflow sketch, a
// count-min sketch of fixed windows shared by every key without a slot. Each
// such hit adds to one cell in each of overflowRows rows, picked by the key's
// hash, and the key's count is the smallest of its cells. A cell counts at
// least the key's own hits in the cell's window, so the key is limited at its
// rate or sooner: keys sharing all their cells share a budget, which is the
// price of a table too small for its clients. Full counts these hits, and the
// table logs the pressure (at most once per log interval for all processes
// together) so that the operator raises ratelimit.table_slots.
//
// A key's first hit waits (at most about 5 ms) while a reclaim in its probe
// range is unfinished, since that reclaim may be placing the same key. Two rare
// races are tolerated rather than prevented, because preventing them would
// need a lock: a reclaimer descheduled for longer than that wait, and two first
// hits of one key that read the clock on either side of another key's expiry.
// Either may give the key a second slot; every later lookup uses the first
// one, so only the hits of that instant are counted apart.
type Table struct {
	mem   []byte
	hdr   *header
	slots []slot
	cells []uint64
	width int
	probe int
	epoch int64
	seed  uint64

	logger      *slog.Logger
	logInterval time.Duration

	// now is time.Now outside tests; all processes use the wall clock so that
	// their readings agree.
	now func() time.Time

	closeOnce sync.Once
	closeErr  error
}

// TableStats describes a table's occupancy.
type TableStats struct {
	// Slots is the table's capacity.
	Slots int
	// Used counts slots that hold a window which has not expired.
	Used int
	// Full counts requests, from every process, that found no slot since the
	// table was created and were counted in the overflow sketch; it must not
	// be summed across workers.
	Full uint64
}

// CreateTable creates a table of the given number of slots (SlotBytes each,
// plus an overflow sketch; TableBytes says how much in all) in a new sealed
// memfd (see shm.Create) and maps it. WithLogger and WithLogInterval set
// where and how often it reports a full table. The caller owns both results:
// Close the table and the file when done; the counters live as long as any
// process holds the file or a mapping.
func CreateTable(slots int, opts ...Option) (*Table, *os.File, error) {
	if slots < 1 || slots > MaxTableSlots {
		return nil, nil, fmt.Errorf("ratelimit: create table: %d slots is out of range [1, %d]", slots, MaxTableSlots)
	}
	width := overflowWidth(uint64(slots))
	f, mem, err := shm.Create("amexd-ratelimit", tableBytes(uint64(slots), width))
	if err != nil {
		return nil, nil, fmt.Errorf("ratelimit: create table: %w", err)
	}
	if err := initHeader(mem, uint64(slots), width); err != nil {
		shm.Unmap(mem)
		f.Close()
		return nil, nil, fmt.Errorf("ratelimit: create table: %w", err)
	}
	return newTable(mem, buildOptions(opts)), f, nil
}

// TableBytes is the size of a table of the given number of slots.
func TableBytes(slots int) int64 {
	return tableBytes(uint64(slots), overflowWidth(uint64(slots)))
}

func tableBytes(slots, width uint64) int64 {
	return int64(headerBytes + slots*SlotBytes + overflowRows*width*cellBytes)
}

// overflowWidth sizes the sketch's rows: an eighth of the slots in each.
func overflowWidth(slots uint64) uint64 { return max(minOverflowWidth, slots/8) }

func initHeader(mem []byte, slots, width uint64) error {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return fmt.Errorf("hash seed: %w", err)
	}
	hdr := (*header)(unsafe.Pointer(&mem[0]))
	hdr.version = tableVersion
	hdr.slots = slots
	hdr.probe = min(probeLength, slots)
	hdr.width = width
	hdr.epochMs = uint64(time.Now().UnixMilli())
	hdr.seed = binary.LittleEndian.Uint64(seed[:])
	atomic.StoreUint64(&hdr.magic, tableMagic)
	return nil
}

// OpenTable maps a table created by CreateTable, typically inherited by a
// worker as a file descriptor, and checks its header. The caller keeps
// ownership of f; the mapping stays valid after f is closed. The options are
// CreateTable's.
func OpenTable(f *os.File, opts ...Option) (*Table, error) {
	if f == nil {
		return nil, errors.New("ratelimit: open table: no file")
	}
	mem, err := shm.Map(f, headerBytes+SlotBytes, TableBytes(MaxTableSlots))
	if err != nil {
		return nil, fmt.Errorf("ratelimit: open table %s: %w", f.Name(), err)
	}
	if err := checkHeader(mem); err != nil {
		shm.Unmap(mem)
		return nil, fmt.Errorf("ratelimit: open table %s: %w", f.Name(), err)
	}
	return newTable(mem, buildOptions(opts)), nil
}

func checkHeader(mem []byte) error {
	hdr := (*header)(unsafe.Pointer(&mem[0]))
	if m := atomic.LoadUint64(&hdr.magic); m != tableMagic {
		return fmt.Errorf("bad magic %#x, not a rate-limit table", m)
	}
	if hdr.version != tableVersion {
		return fmt.Errorf("table version %d, this build reads version %d", hdr.version, tableVersion)
	}
	if hdr.slots == 0 || hdr.slots > MaxTableSlots || hdr.width != overflowWidth(hdr.slots) || tableBytes(hdr.slots, hdr.width) != int64(len(mem)) {
		return fmt.Errorf("header says %d slots and overflow width %d but the file is %d bytes", hdr.slots, hdr.width, len(mem))
	}
	if hdr.probe == 0 || hdr.probe > hdr.slots {
		return fmt.Errorf("header says probe length %d for %d slots", hdr.probe, hdr.slots)
	}
	return nil
}

func newTable(mem []byte, o options) *Table {
	hdr := (*header)(unsafe.Pointer(&mem[0]))
	cells := headerBytes + int(hdr.slots)*SlotBytes
	return &Table{
		mem:         mem,
		hdr:         hdr,
		slots:       unsafe.Slice((*slot)(unsafe.Pointer(&mem[headerBytes])), int(hdr.slots)),
		cells:       unsafe.Slice((*uint64)(unsafe.Pointer(&mem[cells])), overflowRows*int(hdr.width)),
		width:       int(hdr.width),
		probe:       int(hdr.probe),
		epoch:       int64(hdr.epochMs),
		seed:        hdr.seed,
		logger:      o.logger,
		logInterval: o.logInterval,
		now:         time.Now,
	}
}

// Close unmaps the table. The table must not be used afterwards; calling Close
// again returns the first result.
func (t *Table) Close() error {
	t.closeOnce.Do(func() {
		if err := shm.Unmap(t.mem); err != nil {
			t.closeErr = fmt.Errorf("ratelimit: close table: %w", err)
		}
		t.mem, t.slots, t.cells, t.hdr = nil, nil, nil, nil
	})
	return t.closeErr
}

// Full returns how many requests, from every process, found no slot and were
// counted in the overflow sketch.
func (t *Table) Full() uint64 {
	return atomic.LoadUint64(&t.hdr.full)
}

// Stats counts the table's live slots; it reads every slot, so call it for
// metrics, not per request.
func (t *Table) Stats() TableStats {
	now := t.nowMs()
	used := 0
	for i := range t.slots {
		sl := &t.slots[i]
		if atomic.LoadUint64(&sl.key) != 0 && live(atomic.LoadUint64(&sl.state), now) {
			used++
		}
	}
	return TableStats{Slots: len(t.slots), Used: used, Full: t.Full()}
}

// Get increments the key's count by one; see Increment.
func (t *Table) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return t.Increment(ctx, key, 1, rate)
}

// Increment adds count to the key's window and returns the state after it. The
// first hit of a key, or the first after its window expired, starts a window of
// rate.Period; a key the table has no slot for is counted in the overflow
// sketch. It fails only for arguments the table cannot represent: a negative
// count, a period outside (0, 30 days] or a limit above MaxTableLimit.
func (t *Table) Increment(_ context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	if err := checkArgs(count, rate); err != nil {
		return limiter.Context{}, err
	}
	h := t.hash(key)
	period := rate.Period.Milliseconds()
	n := uint64(min(count, maxCount))
	waits := 0
	for attempt := 0; attempt < maxAttempts; {
		now := t.nowMs()
		found, free, pending := t.scan(h, now)
		if found >= 0 {
			if s, ok := t.add(found, h, n, period, now); ok {
				return t.context(rate, s), nil
			}
			attempt++
			continue
		}
		// A reclaim in progress may be placing this very key; taking another
		// slot now would give the key two counters. A reclaim is three atomic
		// operations, so a short wait settles it unless its process was
		// descheduled in between; past the wait, the key takes another slot.
		if pending && waits < maxWaits {
			waits++
			if waits <= maxWaits/4 {
				runtime.Gosched()
			} else {
				time.Sleep(pendingSleep)
			}
			continue
		}
		if free < 0 {
			break
		}
		if s, ok := t.claim(free, h, n, period, now); ok {
			return t.context(rate, s), nil
		}
		attempt++
	}
	return t.overflow(h, n, period, rate), nil
}

// Peek returns the key's state without changing it; a key without a live
// window has count 0 and would reset one period from now.
func (t *Table) Peek(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	if err := checkArgs(0, rate); err != nil {
		return limiter.Context{}, err
	}
	now := t.nowMs()
	h := t.hash(key)
	found, free, _ := t.scan(h, now)
	if found >= 0 {
		sl := &t.slots[found]
		// The key check after the state read makes sure the state is h's.
		if s := atomic.LoadUint64(&sl.state); atomic.LoadUint64(&sl.key) == h && live(s, now) {
			return t.context(rate, s), nil
		}
	}
	if found < 0 && free < 0 {
		return t.context(rate, t.sketch(h, 0, rate.Period.Milliseconds(), now, false)), nil
	}
	return t.context(rate, pack(now+rate.Period.Milliseconds(), 0)), nil
}

// Reset sets the key's count to zero. Unlike ulule's memory store, which forgets
// the key, a live window restarts at the time of the reset, so the next
// Increment counts in a window that ends one period after the reset.
func (t *Table) Reset(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	if err := checkArgs(0, rate); err != nil {
		return limiter.Context{}, err
	}
	h := t.hash(key)
	period := rate.Period.Milliseconds()
	now := t.nowMs()
	if found, _, _ := t.scan(h, now); found >= 0 {
		sl := &t.slots[found]
		for {
			s := atomic.LoadUint64(&sl.state)
			if atomic.LoadUint64(&sl.key) != h || !live(s, now) {
				break
			}
			if countOf(s) == 0 {
				return t.context(rate, s), nil
			}
			next := pack(max(now+period, expiryOf(s)+1), 0)
			if atomic.CompareAndSwapUint64(&sl.state, s, next) {
				return t.context(rate, next), nil
			}
		}
	}
	return t.context(rate, pack(now+period, 0)), nil
}

// scan walks h's probe range. It returns the first slot holding h, or -1 and
// the first slot a new key may take (-1 if none). pending reports a reclaim in
// progress in the range, whose new key may not be visible yet. A slot is taken
// only when every slot before it in the range is in use, and a key never
// returns to empty, so no key lives past an empty slot: the scan stops there.
//
// Each slot's state is read before its key. A reclaim writes the key before
// the new state, so a state of the new key is never seen with the old key; the
// other torn reads (a new key with the old, expired state) send the caller to
// add or claim, whose CAS on the state fails and makes it look again.
func (t *Table) scan(h uint64, now int64) (found, free int, pending bool) {
	free = -1
	n := len(t.slots)
	i := t.home(h)
	for range t.probe {
		sl := &t.slots[i]
		s := atomic.LoadUint64(&sl.state)
		k := atomic.LoadUint64(&sl.key)
		switch {
		case k == 0:
			if free < 0 {
				free = i
			}
			return -1, free, pending
		case reserved(s) && !reclaimable(s, now):
			pending = true
		case k == h && !reserved(s):
			return i, free, pending
		case free < 0 && reclaimable(s, now):
			free = i
		}
		if i++; i == n {
			i = 0
		}
	}
	return -1, free, pending
}

// add counts n more hits for h in slot i. It reports false when the slot no
// longer belongs to h, so the caller looks again.
func (t *Table) add(i int, h, n uint64, period, now int64) (uint64, bool) {
	sl := &t.slots[i]
	for {
		s := atomic.LoadUint64(&sl.state)
		if atomic.LoadUint64(&sl.key) != h || reserved(s) {
			return 0, false
		}
		var next uint64
		if live(s, now) {
			next = pack(expiryOf(s), min(countOf(s)+n, maxCount))
		} else {
			next = pack(now+period, n)
		}
		if next == s || atomic.CompareAndSwapUint64(&sl.state, s, next) {
			return next, true
		}
	}
}

// claim gives the free slot i to h, starting h's window with n hits, following
// the protocol described on slot. It reports false when another caller got
// there first.
func (t *Table) claim(i int, h, n uint64, period, now int64) (uint64, bool) {
	sl := &t.slots[i]
	k := atomic.LoadUint64(&sl.key)
	if k == 0 {
		if !atomic.CompareAndSwapUint64(&sl.key, 0, h) && atomic.LoadUint64(&sl.key) != h {
			return 0, false
		}
		return t.add(i, h, n, period, now)
	}
	s := atomic.LoadUint64(&sl.state)
	if k == h && !reserved(s) {
		return t.add(i, h, n, period, now)
	}
	if !reclaimable(s, now) {
		return 0, false
	}
	res := pack(max(now, expiryOf(s)+1), reservedCount)
	if !atomic.CompareAndSwapUint64(&sl.state, s, res) {
		return 0, false
	}
	// A failed key CAS means a reservation we took over from a stalled process
	// raced with that process; the slot stays reserved until it is stale.
	if !atomic.CompareAndSwapUint64(&sl.key, k, h) {
		return 0, false
	}
	next := pack(max(now+period, expiryOf(res)+1), n)
	if !atomic.CompareAndSwapUint64(&sl.state, res, next) {
		return 0, false
	}
	return next, true
}

// overflow counts n hits of h, which has no slot, in the overflow sketch.
func (t *Table) overflow(h, n uint64, period int64, rate limiter.Rate) limiter.Context {
	now := t.nowMs()
	total := atomic.AddUint64(&t.hdr.full, 1)
	s := t.sketch(h, n, period, now, true)
	t.reportPressure(total, now)
	return t.context(rate, s)
}

// sketch returns the state of h's smallest cell in the overflow
// sketch, after adding n hits to each of its cells when add is set. A cell
// whose window has expired starts a new one of period.
func (t *Table) sketch(h, n uint64, period, now int64, add bool) uint64 {
	var least uint64
	for row := range overflowRows {
		c := &t.cells[row*t.width+t.cell(h, row)]
		var s uint64
		for {
			old := atomic.LoadUint64(c)
			switch {
			case live(old, now):
				s = pack(expiryOf(old), min(countOf(old)+n, maxCount))
			default:
				s = pack(now+period, n)
			}
			if !add || s == old || atomic.CompareAndSwapUint64(c, old, s) {
				break
			}
		}
		if row == 0 || countOf(s) < countOf(least) {
			least = s
		}
	}
	return least
}

// cell picks h's cell in row: a splitmix64 finaliser of h and the row, so
// that keys meeting in one row rarely meet in the next.
func (t *Table) cell(h uint64, row int) int {
	x := h + uint64(row+1)*0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	hi, _ := bits.Mul64(x, uint64(t.width))
	return int(hi)
}

// reportPressure logs that the table is full, unless any process sharing it
// did within the log interval. total is Full after this hit.
func (t *Table) reportPressure(total uint64, now int64) {
	// The stamp is the time plus one, so that 0 means never.
	stamp := uint64(now) + 1
	last := atomic.LoadUint64(&t.hdr.lastLogMs)
	if last != 0 && int64(stamp-last) < t.logInterval.Milliseconds() {
		return
	}
	if !atomic.CompareAndSwapUint64(&t.hdr.lastLogMs, last, stamp) {
		return
	}
	before := atomic.SwapUint64(&t.hdr.loggedFull, total)
	t.logger.Warn("ratelimit: shared table full; clients without a slot are limited by the overflow sketch, raise ratelimit.table_slots",
		"slots", len(t.slots), "overflowed", total, "since_last_line", total-before)
}

func (t *Table) home(h uint64) int {
	// Multiply-shift maps the hash onto [0, slots) without a power-of-two size.
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi)
}

func (t *Table) hash(key string) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(t.seed)
	d.WriteString(key)
	if h := d.Sum64(); h != 0 {
		return h
	}
	return 1
}

func (t *Table) nowMs() int64 {
	return min(max(t.now().UnixMilli()-t.epoch, 0), maxNowMs)
}

func (t *Table) context(rate limiter.Rate, s uint64) limiter.Context {
	expiry := time.UnixMilli(t.epoch + expiryOf(s))
	return common.GetContextFromState(t.now(), rate, expiry, int64(countOf(s)))
}

func checkArgs(count int64, rate limiter.Rate) error {
	switch {
	case count < 0:
		return fmt.Errorf("ratelimit: negative count %d", count)
	case rate.Period <= 0 || rate.Period > maxPeriod:
		return fmt.Errorf("ratelimit: period %v is out of range (0, %v]", rate.Period, maxPeriod)
	case rate.Limit > MaxTableLimit:
		return fmt.Errorf("ratelimit: limit %d is above the shared table's maximum %d", rate.Limit, MaxTableLimit)
	}
	return nil
}

func pack(expiry int64, count uint64) uint64 { return uint64(expiry)<<countBits | count }
func expiryOf(s uint64) int64                { return int64(s >> countBits) }
func countOf(s uint64) uint64                { return s & countMask }
func reserved(s uint64) bool                 { return countOf(s) == reservedCount }
func live(s uint64, now int64) bool          { return !reserved(s) && expiryOf(s) > now }

// reclaimable reports whether another key may take a slot: its window has
// expired, or its reservation was abandoned by a process that died mid-reclaim.
func reclaimable(s uint64, now int64) bool {
	if reserved(s) {
		return now-expiryOf(s) >= staleReservationMs
	}
	return expiryOf(s) <= now
}
