package simulator

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// appConfig mimics how the daemon's configuration embeds Config.
type appConfig struct {
	Simulator Config `yaml:"simulator"`
}

func TestSimConfigYAML(t *testing.T) {
	doc := `
simulator:
  event_delay: 250ms
  add_ok: 3
  add_fail: 0
  add_fail_delay: 1.5s
  list_error_rate: 0.1
  seed: 7
  preload_user: 1
  preload_events: 100
`
	cfg := appConfig{Simulator: DefaultConfig()}
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	want := Config{
		EventDelay:    250 * time.Millisecond,
		AddOK:         3,
		AddFailDelay:  1500 * time.Millisecond,
		ListErrorRate: 0.1,
		Seed:          7,
		PreloadUser:   1,
		PreloadEvents: 100,
	}
	if cfg.Simulator != want {
		t.Errorf("decoded %+v, want %+v", cfg.Simulator, want)
	}

	partial := appConfig{Simulator: DefaultConfig()}
	if err := yaml.Unmarshal([]byte("simulator:\n  add_ok: 1\n"), &partial); err != nil {
		t.Fatalf("unmarshal partial: %v", err)
	}
	if partial.Simulator.EventDelay != 500*time.Millisecond || partial.Simulator.AddOK != 1 {
		t.Errorf("absent keys must keep their defaults: %+v", partial.Simulator)
	}

	out, err := yaml.Marshal(appConfig{Simulator: DefaultConfig()})
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if !strings.Contains(string(out), "event_delay: 500ms") {
		t.Errorf("durations must encode as strings:\n%s", out)
	}
}

// TestSimConfigYAMLRejectsBareNumbers pins down yaml/v3's behaviour: a
// duration without a unit is an error, not nanoseconds.
func TestSimConfigYAMLRejectsBareNumbers(t *testing.T) {
	var cfg appConfig
	err := yaml.Unmarshal([]byte("simulator:\n  event_delay: 500\n"), &cfg)
	if err == nil || !strings.Contains(err.Error(), "time.Duration") {
		t.Errorf("unmarshal of a bare number: %v, want a time.Duration error", err)
	}
}
