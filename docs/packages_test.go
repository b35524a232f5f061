package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// mapRow is a row of the package map in architecture.md: | `path` | job |.
var mapRow = regexp.MustCompile("^\\| `([a-z0-9_/.-]+)` \\| (.+) \\|$")

// TestPackageMapMatchesTheTree fails when docs/architecture.md's package
// map misses a Go package of the module, names one that no longer exists,
// or leaves a package's job empty: the map is the newcomer's floor plan.
func TestPackageMapMatchesTheTree(t *testing.T) {
	text, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	var mapped []string
	for _, line := range strings.Split(string(text), "\n") {
		if m := mapRow.FindStringSubmatch(line); m != nil {
			if strings.TrimSpace(m[2]) == "" {
				t.Errorf("architecture.md: package %s has no job", m[1])
			}
			mapped = append(mapped, m[1])
		}
	}
	tree, err := goPackages("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tree {
		if !slices.Contains(mapped, p) {
			t.Errorf("architecture.md: package %s is missing from the package map", p)
		}
	}
	for _, p := range mapped {
		if !slices.Contains(tree, p) {
			t.Errorf("architecture.md: the package map names %s, which holds no Go package", p)
		}
	}
	if len(mapped) == 0 {
		t.Fatal("architecture.md: no package map rows found")
	}
	t.Logf("%d packages mapped", len(mapped))
}

// goPackages lists the directories under root that hold Go files, as
// paths relative to root, skipping what the go tool skips.
func goPackages(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); !slices.Contains(out, rel) {
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}
