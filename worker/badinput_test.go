package worker

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// badInput is one row of the README's table of bad inputs.
type badInput struct {
	method, path, body string
	headers            []string
	status             int
	code               string
}

var (
	repeatSpec = regexp.MustCompile(`<(\d+) × (.)>`)
	headerSpec = regexp.MustCompile(`\(([A-Za-z-]+): ([^)]*)\)`)
)

// readBadInputs parses the table between the bad-inputs markers of the
// README: | request | body | status | code |, where a body may say <N × c>
// for c repeated N times and a request may carry (Header: value).
func readBadInputs(t *testing.T) []badInput {
	t.Helper()
	f, err := os.Open("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []badInput
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "<!-- bad-inputs:start -->":
			in = true
			continue
		case line == "<!-- bad-inputs:end -->":
			in = false
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 4 {
			t.Fatalf("README bad-input row %q has %d cells, want 4", line, len(cells))
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		var row badInput
		req := cells[0]
		for _, m := range headerSpec.FindAllStringSubmatch(req, -1) {
			row.headers = append(row.headers, m[1], m[2])
		}
		req = strings.TrimSpace(strings.Trim(headerSpec.ReplaceAllString(req, ""), "` "))
		row.method, row.path, _ = strings.Cut(req, " ")
		if cells[1] != "(none)" {
			row.body = repeatSpec.ReplaceAllStringFunc(cells[1], func(s string) string {
				m := repeatSpec.FindStringSubmatch(s)
				n, _ := strconv.Atoi(m[1])
				return strings.Repeat(m[2], n)
			})
		}
		if row.status, err = strconv.Atoi(cells[2]); err != nil {
			t.Fatalf("README bad-input row %q: status %q", line, cells[2])
		}
		row.code = cells[3]
		rows = append(rows, row)
	}
	if len(rows) < 15 {
		t.Fatalf("found %d rows in the README's bad-input table, want at least 15", len(rows))
	}
	return rows
}

// TestBadInputTable walks the README's table: every input gets the status
// and error code the README promises, in the error shape, and none a 500.
func TestBadInputTable(t *testing.T) {
	e := newEnv(t, testConfig())
	for _, row := range readBadInputs(t) {
		t.Run(row.method+" "+row.path, func(t *testing.T) {
			a := e.do(t, row.method, row.path, row.body, row.headers...)
			if a.status >= 500 {
				t.Fatalf("answered %d: %s", a.status, a.body)
			}
			if a.status != row.status {
				t.Fatalf("status %d, README says %d: %s", a.status, row.status, a.body)
			}
			if code := a.errorCode(t); code != row.code {
				t.Errorf("code %q, README says %q", code, row.code)
			}
		})
	}
}
