package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisTimeout bounds each Redis call of the store.
const redisTimeout = time.Second

// casSource replaces a key's value only if it is still the one the caller
// read (ARGV[1]); an empty new value (ARGV[2]) deletes it.
const casSource = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
`

var casScript = redis.NewScript(casSource)

// ErrNotReplicated is returned by Begin when a claim was not acknowledged
// by the replicas it must reach (Wait) in time: it was released, since a
// failover could lose it and let a retry write a second time.
var ErrNotReplicated = errors.New("idempotency: claim not acknowledged by the replicas")

// Wait makes a claim wait for replicas before Begin returns it: Redis
// replicates asynchronously, so a claim only on a master that dies is lost,
// and a retry on the promoted replica would write the event again.
type Wait struct {
	// Replicas is how many replicas must acknowledge; 0 does not wait.
	Replicas int
	// Timeout bounds the wait.
	Timeout time.Duration
}

// Redis is a Store in Redis, for instances on several machines: each key is
// one Redis string holding its record as JSON, with the TTL as its expiry,
// and every change is a compare-and-set, so two machines racing for a key
// cannot both win it. Its memory is Redis's; amexd bounds what it stores
// per key by the size of an answer.
type Redis struct {
	rdb    redis.UniversalClient
	wait   Wait
	prefix string
	ttl    time.Duration
	lease  time.Duration
	now    func() time.Time
}

// NewRedis returns a store on rdb, which it does not close, with cfg's
// TTL and lease; a claim waits for replicas as wait says. Keys are prefixed
// with prefix + ":idem:" and spread over a Redis Cluster's slots (each
// script touches one key).
func NewRedis(rdb redis.UniversalClient, prefix string, cfg Config, wait Wait) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("idempotency: redis store: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("idempotency: redis store: no Redis client")
	}
	return &Redis{rdb: rdb, wait: wait, prefix: prefix + ":idem:", ttl: cfg.TTL, lease: cfg.Lease, now: time.Now}, nil
}

// Close does nothing: the client is its owner's to close.
func (r *Redis) Close() error { return nil }

func (r *Redis) redisKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return r.prefix + hex.EncodeToString(sum[:16])
}

// Begin implements Store.
func (r *Redis) Begin(ctx context.Context, key string, fp Fingerprint, ref string) (Claim, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	k := r.redisKey(key)
	// Each lost race is another request's progress; a few suffice.
	for range 8 {
		old, err := r.rdb.Get(ctx, k).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Claim{}, fmt.Errorf("idempotency: redis get: %w", err)
		}
		var rec *record
		if err == nil {
			rec = new(record)
			if err := json.Unmarshal(old, rec); err != nil {
				return Claim{}, fmt.Errorf("idempotency: decode record %s: %w", k, err)
			}
		}
		now := r.now().UnixMilli()
		outcome, use := decide(rec, fp, ref, now)
		switch outcome {
		case Replay:
			return Claim{Outcome: Replay, Ref: use, Answer: Answer{Status: rec.Status, Body: rec.Body}}, nil
		case InFlight, Mismatch:
			return Claim{Outcome: outcome}, nil
		}
		c := Claim{Outcome: Started, Ref: use, token: newToken()}
		next := record{FP: fp, State: stateInFlight, Token: c.token, LeaseMs: now + r.lease.Milliseconds(), Ref: use}
		if c.raw, err = json.Marshal(next); err != nil {
			return Claim{}, fmt.Errorf("idempotency: encode record: %w", err)
		}
		won, err := r.claim(ctx, k, old, c.raw)
		if err != nil {
			return Claim{}, err
		}
		if won {
			return c, nil
		}
	}
	return Claim{Outcome: InFlight}, nil
}

// Complete implements Store.
func (r *Redis) Complete(ctx context.Context, key string, c Claim, a Answer) error {
	var rec record
	if err := json.Unmarshal(c.raw, &rec); err != nil {
		return ErrNotOwner
	}
	rec.State, rec.LeaseMs, rec.Status, rec.Body = stateDone, 0, a.Status, a.Body
	return r.replace(ctx, key, c, &rec)
}

// Abandon implements Store.
func (r *Redis) Abandon(ctx context.Context, key string, c Claim, retry bool) error {
	if !retry {
		return r.replace(ctx, key, c, nil)
	}
	var rec record
	if err := json.Unmarshal(c.raw, &rec); err != nil {
		return ErrNotOwner
	}
	rec.State, rec.LeaseMs = stateFailed, 0
	return r.replace(ctx, key, c, &rec)
}

// replace swaps the claim's record for next (nil: deletes it).
func (r *Redis) replace(ctx context.Context, key string, c Claim, next *record) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	var raw []byte
	if next != nil {
		var err error
		if raw, err = json.Marshal(next); err != nil {
			return fmt.Errorf("idempotency: encode record: %w", err)
		}
	}
	won, err := r.cas(ctx, r.redisKey(key), c.raw, raw)
	if err != nil {
		return fmt.Errorf("idempotency: redis update: %w", err)
	}
	if !won {
		return ErrNotOwner
	}
	return nil
}

// claim writes raw for k if k still holds old (nil: nothing) and, with a
// Wait, has the replicas acknowledge it. The write and the WAIT go in one
// pipeline on one connection (WAIT counts the writes of its own
// connection), to the node that holds k. A claim the replicas do not
// acknowledge in time is put back to old and ErrNotReplicated returned.
func (r *Redis) claim(ctx context.Context, k string, old, raw []byte) (bool, error) {
	if r.wait.Replicas <= 0 {
		var won bool
		var err error
		if old == nil {
			won, err = r.rdb.SetNX(ctx, k, raw, r.ttl).Result()
		} else {
			won, err = r.cas(ctx, k, old, raw)
		}
		if err != nil {
			return false, fmt.Errorf("idempotency: redis claim: %w", err)
		}
		return won, nil
	}
	node, err := r.node(ctx, k)
	if err != nil {
		return false, fmt.Errorf("idempotency: redis claim: %w", err)
	}
	var write redis.Cmder
	var acked *redis.Cmd
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		if old == nil {
			write = p.SetNX(ctx, k, raw, r.ttl)
		} else {
			write = p.Eval(ctx, casSource, []string{k}, old, raw, r.ttl.Milliseconds())
		}
		acked = p.Do(ctx, "wait", r.wait.Replicas, r.wait.Timeout.Milliseconds())
		return nil
	})
	if err != nil {
		// The write may have been applied without its answer arriving
		// (the WAIT's read timed out, say), and the caller's deadline may
		// be spent: the claim, unique to this call, is put back in any case.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
		defer cancel()
		if _, rerr := r.cas(rctx, k, raw, old); rerr != nil {
			return false, fmt.Errorf("idempotency: redis claim: %w, and releasing it failed: %w", err, rerr)
		}
		return false, fmt.Errorf("idempotency: redis claim: %w", err)
	}
	var won bool
	switch w := write.(type) {
	case *redis.BoolCmd:
		won = w.Val()
	case *redis.Cmd:
		n, _ := w.Int()
		won = n == 1
	}
	if !won {
		return false, nil
	}
	if n, _ := acked.Int64(); n < int64(r.wait.Replicas) {
		if _, err := r.cas(ctx, k, raw, old); err != nil {
			return false, fmt.Errorf("%w (%d of %d within %v), and releasing it failed: %w", ErrNotReplicated, n, r.wait.Replicas, r.wait.Timeout, err)
		}
		return false, fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, r.wait.Replicas, r.wait.Timeout)
	}
	return true, nil
}

// node returns the client of the server that holds k: rdb itself, or in
// a Redis Cluster the client of k's master.
func (r *Redis) node(ctx context.Context, k string) (redis.Cmdable, error) {
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, k)
	}
	return r.rdb, nil
}

func (r *Redis) cas(ctx context.Context, k string, old, next []byte) (bool, error) {
	n, err := casScript.Run(ctx, r.rdb, []string{k}, old, next, r.ttl.Milliseconds()).Int()
	return n == 1, err
}

var _ Store = (*Redis)(nil)
