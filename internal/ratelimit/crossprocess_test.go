package ratelimit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"
)

// The cross-process test re-executes the test binary as worker processes that
// inherit the table as fd 3 and report, one line per Increment, what they saw.
const (
	helperEnv        = "AMEXD_RATELIMIT_TEST_HELPER"
	helperProcesses  = 3
	helperGoroutines = 4
	helperHits       = 1500 // per process, on each key
	// countedLimit is never reached, so every answer shows the exact count.
	countedLimit = 1 << 20
	// flipLimit is reached halfway through the hits of all processes.
	flipLimit = helperProcesses * helperHits / 2
)

func TestSharedTableAcrossProcesses(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		t.Skip("runs as a helper process")
	}
	tb, f := newTestTable(t, 1024)

	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines []string
		done  chan error
	}
	children := make([]*child, helperProcesses)
	for i := range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperIncrementer$")
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start helper: %v", err)
		}
		c := &child{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				c.lines = append(c.lines, sc.Text())
			}
			c.done <- cmd.Wait()
		}()
		children[i] = c
	}
	// All children are running; let them go together so their hits interleave.
	for _, c := range children {
		io.WriteString(c.stdin, "go\n")
		c.stdin.Close()
	}

	seen := make(map[int64]bool)
	allowed := 0
	for i, c := range children {
		select {
		case err := <-c.done:
			if err != nil {
				t.Fatalf("helper %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			c.cmd.Process.Kill()
			t.Fatalf("helper %d did not finish within 30s", i)
		}
		for _, line := range c.lines {
			var key string
			var value int64
			if _, err := fmt.Sscanf(line, "%s %d", &key, &value); err != nil {
				continue // the test framework's own output
			}
			switch key {
			case "counted":
				if seen[value] {
					t.Errorf("count %d was answered twice", value)
				}
				seen[value] = true
			case "allowed":
				allowed += int(value)
			}
		}
	}

	total := helperProcesses * helperHits
	if len(seen) != total {
		t.Errorf("helpers reported %d distinct counts, want %d", len(seen), total)
	}
	for n := int64(1); n <= int64(total); n++ {
		if !seen[n] {
			t.Errorf("no Increment answered count %d", n)
			break
		}
	}
	if allowed != flipLimit {
		t.Errorf("%d Increments were allowed on the limited key, want exactly the limit %d", allowed, flipLimit)
	}

	ctx := context.Background()
	got, err := tb.Peek(ctx, "counted", limiter.Rate{Limit: countedLimit, Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if n := countedLimit - got.Remaining; n != int64(total) {
		t.Errorf("count after the helpers exited = %d, want %d", n, total)
	}
	got, err = tb.Peek(ctx, "limited", limiter.Rate{Limit: flipLimit, Period: time.Minute})
	if err != nil || !got.Reached {
		t.Errorf("limited key after the helpers = %+v, %v; want reached", got, err)
	}
}

// TestHelperIncrementer is the body of a helper process; it does nothing in a
// normal test run.
func TestHelperIncrementer(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestSharedTableAcrossProcesses")
	}
	f := os.NewFile(3, "inherited-table")
	tb, err := OpenTable(f)
	if err != nil {
		t.Fatalf("open inherited table: %v", err)
	}
	defer tb.Close()
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("wait for start: %v", err)
	}

	ctx := context.Background()
	counted := limiter.Rate{Limit: countedLimit, Period: time.Minute}
	limited := limiter.Rate{Limit: flipLimit, Period: time.Minute}
	var (
		mu      sync.Mutex
		out     strings.Builder
		allowed int
		wg      sync.WaitGroup
	)
	for g := range helperGoroutines {
		wg.Go(func() {
			var lines strings.Builder
			ok := 0
			for range helperHits / helperGoroutines {
				c, err := tb.Increment(ctx, "counted", 1, counted)
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				lines.WriteString("counted " + strconv.FormatInt(countedLimit-c.Remaining, 10) + "\n")
				l, err := tb.Increment(ctx, "limited", 1, limited)
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
				if !l.Reached {
					ok++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			out.WriteString(lines.String())
			allowed += ok
		})
	}
	wg.Wait()
	fmt.Printf("%sallowed %d\n", out.String(), allowed)
}
