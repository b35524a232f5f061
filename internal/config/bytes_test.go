package config

import (
	"io"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bytes
		ok   bool
	}{
		{"65536", 65536, true},
		{"512MiB", 512 << 20, true},
		{"1GiB", 1 << 30, true},
		{" 64 KiB ", 64 << 10, true},
		{"500MB", 500e6, true},
		{"10B", 10, true},
		{"0", 0, true},
		{"", 0, false},
		{"-1MiB", 0, false},
		{"1.5GiB", 0, false},
		{"12 parsecs", 0, false},
		{"9999999999999GiB", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestBytesString(t *testing.T) {
	for b, want := range map[Bytes]string{0: "0B", 1536: "1536B", 64 << 10: "64KiB", 512 << 20: "512MiB", 2 << 30: "2GiB"} {
		if got := b.String(); got != want {
			t.Errorf("Bytes(%d).String() = %q, want %q", int64(b), got, want)
		}
		if back, err := ParseBytes(b.String()); err != nil || back != b {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", b.String(), back, err, int64(b))
		}
	}
}

func TestRecyclingKeys(t *testing.T) {
	cfg, _, err := Load([]string{"-supervisor.max_requests", "1000", "-supervisor.max_requests_jitter", "100"},
		[]string{"AMEXD_SUPERVISOR_MAX_MEMORY=1GiB", "AMEXD_SUPERVISOR_WARM_MAX_BYTES=8MiB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Supervisor
	if sc.MaxRequests != 1000 || sc.MaxRequestsJitter != 100 || sc.MaxMemory != 1<<30 || sc.Warm.MaxBytes != 8<<20 {
		t.Errorf("supervisor keys not applied: %+v", sc)
	}
	if got, want := sc.MemoryLimit(), int64(1<<30)/10*9; got != want {
		t.Errorf("memory limit %d, want %d", got, want)
	}
	if Default().Supervisor.MemoryLimit() != 0 {
		t.Error("no max_memory must mean no memory limit")
	}
}
