// Package supervisor is amexd's supervisor process: it owns one
// SO_REUSEPORT listening socket per worker slot (or systemd's, under socket
// activation), the shared rate-limit and idempotency tables and the
// embedded Event API simulator; it runs one worker process per slot
// (`amexd worker -slot N`, inheriting fd 3 = the slot's socket, fd 4 = its
// control socketpair end, fd 5 = the rate-limit table when ratelimit.store
// is "shared", fd 6 = the idempotency table unless it is "redis"), respawns
// crashed ones with backoff, kills hung ones, reloads slot by slot, fans
// cache invalidations and breaker trips out over internal/control, tells
// systemd about it all (sd_notify), and answers operators.
//
// # Operator socket
//
// The operator API (its requests, wire types and client) is package
// internal/operator; this package serves it on operator.SocketPath, and
// GET /metrics on metrics_addr too when that is set.
package supervisor
