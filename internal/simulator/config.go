package simulator

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// maxPreloadEvents bounds preload_events so a typo cannot exhaust memory.
const maxPreloadEvents = 1_000_000

// Config holds the simulator's knobs. Its yaml keys are those used under
// `simulator:` in the daemon's configuration; go.yaml.in/yaml/v3 decodes
// durations from Go duration strings such as "500ms" and rejects bare numbers.
type Config struct {
	// EventDelay is how long getEventById waits before answering.
	EventDelay time.Duration `yaml:"event_delay"`
	// AddOK and AddFail make addEvent succeed AddOK times and then answer
	// 503 AddFail times, cyclically, counting every addEvent call.
	// AddFail 0 means addEvent never fails; AddOK 0 with AddFail > 0 means
	// it always fails.
	AddOK   int `yaml:"add_ok"`
	AddFail int `yaml:"add_fail"`
	// AddFailDelay is how long a failing addEvent waits before its 503.
	AddFailDelay time.Duration `yaml:"add_fail_delay"`
	// ListErrorRate is the probability, in [0,1], that getUsers or getEvents
	// drops the connection without sending any response.
	ListErrorRate float64 `yaml:"list_error_rate"`
	// Seed seeds the random source behind ListErrorRate; 0 picks a random seed.
	Seed int64 `yaml:"seed"`
	// PreloadUser, when not 0, is a seed user (1..3) that receives
	// PreloadEvents extra events at start. Both are fixed at start.
	PreloadUser   int `yaml:"preload_user"`
	PreloadEvents int `yaml:"preload_events"`
}

// DefaultConfig returns the original mock's behaviour: a 500ms
// getEventById, addEvent failing 10 times after every 5 successes with a
// 100ms delay, and 5% of list calls dropped.
func DefaultConfig() Config {
	return Config{
		EventDelay:    500 * time.Millisecond,
		AddOK:         5,
		AddFail:       10,
		AddFailDelay:  100 * time.Millisecond,
		ListErrorRate: 0.05,
	}
}

// Validate reports every invalid knob, each error naming its yaml key under
// `simulator.` and the offending value.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("simulator."+format, args...))
	}
	if c.EventDelay < 0 {
		bad("event_delay: %s is negative", c.EventDelay)
	}
	if c.AddOK < 0 {
		bad("add_ok: %d is negative", c.AddOK)
	}
	if c.AddFail < 0 {
		bad("add_fail: %d is negative", c.AddFail)
	}
	if c.AddFailDelay < 0 {
		bad("add_fail_delay: %s is negative", c.AddFailDelay)
	}
	if math.IsNaN(c.ListErrorRate) || c.ListErrorRate < 0 || c.ListErrorRate > 1 {
		bad("list_error_rate: %v is not in [0,1]", c.ListErrorRate)
	}
	if c.PreloadUser < 0 || c.PreloadUser > len(seedUsers) {
		bad("preload_user: %d is not a seed user (0 for none, 1..%d)", c.PreloadUser, len(seedUsers))
	}
	if c.PreloadEvents < 0 || c.PreloadEvents > maxPreloadEvents {
		bad("preload_events: %d is not in [0,%d]", c.PreloadEvents, maxPreloadEvents)
	}
	if c.PreloadEvents > 0 && c.PreloadUser == 0 {
		bad("preload_events: %d needs simulator.preload_user to be set", c.PreloadEvents)
	}
	return errors.Join(errs...)
}

// configJSON is Config as /admin/config reads and writes it: the yaml key
// names, durations as Go duration strings, and absent fields left unchanged.
type configJSON struct {
	EventDelay    *string  `json:"event_delay,omitempty"`
	AddOK         *int     `json:"add_ok,omitempty"`
	AddFail       *int     `json:"add_fail,omitempty"`
	AddFailDelay  *string  `json:"add_fail_delay,omitempty"`
	ListErrorRate *float64 `json:"list_error_rate,omitempty"`
	Seed          *int64   `json:"seed,omitempty"`
	PreloadUser   *int     `json:"preload_user,omitempty"`
	PreloadEvents *int     `json:"preload_events,omitempty"`
}

func toConfigJSON(c Config) configJSON {
	eventDelay, failDelay := c.EventDelay.String(), c.AddFailDelay.String()
	return configJSON{
		EventDelay:    &eventDelay,
		AddOK:         &c.AddOK,
		AddFail:       &c.AddFail,
		AddFailDelay:  &failDelay,
		ListErrorRate: &c.ListErrorRate,
		Seed:          &c.Seed,
		PreloadUser:   &c.PreloadUser,
		PreloadEvents: &c.PreloadEvents,
	}
}

// apply copies the present fields onto c. It parses durations but leaves
// range checks to Validate.
func (p configJSON) apply(c *Config) error {
	parse := func(key string, s *string, d *time.Duration) error {
		if s == nil {
			return nil
		}
		v, err := time.ParseDuration(*s)
		if err != nil {
			return fmt.Errorf("simulator.%s: %q is not a duration: %w", key, *s, err)
		}
		*d = v
		return nil
	}
	if err := parse("event_delay", p.EventDelay, &c.EventDelay); err != nil {
		return err
	}
	if err := parse("add_fail_delay", p.AddFailDelay, &c.AddFailDelay); err != nil {
		return err
	}
	setIf(p.AddOK, &c.AddOK)
	setIf(p.AddFail, &c.AddFail)
	setIf(p.ListErrorRate, &c.ListErrorRate)
	setIf(p.Seed, &c.Seed)
	setIf(p.PreloadUser, &c.PreloadUser)
	setIf(p.PreloadEvents, &c.PreloadEvents)
	return nil
}

func setIf[T any](src *T, dst *T) {
	if src != nil {
		*dst = *src
	}
}
