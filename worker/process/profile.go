package process

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"time"
)

// MaxProfileSeconds bounds a CPU profile's length.
const MaxProfileSeconds = 300

// Profile takes a pprof profile of this worker process: a CPU profile of
// seconds, or a named profile (heap, goroutine, allocs, block, mutex,
// threadcreate) as it is now. The answer is pprof's gzipped protobuf,
// which `go tool pprof` reads.
func (w *Worker) Profile(kind string, seconds int) ([]byte, error) {
	var buf bytes.Buffer
	if kind == "cpu" {
		if seconds < 1 || seconds > MaxProfileSeconds {
			return nil, fmt.Errorf("profile cpu: seconds %d: must be 1 to %d", seconds, MaxProfileSeconds)
		}
		if err := pprof.StartCPUProfile(&buf); err != nil {
			return nil, fmt.Errorf("profile cpu: %w", err)
		}
		// The profile is the process's work over this time.
		time.Sleep(time.Duration(seconds) * time.Second)
		pprof.StopCPUProfile()
		return buf.Bytes(), nil
	}
	p := pprof.Lookup(kind)
	if p == nil {
		return nil, fmt.Errorf("profile %q: want cpu, heap, goroutine, allocs, block, mutex or threadcreate", kind)
	}
	if err := p.WriteTo(&buf, 0); err != nil {
		return nil, fmt.Errorf("profile %s: %w", kind, err)
	}
	return buf.Bytes(), nil
}
