package worker

import (
	"net/http"
	"net/http/httptest"
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

// TestIPv6ClientsByPrefix: two addresses in one /64 (the default prefix)
// spend one budget; an address in the next /64 has its own.
func TestIPv6ClientsByPrefix(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit.Rate = "3-M"
	e := newEnv(t, cfg)
	from := func(addr string) int {
		req := httptest.NewRequest(http.MethodGet, "/events/circuit-status", nil)
		req.RemoteAddr = "[" + addr + "]:40000"
		rec := httptest.NewRecorder()
		e.app.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	for i, addr := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"} {
		if code := from(addr); code != http.StatusOK {
			t.Fatalf("request %d from %s: %d", i, addr, code)
		}
	}
	if code := from("2001:db8:1:2:aaaa::7"); code != http.StatusTooManyRequests {
		t.Errorf("a fourth request from the same /64: %d, want 429", code)
	}
	if code := from("2001:db8:1:3::1"); code != http.StatusOK {
		t.Errorf("a request from the next /64: %d, want 200", code)
	}
}
