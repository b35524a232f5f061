package worker

import (
	"net/http"
	"strconv"
	"testing"
)

// TestClientIdentity checks whose budget a request spends: the peer's,
// unless the peer is a trusted proxy, in which case X-Forwarded-For names
// the client.
func TestClientIdentity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		// wantSeparate: whether two clients behind different XFF values
		// from the same peer get budgets of their own.
		wantSeparate bool
	}{
		{"no proxy trusted", nil, false},
		{"another network trusted", []string{"10.0.0.0/8"}, false},
		{"loopback trusted", []string{"127.0.0.1/32"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.RateLimit.Rate = "3-M"
			cfg.RateLimit.TrustedProxies = tc.trusted
			e := newEnv(t, cfg)
			for i := range 3 {
				spoof := "203.0.113." + strconv.Itoa(i+1)
				if a := e.do(t, "GET", "/events/circuit-status", "", "X-Forwarded-For", spoof); a.status != http.StatusOK {
					t.Fatalf("request %d: %d", i, a.status)
				}
			}
			a := e.do(t, "GET", "/events/circuit-status", "", "X-Forwarded-For", "198.51.100.7", "X-Real-IP", "198.51.100.8")
			if got := a.status == http.StatusOK; got != tc.wantSeparate {
				t.Errorf("a fourth request with a fresh X-Forwarded-For: %d; separate budget = %v, want %v", a.status, got, tc.wantSeparate)
			}
		})
	}
}
