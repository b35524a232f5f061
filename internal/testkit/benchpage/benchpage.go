// Package benchpage writes a benchmark run as one self-contained HTML
// page: the summary table, then per attack or fault, charts of latency
// quantiles, throughput and answers by status over time, with the moments
// something was done to the target (a kill, a reload, the upstream
// stopped) marked. The page needs no network: its styles, script and data
// are inline, and its script draws the charts as SVG.
package benchpage

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/testkit/bench"
)

//go:embed page.html
var pageHTML string

//go:embed chart.js
var chartJS string

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"dur":    bench.FormatDuration,
	"status": bench.FormatStatus,
	"errs":   bench.FormatErrors,
}).Parse(pageHTML))

// Page is what a page shows.
type Page struct {
	// Title heads the page, e.g. "amexbench chaos".
	Title string
	// Command is the command line of the run, shown under the title.
	Command   string
	Generated time.Time
	Sections  []Section
}

// Section is one attack or one fault run.
type Section struct {
	Title string
	// Reports are its rows of the summary table.
	Reports []bench.Report
	// Details is text shown as it is under the charts (a fault's recovery
	// times and data check).
	Details string
	// Timeline, when set, is drawn as the section's charts.
	Timeline *bench.Timeline
}

// Write renders p to w.
func Write(w io.Writer, p Page) error {
	view := struct {
		Page
		Data   pageData
		Script template.JS
	}{Page: p, Data: dataOf(p), Script: template.JS(chartJS)}
	if err := page.Execute(w, view); err != nil {
		return fmt.Errorf("write html page: %w", err)
	}
	return nil
}

// pageData is what the page's script draws from, in seconds and
// milliseconds.
type pageData struct {
	Sections []sectionData `json:"sections"`
}

type sectionData struct {
	Title  string      `json:"title"`
	StepS  float64     `json:"step_s"`
	Points []pointData `json:"points"`
	Marks  []markData  `json:"marks"`
}

type pointData struct {
	T        float64           `json:"t"`
	Requests uint64            `json:"requests"`
	OK       uint64            `json:"ok"`
	Status   map[string]uint64 `json:"status"`
	P50      float64           `json:"p50_ms"`
	P90      float64           `json:"p90_ms"`
	P99      float64           `json:"p99_ms"`
}

type markData struct {
	T     float64 `json:"t"`
	Label string  `json:"label"`
}

func dataOf(p Page) pageData {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	d := pageData{Sections: make([]sectionData, len(p.Sections))}
	for i, s := range p.Sections {
		sd := sectionData{Title: s.Title, Points: []pointData{}, Marks: []markData{}}
		if s.Timeline != nil {
			sd.StepS = s.Timeline.Step().Seconds()
			for _, pt := range s.Timeline.Points() {
				pd := pointData{T: pt.At.Seconds(), Requests: pt.Requests, Status: make(map[string]uint64, len(pt.Status)),
					P50: ms(pt.P50), P90: ms(pt.P90), P99: ms(pt.P99)}
				for code, n := range pt.Status {
					pd.Status[strconv.Itoa(code)] = n
					if code >= 200 && code < 400 {
						pd.OK += n
					}
				}
				sd.Points = append(sd.Points, pd)
			}
			for _, m := range s.Timeline.Marks() {
				sd.Marks = append(sd.Marks, markData{T: m.At.Seconds(), Label: m.Label})
			}
		}
		d.Sections[i] = sd
	}
	return d
}

// ChaosSections makes one page section per fault: its streams (named after
// the fault in the summary table), its details and its timeline.
func ChaosSections(reps []bench.FaultReport) []Section {
	var out []Section
	for _, rep := range reps {
		var details strings.Builder
		_ = bench.WriteChaosDetails(&details, rep) // a strings.Builder does not fail
		streams := make([]bench.Report, len(rep.Streams))
		for i, s := range rep.Streams {
			s.Name = string(rep.Fault) + ": " + s.Name
			streams[i] = s
		}
		out = append(out, Section{
			Title:    fmt.Sprintf("fault %s: %d injection(s) over %s", rep.Fault, rep.Injections, bench.FormatDuration(rep.FaultDuration)),
			Reports:  streams,
			Details:  details.String(),
			Timeline: rep.Timeline,
		})
	}
	return out
}
