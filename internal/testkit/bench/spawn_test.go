package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "cmd", "amexbench")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{root, deep} {
		got, err := ModuleRoot(dir)
		if err != nil || got != root {
			t.Errorf("ModuleRoot(%s) = %q, %v; want %s", dir, got, err, root)
		}
	}
}

func TestSpawnReportsEarlyExit(t *testing.T) {
	bin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1) on this machine")
	}
	_, err = Spawn(context.Background(), SpawnOptions{Binary: bin, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "exited before it was healthy") {
		t.Errorf("Spawn of a binary that exits = %v, want an early-exit error", err)
	}
}
