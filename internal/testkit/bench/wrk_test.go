package bench

import (
	"testing"
	"time"
)

const wrkOutput = `Running 8s test @ http://127.0.0.1:3000/users/1
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    3.20ms  40.00ms   90.00%
    Req/Sec    10.00k     1.00k   12.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    4.00ms
     99%   16.25ms
  160000 requests in 8.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 5
Requests/sec:  20000.50
Transfer/sec:      5.00MB
`

func TestParseWrk(t *testing.T) {
	res, err := ParseWrk([]byte(wrkOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{RequestsPerSec: 20000.5, P50: 812 * time.Microsecond, P99: 16250 * time.Microsecond, Errors: 8}
	if res != want {
		t.Errorf("ParseWrk = %+v, want %+v", res, want)
	}
	if _, err := ParseWrk([]byte("wrk: connection refused\n")); err == nil {
		t.Error("output without figures parsed without an error")
	}
}
