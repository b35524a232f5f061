package shm

import (
	"os"
	"strings"
	"testing"
)

// create makes a file for one test and releases it when the test ends.
func create(t *testing.T, size int64) (*os.File, []byte) {
	t.Helper()
	f, mem, err := Create("amexd-test", size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Unmap(mem)
		f.Close()
	})
	return f, mem
}

func TestCreateSharesSealedMemory(t *testing.T) {
	f, mem := create(t, 4096)
	if len(mem) != 4096 {
		t.Fatalf("mapping is %d bytes, want 4096", len(mem))
	}
	other, err := Map(f, 1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(other)
	mem[100] = 42
	if other[100] != 42 {
		t.Errorf("a write through one mapping is not seen through the other: %d", other[100])
	}
	if err := f.Truncate(100); err == nil {
		t.Error("shrinking the sealed file succeeded")
	}
	if err := f.Truncate(8192); err == nil {
		t.Error("growing the sealed file succeeded")
	}
}

func TestMapRefusesASizeOutOfRange(t *testing.T) {
	f, _ := create(t, 4096)
	for _, c := range []struct {
		min, max int64
		want     string
	}{
		{8192, 1 << 20, "too small"},
		{1, 1024, "too large"},
	} {
		if m, err := Map(f, c.min, c.max); err == nil || !strings.Contains(err.Error(), c.want) {
			if err == nil {
				Unmap(m)
			}
			t.Errorf("Map(%d, %d) = %v, want an error saying %q", c.min, c.max, err, c.want)
		}
	}
}

func TestCreateRefusesAnEmptySize(t *testing.T) {
	if f, _, err := Create("amexd-test", 0); err == nil {
		f.Close()
		t.Fatal("Create with size 0 succeeded")
	}
}

func TestMapOfAClosedFileFails(t *testing.T) {
	f, mem, err := Create("amexd-test", 4096)
	if err != nil {
		t.Fatal(err)
	}
	Unmap(mem)
	f.Close()
	if _, err := Map(f, 1, 4096); err == nil || !strings.Contains(err.Error(), os.ErrClosed.Error()) {
		t.Errorf("Map of a closed file = %v, want %v", err, os.ErrClosed)
	}
}
