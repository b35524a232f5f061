// Package idempotency keeps the outcome of writes made under an
// Idempotency-Key (IETF draft-ietf-httpapi-idempotency-key-header), so that
// a client's retry gets the first answer instead of a second write, whichever
// worker or machine it reaches. A Store is either a table in shared memory
// that every worker of one machine maps (NewTable, OpenTable) or Redis, for
// several machines (NewRedis). It knows nothing of HTTP: the worker
// fingerprints requests and stores answers as bytes.
package idempotency

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Fingerprint identifies a request's content: a retry must carry the same.
type Fingerprint [32]byte

// FingerprintOf hashes the parts of a request that must not change between
// retries (method, route and body, say), each length-prefixed so that no
// two different lists hash alike.
func FingerprintOf(parts ...[]byte) Fingerprint {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var fp Fingerprint
	h.Sum(fp[:0])
	return fp
}

// Answer is a stored final answer.
type Answer struct {
	Status int
	Body   []byte
}

// Outcome is what Begin found for a key.
type Outcome int

const (
	// Started: the caller owns the key now and must Complete or Abandon it.
	Started Outcome = iota + 1
	// Replay: the key has an answer, in Claim.Answer.
	Replay
	// InFlight: another request with this key is being served now.
	InFlight
	// Mismatch: the key was used for a request with other content.
	Mismatch
)

func (o Outcome) String() string {
	switch o {
	case Started:
		return "started"
	case Replay:
		return "replay"
	case InFlight:
		return "in flight"
	case Mismatch:
		return "mismatch"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Claim is Begin's result.
type Claim struct {
	Outcome Outcome
	// Ref is the reference the write must use (for an event, its ID):
	// the one Begin was given for a new key, or the one of an earlier
	// attempt that did not finish, so that the upstream replays that
	// attempt instead of writing twice. Set for Started and Replay.
	Ref string
	// Answer is the stored answer, for Replay.
	Answer Answer
	// token proves ownership to Complete and Abandon; raw is the record
	// as written, for the Redis store's compare-and-set.
	token uint64
	raw   []byte
}

// ErrNotOwner is returned by Complete and Abandon when the claim is no
// longer the key's owner: its lease ran out and another request took over.
var ErrNotOwner = errors.New("idempotency: the claim no longer owns the key")

// ErrFull is returned by Begin when the table has no room for a new key.
var ErrFull = errors.New("idempotency: no room for a new key")

// Store keeps keys and their answers. Keys are opaque strings; a caller that
// serves several clients scopes them (prefixes the client's identity).
type Store interface {
	// Begin looks key up for a request with fingerprint fp. A key not seen
	// within the TTL, or whose earlier attempt ended without an answer, is
	// claimed for the caller (Started) with ref as its reference, or the
	// earlier attempt's.
	Begin(ctx context.Context, key string, fp Fingerprint, ref string) (Claim, error)
	// Complete stores the claim's answer; later Begins with the same
	// fingerprint replay it until the TTL ends.
	Complete(ctx context.Context, key string, c Claim, a Answer) error
	// Abandon ends the claim without an answer. With retry, the key stays
	// bound to its fingerprint and reference, and the next Begin runs the
	// request again under the same reference (the upstream may have seen
	// it); without, the key is forgotten (nothing was written).
	Abandon(ctx context.Context, key string, c Claim, retry bool) error
	Close() error
}

// Record states.
const (
	stateEmpty uint32 = iota
	stateInFlight
	stateFailed
	stateDone
)

// record is one key's state, in either store.
type record struct {
	FP      Fingerprint `json:"fp"`
	State   uint32      `json:"state"`
	Token   uint64      `json:"token"`
	LeaseMs int64       `json:"lease_ms,omitempty"` // in flight until then (Unix ms)
	Ref     string      `json:"ref"`
	Status  int         `json:"status,omitempty"`
	Body    []byte      `json:"body,omitempty"`
}

// decide says what Begin does with the record a key holds (nil: none):
// the outcome, and for Started the reference to use.
func decide(r *record, fp Fingerprint, ref string, nowMs int64) (Outcome, string) {
	switch {
	case r == nil || r.State == stateEmpty:
		return Started, ref
	case r.FP != fp:
		return Mismatch, ""
	case r.State == stateDone:
		return Replay, r.Ref
	case r.State == stateInFlight && r.LeaseMs > nowMs:
		return InFlight, ""
	}
	// Failed, or in flight past its lease (its worker died): run again
	// under the same reference.
	return Started, r.Ref
}

// newToken returns a random nonzero claim token.
func newToken() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if t := binary.LittleEndian.Uint64(b[:]); t != 0 {
			return t
		}
	}
}

// Config is the `idempotency:` section of amexd's configuration.
type Config struct {
	// TTL is how long a key and its answer are kept.
	TTL time.Duration `yaml:"ttl"`
	// Lease is how long a request may hold its key in flight; a retry
	// after it runs the request again (under the same event ID), so it
	// must exceed the longest request.
	Lease time.Duration `yaml:"lease"`
	// MaxKeys bounds the keys the shared table holds (128 bytes each); past
	// it the oldest finished keys are dropped before their TTL ends.
	MaxKeys int `yaml:"max_keys"`
	// MaxBytes bounds the answers the shared table holds; past it the
	// oldest answers are dropped before their TTL ends.
	MaxBytes int64 `yaml:"max_bytes"`
}

// DefaultConfig returns the defaults: keys kept 24 h, a one-minute lease,
// and a shared table of 65,536 keys and 32 MiB of answers.
func DefaultConfig() Config {
	return Config{TTL: 24 * time.Hour, Lease: time.Minute, MaxKeys: 65536, MaxBytes: 32 << 20}
}

// Limits of the configuration.
const (
	MaxTableKeys  = 1 << 22
	MaxTableBytes = 1 << 32
	minTableBytes = 64 << 10
)

// Validate checks every field, naming each bad one by its dotted key.
func (c Config) Validate() error {
	var errs []error
	if c.TTL < time.Second || c.TTL > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("idempotency.ttl: %v must be between 1s and 720h", c.TTL))
	}
	if c.Lease < time.Second || c.Lease > c.TTL {
		errs = append(errs, fmt.Errorf("idempotency.lease: %v must be at least 1s and at most idempotency.ttl", c.Lease))
	}
	if c.MaxKeys < bucketSize || c.MaxKeys > MaxTableKeys {
		errs = append(errs, fmt.Errorf("idempotency.max_keys: %d must be between %d and %d", c.MaxKeys, bucketSize, MaxTableKeys))
	}
	if c.MaxBytes < minTableBytes || c.MaxBytes > MaxTableBytes {
		errs = append(errs, fmt.Errorf("idempotency.max_bytes: %d must be between %d and %d", c.MaxBytes, minTableBytes, int64(MaxTableBytes)))
	}
	return errors.Join(errs...)
}
