// Package bridge relays cache invalidations and breaker changes between
// the supervisors of several machines over a Redis channel they share.
//
// Redis Pub/Sub delivers only to those subscribed at the time: what was
// published while this machine's subscription was down (Redis failing
// over, say) never arrives. So each time the subscription comes back after
// a break, the bridge calls its resync function, which drops this machine's
// cached entries that a missed invalidation could have concerned: a
// generation bump rather than a short fresh window, since only dropping
// keeps read-your-writes across machines; the price is one cold miss per
// key after a failover.
//
// On a Redis Cluster the bridge uses sharded Pub/Sub (SSUBSCRIBE and
// SPUBLISH): a plain PUBLISH may be sent to any node and counts only that
// node's subscribers, so a write would not wait for the machines
// subscribed elsewhere; a sharded channel lives on its slot's master, where
// every subscriber and every publish meet.
package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channel is the Redis channel supervisors on different machines share.
// bridgeTimeout bounds how long a write waits for the other
// machines to confirm its invalidation.
const (
	Channel       = "amexd:cluster"
	bridgeTimeout = 500 * time.Millisecond
)

// bridgeMessage is one message between supervisors. An invalidate is
// answered by an ack addressed To its origin once the receiver's workers
// have applied it; a breaker forces a breaker state on every worker.
type bridgeMessage struct {
	Type   string   `json:"type"`
	Origin string   `json:"origin"`
	To     string   `json:"to,omitempty"`
	ID     uint64   `json:"id"`
	Keys   []string `json:"keys,omitempty"`
	Name   string   `json:"name,omitempty"`
	State  string   `json:"state,omitempty"`
}

// Bridge relays cache invalidations and breaker changes between this
// supervisor and those on other machines sharing the Redis server, so that
// read-your-writes and breaker propagation hold across machines.
type Bridge struct {
	rdb redis.UniversalClient
	sub *redis.PubSub
	// sharded is true on a Redis Cluster: SSUBSCRIBE and SPUBLISH.
	sharded bool
	origin  string
	log     *slog.Logger
	// applyInvalidate and applyBreaker act on this machine's workers.
	applyInvalidate func(ctx context.Context, keys []string)
	applyBreaker    func(name, state string)
	resync          func()
	// subscribed counts the subscription's confirmations: the first, then
	// one after each reconnection.
	subscribed atomic.Uint64

	nextID  atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]chan struct{}
	done    chan struct{}
	// lastFailure rate-limits the log line about an unreachable Redis.
	lastFailure atomic.Int64
}

// Health checks of the subscription: a ping every healthEvery, failed
// after healthTimeout, find a connection that died without a reset.
const (
	healthEvery   = time.Second
	healthTimeout = time.Second
)

// Start subscribes on rdb, which it does not close, to the cluster channel;
// invalidate and force apply what other machines send to this machine's
// workers, and resync is called each time the subscription comes back
// after a break (see the package comment). Redis may be down at start;
// go-redis keeps reconnecting, and writes meanwhile are only invalidated
// on this machine.
func Start(rdb redis.UniversalClient, log *slog.Logger, invalidate func(context.Context, []string), force func(name, state string), resync func()) (*Bridge, error) {
	if rdb == nil {
		return nil, errors.New("bridge: no Redis client")
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	b := &Bridge{
		rdb:             rdb,
		origin:          hex.EncodeToString(id[:]),
		log:             log,
		applyInvalidate: invalidate,
		applyBreaker:    force,
		resync:          resync,
		waiting:         map[uint64]chan struct{}{},
		done:            make(chan struct{}),
	}
	if _, b.sharded = rdb.(*redis.ClusterClient); b.sharded {
		b.sub = b.rdb.SSubscribe(context.Background(), Channel)
	} else {
		b.sub = b.rdb.Subscribe(context.Background(), Channel)
	}
	go b.receive()
	log.Info("supervisor: cluster bridge on Redis", "channel", Channel, "origin", b.origin)
	return b, nil
}

// Subscribed counts the subscription's confirmations by Redis: 1 once
// subscribed, one more after each reconnection.
func (b *Bridge) Subscribed() uint64 { return b.subscribed.Load() }

// Close unsubscribes.
func (b *Bridge) Close() {
	_ = b.sub.Close()
	<-b.done
}

func (b *Bridge) receive() {
	defer close(b.done)
	ch := b.sub.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(healthEvery), redis.WithChannelPingTimeout(healthTimeout))
	for item := range ch {
		switch v := item.(type) {
		case *redis.Subscription:
			if (v.Kind == "subscribe" || v.Kind == "ssubscribe") && b.subscribed.Add(1) > 1 {
				b.log.Info("supervisor: cluster bridge subscribed again; dropping what a missed invalidation may concern")
				b.resync()
			}
		case *redis.Message:
			b.handle(v)
		}
	}
}

func (b *Bridge) handle(msg *redis.Message) {
	var m bridgeMessage
	if err := json.Unmarshal([]byte(msg.Payload), &m); err != nil || m.Origin == b.origin {
		return
	}
	switch m.Type {
	case "invalidate":
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), bridgeTimeout)
			defer cancel()
			b.applyInvalidate(ctx, m.Keys)
			b.publish(ctx, bridgeMessage{Type: "ack", To: m.Origin, ID: m.ID})
		}()
	case "ack":
		if m.To != b.origin {
			return
		}
		b.mu.Lock()
		if ch := b.waiting[m.ID]; ch != nil {
			ch <- struct{}{}
		}
		b.mu.Unlock()
	case "breaker":
		b.applyBreaker(m.Name, m.State)
	}
}

// publish sends m and returns how many other supervisors received it.
func (b *Bridge) publish(ctx context.Context, m bridgeMessage) int {
	m.Origin = b.origin
	payload, _ := json.Marshal(m)
	publish := b.rdb.Publish
	if b.sharded {
		publish = b.rdb.SPublish
	}
	n, err := publish(ctx, Channel, payload).Result()
	if err != nil {
		b.failed(err)
		return 0
	}
	return max(0, int(n)-1) // our own subscription receives it too
}

// failed logs a Redis failure at most once every ten seconds.
func (b *Bridge) failed(err error) {
	now := time.Now().UnixNano()
	last := b.lastFailure.Load()
	if now-last > int64(10*time.Second) && b.lastFailure.CompareAndSwap(last, now) {
		b.log.Warn("supervisor: cluster bridge cannot reach Redis; writes are invalidated on this machine only", "err", err)
	}
}

// Invalidate publishes keys and waits until every other supervisor that
// received them confirms its workers dropped them, or until ctx ends.
func (b *Bridge) Invalidate(ctx context.Context, keys []string) error {
	id := b.nextID.Add(1)
	acks := make(chan struct{}, 64)
	b.mu.Lock()
	b.waiting[id] = acks
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiting, id)
		b.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, bridgeTimeout)
	defer cancel()
	for n := b.publish(ctx, bridgeMessage{Type: "invalidate", ID: id, Keys: keys}); n > 0; n-- {
		select {
		case <-acks:
		case <-ctx.Done():
			return fmt.Errorf("%d other machines did not confirm the invalidation: %w", n, ctx.Err())
		}
	}
	return nil
}

// Breaker tells the other machines a breaker changed state.
func (b *Bridge) Breaker(name, state string) {
	ctx, cancel := context.WithTimeout(context.Background(), bridgeTimeout)
	defer cancel()
	b.publish(ctx, bridgeMessage{Type: "breaker", Name: name, State: state})
}
