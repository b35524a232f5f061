// Package supervisor is amexd's supervisor process: it owns one
// SO_REUSEPORT listening socket per worker slot (or systemd's, under socket
// activation), the shared rate-limit table and the embedded Event API
// simulator; it runs one worker process per slot (`amexd worker -slot N`,
// inheriting fd 3 = the slot's socket, fd 4 = its control socketpair end,
// fd 5 = the rate-limit table when ratelimit.store is "shared"), respawns
// crashed ones with backoff, kills hung ones, reloads slot by slot, fans
// cache invalidations and breaker trips out over internal/control, tells
// systemd about it all (sd_notify), and answers operators.
//
// # Operator socket
//
// HTTP/1.1 over the unix socket at SocketPath (mode 0660 in a 0750
// directory). Only root, the daemon's uid and members of control.group may
// connect; anyone else gets "403 Forbidden" and the connection closed.
// Every answer is JSON except /metrics; errors are {"error": "message"}.
//
//	GET  /status          200 Status:
//	     {"pid", "version", "started_at", "uptime_seconds", "generation",
//	      "listen", "healthy", "reason", "config": {listen, workers, upstream, ratelimit,
//	      ratelimit_store, log}, "workers": [WorkerInfo...]}
//	GET  /workers         200 {"workers": [WorkerInfo...]}; WorkerInfo is
//	     {"slot", "pid", "state" (starting|ready|draining|exited|down),
//	      "generation", "uptime_seconds", "restarts", "degraded",
//	      "last_heartbeat", "requests", "inflight",
//	      "cache": {"hits", "misses", "stale", "evictions", "entries"},
//	      "limiter_rejections", "queue_depth", "queue_backlog"}
//	     (queue_* from TCP_INFO on the slot's socket, -1 when unknown)
//	GET  /breakers        200 control.ClusterStatus:
//	     {"workers": [{"slot", "pid", "state", "last_heartbeat",
//	       "breakers": [{"name", "state", "failures_in_window", "opens",
//	       "retry_after_ms"}]}],
//	      "summary": [{"name", "open", "half_open", "closed"}]}
//	GET  /health          200 or 503 {"healthy", "slots", "serving", "reason"}
//	     (200 only when every slot has a ready worker and none is degraded)
//	GET  /metrics         Prometheus text: the supervisor's amexd_supervisor_*
//	     series and every worker's, labelled slot="N", counters continuous
//	     across worker replacements
//	POST /reload          200 {"generation", "duration_ms"}; 400 when the new
//	     configuration is refused (workers untouched), 409 when a reload is
//	     already running, 500 when a new worker failed to get ready
//	POST /breakers/reset  body {"name": "getUsers"} or ?name=getUsers; every
//	     known breaker when absent. 200 {"reset": [names], "workers": n}
//	POST /cache/purge     200 {"workers": n}
//
// When metrics_addr is set, GET /metrics is served on that TCP address too.
package supervisor
