package version

import (
	"runtime"
	"strings"
	"testing"
)

// set gives Version and Commit the values -ldflags -X would, for one test.
func set(t *testing.T, version, commit string) {
	oldV, oldC := Version, Commit
	Version, Commit = version, commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })
}

func TestStringIsVersionAndShortCommit(t *testing.T) {
	set(t, "v1.2.3-4-gabc1234", "abc1234def5678901234567890abcdef12345678")
	if got, want := String(), "v1.2.3-4-gabc1234 abc1234def56"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Revision(); got != Commit {
		t.Errorf("Revision() = %q, want the Commit set at link time %q", got, Commit)
	}
}

func TestLongNamesCommitAndToolchain(t *testing.T) {
	set(t, "v2.0.0", "0123456789abcdef0123456789abcdef01234567")
	got := Long()
	want := "v2.0.0 (commit 0123456789abcdef0123456789abcdef01234567, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if got != want {
		t.Errorf("Long() = %q, want %q", got, want)
	}
}

func TestUnsetVersionIsDev(t *testing.T) {
	if Version != "dev" {
		t.Fatalf("Version = %q in a test binary, want dev", Version)
	}
	if !strings.HasPrefix(String(), "dev") {
		t.Errorf("String() = %q, want it to start with dev", String())
	}
}
