package cache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Entry is one cached answer.
type Entry struct {
	// Body is the answer as it is sent to clients. It may be shared with
	// other callers and must not be modified.
	Body []byte
	// ETag is a strong, quoted validator of Body, computed when the entry
	// was stored; equal bodies have equal ETags in every worker.
	ETag string
	// Stored is when the entry was stored, by the cache's clock.
	Stored time.Time
}

// A stored record is a fixed header followed by the ETag and the body:
//
//	fresh-until, stale-until, stored (unix nanoseconds, int64 each),
//	ETag length (uint16), ETag, body
const (
	offFresh   = 0
	offStale   = 8
	offStored  = 16
	offETagLen = 24
	headerLen  = 26
)

var errShortRecord = errors.New("cache: stored record is truncated")

// record is a decoded stored record.
type record struct {
	freshUntil int64
	staleUntil int64
	entry      Entry
}

// etagOf returns the strong ETag of body: its 64-bit xxHash in hex, quoted.
// xxHash rather than a seeded hash so that every worker agrees.
func etagOf(body []byte) string {
	var buf [18]byte
	buf[0], buf[17] = '"', '"'
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], xxhash.Sum64(body))
	hex.Encode(buf[1:17], sum[:])
	return string(buf[:])
}

// encode lays out r as a stored record.
func encode(r record) []byte {
	etag, body := r.entry.ETag, r.entry.Body
	b := make([]byte, headerLen+len(etag)+len(body))
	binary.LittleEndian.PutUint64(b[offFresh:], uint64(r.freshUntil))
	binary.LittleEndian.PutUint64(b[offStale:], uint64(r.staleUntil))
	binary.LittleEndian.PutUint64(b[offStored:], uint64(r.entry.Stored.UnixNano()))
	binary.LittleEndian.PutUint16(b[offETagLen:], uint16(len(etag)))
	copy(b[headerLen:], etag)
	copy(b[headerLen+len(etag):], body)
	return b
}

// decode reads a stored record. The entry's Body and ETag alias b, which
// the caller must not modify afterwards: the store hands out a fresh copy
// on every read, so a hit costs no second copy of the ETag.
func decode(b []byte) (record, error) {
	if len(b) < headerLen {
		return record{}, errShortRecord
	}
	etagEnd := headerLen + int(binary.LittleEndian.Uint16(b[offETagLen:]))
	if len(b) < etagEnd {
		return record{}, errShortRecord
	}
	return record{
		freshUntil: int64(binary.LittleEndian.Uint64(b[offFresh:])),
		staleUntil: int64(binary.LittleEndian.Uint64(b[offStale:])),
		entry: Entry{
			Body:   b[etagEnd:],
			ETag:   etagString(b[headerLen:etagEnd]),
			Stored: time.Unix(0, int64(binary.LittleEndian.Uint64(b[offStored:]))),
		},
	}, nil
}

// etagString views b as a string without copying it; b must never change.
func etagString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
