package main

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/control"
	"github.com/amexd/amexd/internal/operator"
)

func decodeFixture[T any](t *testing.T, name string) T {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return v
}

func TestFormat(t *testing.T) {
	st := decodeFixture[operator.Status](t, "status.json")
	cs := decodeFixture[control.ClusterStatus](t, "breakers.json")
	now := time.Date(2025, 1, 2, 4, 6, 8, 0, time.UTC)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"status", formatStatus(st), `supervisor   pid 4242, version dev 0123456789ab, up 1h2m3s, generation 2
listen       [::]:3000
health       UNHEALTHY: slot 1 degraded
config       auth=true listen=:3000 log=json/info ratelimit=100-M ratelimit_store=shared tls=false upstream="embedded simulator" workers=2
ratelimit    shared table 16 of 16 slots live, 40 requests overflowed (TABLE FULL: raise ratelimit.table_slots)
idempotency  table 12 of 65536 keys live, 3 evicted before their TTL (raise idempotency.max_keys)
access log   17 lines dropped by failed writes (disk full? see the workers' warnings)

SLOT  PID   STATE            UPTIME  RESTARTS  REQUESTS  HITS  MISSES  STALE
0     5001  ready            1m2s    0         1234      900   300     34
1     -     down (degraded)  0s      7         0         0     0       0
`},
		{"workers", formatWorkers(st.Workers, now), `SLOT  PID   STATE            GEN  UPTIME  RESTARTS  REQUESTS  INFLIGHT  REJECTED  QUEUE  BACKLOG  HEARTBEAT  RSS      CPU   P50    P99   LAST REPLACED
0     5001  ready            2    1m2s    0         1234      3         5         0      4096     500ms ago  23.5MiB  1.3s  0.4ms  12ms  memory of 4990, 1m2s ago
1     -     down (degraded)  2    0s      7         0         0         0         -      -        -          -        -     -      -     hang of 4991, 8s ago
`},
		{"breakers", formatBreakers(cs), `SLOT  PID   WORKER    BREAKER   STATE   FAILURES  OPENS  RETRY IN
0     5001  ready     addEvent  open    3         2      4.3s
0     5001  ready     getUsers  closed  1         0      -
1     5002  starting  -         -       -         -      -

BREAKER   OPEN  HALF-OPEN  CLOSED
addEvent  1     0          0
getUsers  0     0          1
`},
		{"health ok", formatHealth(operator.Health{Healthy: true, Slots: 4, Serving: 4}), "healthy: 4 of 4 slots serving\n"},
		{"health bad", formatHealth(operator.Health{Slots: 4, Serving: 3, Reason: "slot 2 starting"}),
			"unhealthy: 3 of 4 slots serving (slot 2 starting)\n"},
		{"reset some", formatReset([]string{"addEvent", "getUsers"}, 1), "reset addEvent, getUsers in 1 worker\n"},
		{"reset none", formatReset(nil, 3), "no breaker to reset\n"},
		{"config quoting", configLine(map[string]any{"b": "", "a": 1}), `a=1 b=""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", tt.got, tt.want)
			}
		})
	}
}
