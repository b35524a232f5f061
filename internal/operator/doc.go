// Package operator is amexd's operator API: the requests the supervisor
// answers on its unix socket, their JSON wire types, and the one client
// that amexctl, amexbench and the tests use to send them.
//
// Each request is an [Endpoint] value (method, path, what its body and its
// answer decode into) declared once in api.go. The supervisor registers a
// handler for it with [Handle]; a client sends it with [Call]. Adding a
// request is three steps: declare its types and Endpoint in api.go, Handle
// it in the supervisor, Call it where it is needed.
//
// # Wire format
//
// HTTP/1.1 over the unix socket at [SocketPath] (mode 0660 in a 0750
// directory). Only root, the daemon's uid and members of control.group may
// connect; anyone else gets "403 Forbidden" and the connection closed.
// Every answer is indented JSON except /metrics; errors are
// {"error": "message"} with a 4xx or 5xx status.
//
//	GET  /status          200 Status
//	GET  /workers         200 {"workers": [WorkerInfo...]}
//	     (queue_* from TCP_INFO on the slot's socket, -1 when unknown)
//	GET  /breakers        200 control.ClusterStatus
//	GET  /health          200 or 503 Health
//	     (200 only when every slot has a ready worker and none is degraded)
//	GET  /metrics         Prometheus text: the supervisor's amexd_supervisor_*
//	     series and every worker's, labelled slot="N", counters continuous
//	     across worker replacements and binary upgrades; a slot removed by
//	     scaling leaves with its series
//	POST /reload          200 Reloaded; 400 when the new configuration is
//	     refused (workers untouched), 409 when a reload or upgrade is already
//	     running, 500 when a new worker failed to get ready
//	POST /upgrade         200 Upgraded; 400 when the new binary failed its
//	     check (nothing changed), 409 when a reload or upgrade is running,
//	     422 when its canary did worse and 500 when a new worker did not get
//	     ready: rolled back either way (the old binary keeps serving)
//	POST /breakers/reset  body {"name": "getUsers"} or ?name=getUsers; every
//	     known breaker when absent. 200 BreakersReset
//	POST /cache/purge     200 Purged; 502 when the shared tier in Redis could
//	     not be purged (the workers were)
package operator
