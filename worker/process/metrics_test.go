package process

import (
	"strings"
	"testing"
)

// TestBreakerStateSeriesFromTheStart: every breaker has a state series
// before any of them changed state, so a freshly replaced worker does not
// drop out of breaker panels and alerts.
func TestBreakerStateSeriesFromTheStart(t *testing.T) {
	e := newEnv(t, testConfig())
	text := string(e.app.Metrics())
	for _, op := range []string{"getUsers", "getUserById", "getEvents", "getEventById", "addEvent"} {
		want := `amexd_breaker_state{breaker="` + op + `"} 0`
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "amexd_breaker_transitions_total{") {
		t.Errorf("a fresh worker counts breaker transitions:\n%s", text)
	}
}
