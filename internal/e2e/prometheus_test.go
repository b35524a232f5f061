package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/testkit/freeport"
)

// The shipped monitoring files.
const (
	promDir       = "../../configs/prometheus"
	dashboardFile = "../../configs/grafana/amexd.json"
)

// rateInterval stands for Grafana's $__rate_interval when the test runs the
// dashboard's queries: Prometheus holds a minute of samples at most by the
// time the test asks, so every rate sees all of them.
const rateInterval = "1m"

// needTool returns the path of a program the test runs. Without it the test
// skips, except in CI, where it fails: .ci/packages must list its package.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: CI installs it from .ci/packages", name)
		}
		t.Skipf("%s not installed (Debian package prometheus)", name)
	}
	return p
}

// TestPromtoolChecksShippedConfig runs promtool over the shipped scrape
// configuration and rules, runs the rules' unit tests, and checks that
// every alert has a unit test in which it fires.
func TestPromtoolChecksShippedConfig(t *testing.T) {
	promtool := needTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = promDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	_, alerts := ruleNames(t)
	if len(alerts) == 0 {
		t.Fatal("rules.yml has no alerts")
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, filepath.Join(promDir, "rules_test.yml"), &tests)
	fired := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fired[at.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fired[a] {
			t.Errorf("alert %s has no unit test in rules_test.yml in which it fires", a)
		}
	}
}

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	var rf rulesFile
	readYAML(t, filepath.Join(promDir, "rules.yml"), &rf)
	return rf
}

// ruleNames returns the names of the recording rules and of the alerts
// of rules.yml, in file order.
func ruleNames(t *testing.T) (records, alerts []string) {
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
			}
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
			}
		}
	}
	return records, alerts
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// dashboard is the part of the Grafana dashboard the test reads.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			AllValue string `json:"allValue"`
			// Query is a string for a data source variable, an object
			// for a query variable.
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardQueries returns every panel query of the shipped dashboard, its
// variables replaced the way Grafana does with "All" selected, keyed by
// "panel title #n"; and the label_values queries of its variables.
func dashboardQueries(t *testing.T) (map[string]string, []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	vars := map[string]string{"$__rate_interval": rateInterval}
	var labelQueries []string
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.AllValue == "" {
			t.Fatalf("dashboard variable %s has no allValue to query with", v.Name)
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil || q.Query == "" {
			t.Fatalf("dashboard variable %s: query %s: %v", v.Name, v.Query, err)
		}
		vars["$"+v.Name] = v.AllValue
		labelQueries = append(labelQueries, q.Query)
	}
	queries := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			expr := tg.Expr
			for name, val := range vars {
				expr = strings.ReplaceAll(expr, name, val)
			}
			if strings.Contains(expr, "$") {
				t.Fatalf("panel %q: unknown variable left in %s", p.Title, expr)
			}
			queries[fmt.Sprintf("%s #%d", p.Title, i+1)] = expr
		}
	}
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return queries, labelQueries
}

// TestPrometheusScrapesAmexd runs the Debian prometheus binary with the
// shipped configuration and rules (scraping every 3 seconds) against a live
// amexd that serves, fails writes, rate-limits a client, loses a worker and
// reloads; then every recording rule and every dashboard query must return
// data, at least one sample of which is a number.
func TestPrometheusScrapesAmexd(t *testing.T) {
	prom := needTool(t, "prometheus")
	metricsAddr := freePort(t)
	// 300 requests a minute per client: the steady traffic stays under it,
	// the burst from a second loopback address does not.
	d := start(t, "-workers", "2", "-metrics_addr", metricsAddr, "-ratelimit.rate", "300-M")
	base := startPrometheus(t, prom, metricsAddr)

	ctx := t.Context()
	stopTraffic := steadyTraffic(ctx, d.URL)
	defer stopTraffic()
	seen := exercise(t, d)
	checkExposition(t, "http://"+metricsAddr+"/metrics")

	recorded, _ := ruleNames(t)
	panels, labelQueries := dashboardQueries(t)
	queries := map[string]string{}
	for _, r := range recorded {
		queries["recording rule "+r] = r
	}
	maps.Copy(queries, panels)

	deadline := time.Now().Add(90 * time.Second)
	for _, name := range slices.Sorted(maps.Keys(queries)) {
		q := queries[name]
		var last string
		for {
			ok, got, err := queryHasData(ctx, base, q)
			if ok {
				break
			}
			last = got
			if err != nil {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: no data from %s (last answer: %s)", name, q, last)
				break
			}
			if sleep(ctx, 500*time.Millisecond) != nil {
				t.Fatal(ctx.Err())
			}
		}
	}

	// Having data is not enough: the exercise's 503s, 429s, restart and
	// reload must be counted, each at least as often as the test saw it.
	for _, c := range []struct {
		q    string
		want float64
	}{
		{`sum(amexd_http_requests_total{code="503"})`, float64(seen.unavailable)},
		{`sum(amexd_http_requests_total{code="429"})`, float64(seen.limited)},
		{`sum(amexd_ratelimit_rejections_total)`, float64(seen.limited)},
		{`sum(amexd_supervisor_worker_restarts_total)`, 1},
		{`amexd_supervisor_reloads_total{result="ok"}`, 1},
	} {
		var got float64
		var last string
		counted := waitUntil(ctx, 60*time.Second, nil, func() bool {
			v, ok, ans, err := queryValue(ctx, base, c.q)
			got, last = v, ans
			if err != nil {
				last = err.Error()
			}
			return ok && v >= c.want
		})
		if !counted {
			t.Errorf("%s = %v, want at least %v (last answer: %s)", c.q, got, c.want, last)
		}
	}

	labelValues := regexp.MustCompile(`^label_values\((\w+), *(\w+)\)$`)
	for _, lq := range labelQueries {
		m := labelValues.FindStringSubmatch(lq)
		if m == nil {
			t.Errorf("dashboard variable query %q is not label_values(metric, label)", lq)
			continue
		}
		var ans struct {
			Data []string `json:"data"`
		}
		if err := promGet(ctx, base, "/api/v1/label/"+m[2]+"/values?match[]="+url.QueryEscape(m[1]), &ans); err != nil {
			t.Errorf("%s: %v", lq, err)
		} else if !slices.Contains(ans.Data, metricsAddr) {
			t.Errorf("%s = %v, want %s among them", lq, ans.Data, metricsAddr)
		}
	}
}

// startPrometheus runs prometheus with the shipped configuration, changed
// only where a test must: every 3 seconds instead of 15, the rules file
// by its absolute path, amexd's metrics address as the target. It returns
// the base URL of its API once it is ready, and stops it when the test ends.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	var cfg map[string]any
	readYAML(t, filepath.Join(promDir, "prometheus.yml"), &cfg)
	// A scrape snapshots every worker, which a loaded CI machine may take
	// more than a second to answer: scrape every 3s with as long to answer.
	cfg["global"] = map[string]any{"scrape_interval": "3s", "evaluation_interval": "1s"}
	rules, err := filepath.Abs(filepath.Join(promDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg["rule_files"] = []string{rules}
	scrapes, _ := cfg["scrape_configs"].([]any)
	if len(scrapes) != 1 {
		t.Fatalf("prometheus.yml has %d scrape configs, want 1", len(scrapes))
	}
	job := scrapes[0].(map[string]any)
	job["scrape_timeout"] = "3s"
	job["static_configs"] = []any{map[string]any{"targets": []string{target}}}

	dir := t.TempDir()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	// Prometheus cannot say which port it got for ":0", so the test picks
	// one; should another process take it first, it picks again.
	for attempt := 1; ; attempt++ {
		addr := freePort(t)
		logPath := filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin,
			"--config.file="+cfgPath,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
			"--web.listen-address="+addr,
			"--log.level=warn",
		)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			logf.Close()
			close(exited)
		}()
		base := "http://" + addr
		ready := waitUntil(t.Context(), 60*time.Second, exited, func() bool {
			res, err := http.Get(base + "/-/ready")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		})
		if ready {
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(20 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
				if t.Failed() {
					out, _ := os.ReadFile(logPath)
					t.Logf("prometheus log:\n%s", out)
				}
			})
			return base
		}
		_ = cmd.Process.Kill()
		<-exited
		out, _ := os.ReadFile(logPath)
		if attempt < 3 && strings.Contains(string(out), "address already in use") {
			continue
		}
		t.Fatalf("prometheus did not become ready:\n%s", out)
	}
}

// waitUntil polls cond every 100 ms until it holds (true), or timeout
// passes, ctx ends or stop is closed (false).
func waitUntil(ctx context.Context, timeout time.Duration, stop <-chan struct{}, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-stop:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// steadyTraffic GETs every read route in turn, two a second, until the
// returned stop is called, so that every rate has samples to work on.
func steadyTraffic(ctx context.Context, base string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	paths := []string{"/events", "/users/1", "/events/user/1", "/events/event-1"}
	client := &http.Client{Timeout: 10 * time.Second}
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if res, err := client.Get(base + paths[i%len(paths)]); err == nil {
				res.Body.Close()
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// produced is what exercise saw amexd answer.
type produced struct {
	unavailable int // 503s to writes
	limited     int // 429s to the second client
}

// exercise makes amexd produce every kind of series the rules and the
// dashboard read: 201s and 503s with a breaker opening (the embedded
// simulator's addEvent fails 10 times after 5 successes), 429s for a client
// over its limit, a worker restart and a reload.
func exercise(t *testing.T, d *daemon) produced {
	t.Helper()
	c := fresh()
	codes := map[int]int{}
	for i := range 20 {
		code, _ := post(t, c, d.url("/events"), fmt.Sprintf(`{"name":"prometheus test %d","userId":1}`, i))
		codes[code]++
	}
	if codes[http.StatusCreated] == 0 || codes[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("writes answered %v, want both 201 and 503", codes)
	}

	// A second client, on another loopback address, goes over its limit.
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
	}}
	// The limit counts in fixed one-minute windows, so a burst that
	// straddles a window's end may need more than 300 requests.
	limited := 0
	for range 2000 {
		res, err := other.Get(d.url("/users/1"))
		if err != nil {
			t.Fatalf("GET /users/1 from 127.0.0.2: %v", err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusTooManyRequests {
			if limited++; limited == 20 {
				break
			}
		}
	}
	if limited == 0 {
		t.Fatal("no request from 127.0.0.2 was rate-limited")
	}

	// A scrape now: the supervisor keeps what a worker counted up to its
	// last snapshot, and the worker killed below takes the rest with it.
	if _, err := d.op.Metrics(t.Context()); err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	ws, err := operator.Call(t.Context(), d.op, operator.GetWorkers, operator.None{})
	if err != nil || len(ws.Workers) == 0 {
		t.Fatalf("workers: %v %v", ws, err)
	}
	victim := ws.Workers[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	replaced := waitUntil(t.Context(), 30*time.Second, nil, func() bool {
		if ws, err = operator.Call(t.Context(), d.op, operator.GetWorkers, operator.None{}); err != nil {
			return false
		}
		for _, w := range ws.Workers {
			if w.Slot == victim.Slot && w.PID != victim.PID && w.State == "ready" {
				return true
			}
		}
		return false
	})
	if !replaced {
		t.Fatalf("slot %d has no new ready worker after pid %d was killed: %v", victim.Slot, victim.PID, ws)
	}
	if _, err := operator.Call(t.Context(), d.op, operator.PostReload, operator.None{}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	return produced{unavailable: codes[http.StatusServiceUnavailable], limited: limited}
}

// checkExposition runs promtool check metrics on what url serves, which
// must pass without a word: no error, no lint warning.
func checkExposition(t *testing.T, url string) {
	t.Helper()
	promtool := needTool(t, "promtool")
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = res.Body
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics on %s: %v\n%s", url, err, out)
	}
}

// queryHasData runs an instant query and reports whether it returned at
// least one sample that is a number (not NaN), with the answer for errors.
func queryHasData(ctx context.Context, base, q string) (bool, string, error) {
	var ans struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := promGet(ctx, base, "/api/v1/query?query="+url.QueryEscape(q), &ans); err != nil {
		return false, "", err
	}
	b, _ := json.Marshal(ans.Data)
	if ans.Data.ResultType != "vector" {
		return false, string(b), fmt.Errorf("result type %q, want vector", ans.Data.ResultType)
	}
	for _, r := range ans.Data.Result {
		s, _ := r.Value[1].(string)
		if v, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(v) {
			return true, string(b), nil
		}
	}
	return false, string(b), nil
}

// queryValue runs an instant query and returns the value of its first
// sample, whether there was one that is a number, and the answer.
func queryValue(ctx context.Context, base, q string) (float64, bool, string, error) {
	var ans struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := promGet(ctx, base, "/api/v1/query?query="+url.QueryEscape(q), &ans); err != nil {
		return 0, false, "", err
	}
	b, _ := json.Marshal(ans.Data)
	for _, r := range ans.Data.Result {
		s, _ := r.Value[1].(string)
		if v, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(v) {
			return v, true, string(b), nil
		}
	}
	return 0, false, string(b), nil
}

func promGet(ctx context.Context, base, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(res.Body).Decode(&e)
		return fmt.Errorf("prometheus %s: %d %s", path, res.StatusCode, e.Error)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// freePort returns a loopback address whose port was free a moment ago,
// for programs that cannot report the port they got for ":0".
func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
