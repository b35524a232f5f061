package benchpage

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/amexd/amexd/internal/testkit/bench"
	"github.com/amexd/amexd/internal/testkit/benchpage/pagecheck"
)

// browser returns chromium's path; without it the test skips, except in CI.
func browser(t *testing.T) string {
	t.Helper()
	p, err := pagecheck.Browser()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI installs it from .ci/packages", err)
		}
		t.Skip(err)
	}
	return p
}

// samplePage is a page of two sections: one with a timeline of answers
// (200s, then 503s and failures after a mark), one without a timeline.
func samplePage(t *testing.T) Page {
	t.Helper()
	tl := bench.NewTimeline(100 * time.Millisecond)
	start := time.Now()
	for i := range 300 {
		res := &vegeta.Result{Timestamp: start.Add(time.Duration(i) * 3 * time.Millisecond), Code: 200, Latency: time.Duration(1+i%7) * time.Millisecond}
		switch {
		case i > 200 && i%5 == 0:
			res.Code, res.Latency = 0, 0
		case i > 150 && i%3 == 0:
			res.Code = 503
		}
		tl.Observe(res)
	}
	tl.Mark("kill -9 slot 0 <b>")
	rep := bench.Report{Name: "GET keep-alive", Requests: 300, Throughput: 99.5,
		Status: map[int]uint64{200: 230, 503: 50}, Errors: map[bench.ErrorKind]uint64{bench.AllErrorKinds()[0]: 20}}
	return Page{
		Title: "amexbench chaos", Command: "amexbench --spawn chaos --html run.html", Generated: start,
		Sections: []Section{
			{Title: "fault kill", Reports: []bench.Report{rep}, Details: "health 200 again after 4ms", Timeline: tl},
			{Title: "no timeline", Reports: []bench.Report{{Name: "plain"}}},
		},
	}
}

func writeSample(t *testing.T) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, samplePage(t)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, string(b)
}

// TestPageIsSelfContained: the page loads nothing (no src, href or link
// element), carries the summary table and escapes what it shows.
func TestPageIsSelfContained(t *testing.T) {
	_, html := writeSample(t)
	if m := regexp.MustCompile(`(?i)\s(src|href)\s*=|<link|@import|url\(`).FindString(html); m != "" {
		t.Errorf("page refers to something outside itself: %q", m)
	}
	for _, want := range []string{"<td>GET keep-alive</td>", "200:230 503:50", "health 200 again after 4ms", "amexbench --spawn chaos --html run.html"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(html, "slot 0 <b>") {
		t.Error("a mark's label reached the page unescaped")
	}
}

// TestPageRendersInChromium opens the page in headless Chromium: three
// charts for the section with a timeline, its mark on each, no error.
func TestPageRendersInChromium(t *testing.T) {
	bin := browser(t)
	path, _ := writeSample(t)
	res, err := pagecheck.Open(context.Background(), bin, path, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) > 0 {
		t.Errorf("the page raised errors: %q", res.Errors)
	}
	if res.Charts != 3 || res.Marks != 3 {
		t.Errorf("drew %d charts with %d mark lines, want 3 and 3", res.Charts, res.Marks)
	}
}

// TestPagecheckSeesErrors: the check reports an exception and a resource
// that failed to load, so a clean result means something.
func TestPagecheckSeesErrors(t *testing.T) {
	bin := browser(t)
	path := filepath.Join(t.TempDir(), "bad.html")
	page := `<!DOCTYPE html><html><body><script src="missing.js"></script>` +
		`<script>document.body.dataset.charts = "0"; setTimeout(function () { noSuchFunction(); }, 0);</script></body></html>`
	if err := os.WriteFile(path, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := pagecheck.Open(context.Background(), bin, path, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Errors, "\n")
	if !strings.Contains(joined, "noSuchFunction") || !strings.Contains(joined, "missing.js") {
		t.Errorf("errors seen: %q, want the exception and the missing script", res.Errors)
	}
}
