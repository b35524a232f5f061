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

// casScript replaces a key's value only if it is still the one the caller
// read (ARGV[1]); an empty new value (ARGV[2]) deletes it.
var casScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
`)

// Redis is a Store in Redis, for instances on several machines: each key is
// one Redis string holding its record as JSON, with the TTL as its expiry,
// and every change is a compare-and-set, so two machines racing for a key
// cannot both win it. Its memory is Redis's; amexd bounds what it stores
// per key by the size of an answer.
type Redis struct {
	rdb    *redis.Client
	prefix string
	ttl    time.Duration
	lease  time.Duration
	now    func() time.Time
}

// NewRedis returns a store on the Redis at url (redis:// or rediss://)
// with cfg's TTL and lease. Keys are prefixed with prefix + ":idem:".
func NewRedis(url, prefix string, cfg Config) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("idempotency: redis store: %w", err)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("idempotency: redis store: %w", err)
	}
	return &Redis{rdb: redis.NewClient(opts), prefix: prefix + ":idem:", ttl: cfg.TTL, lease: cfg.Lease, now: time.Now}, nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.rdb.Close() }

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
		var won bool
		if rec == nil {
			won, err = r.rdb.SetNX(ctx, k, c.raw, r.ttl).Result()
		} else {
			won, err = r.cas(ctx, k, old, c.raw)
		}
		if err != nil {
			return Claim{}, fmt.Errorf("idempotency: redis claim: %w", err)
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

func (r *Redis) cas(ctx context.Context, k string, old, next []byte) (bool, error) {
	n, err := casScript.Run(ctx, r.rdb, []string{k}, old, next, r.ttl.Milliseconds()).Int()
	return n == 1, err
}

var _ Store = (*Redis)(nil)
