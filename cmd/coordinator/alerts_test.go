package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/oauth2"
	"gopkg.in/yaml.v3"

	"github.com/openedx/coordinator/internal/metrics"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// exportedMetrics returns the name of every sample the binary's metrics
// handler serves once each kind of measurement has been made, the queue
// gauges read from the real Redis: what alert rules and dashboards may use.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	rdb, q := queuetest.Redis(t)
	m := metrics.New()
	m.Build("test", "all")
	m.WatchQueue(asynq.NewInspectorFromRedisClient(rdb), q)
	m.WatchOldestOpen(q, func(context.Context) (time.Time, bool, error) { return time.Now().Add(-time.Minute), true, nil })
	m.HTTP("/orders/fulfill", "POST", 200, time.Millisecond)
	m.Fulfill(true, "")
	m.Fulfill(false, "unavailable")
	m.Task("enroll", "enrolled", 1)
	m.Task("enroll", "retried", 1)
	m.Task("enroll", "failed", 20)
	for _, op := range []string{"account", "enroll", "read_enrollment", "unenroll"} {
		m.LMS("default", op, 200, time.Millisecond)
	}
	m.Token("default", nil)
	m.Token("default", &oauth2.RetrieveError{Response: &http.Response{StatusCode: 401}})
	m.Token("default", errors.New("connection refused"))
	m.Reconcile(true, 1, 1, nil)
	m.Reconcile(false, 0, 0, errors.New("down"))

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text, _ := io.ReadAll(rec.Body)
	names := map[string]bool{"up": true} // Prometheus's own, per scrape target
	for _, line := range strings.Split(string(text), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names[line[:strings.IndexAny(line, "{ ")]] = true
	}
	for _, want := range []string{"coordinator_queue_up", "coordinator_build_info", "coordinator_lms_token_fetches_total"} {
		if !names[want] {
			t.Fatalf("the handler does not serve %s", want)
		}
	}
	return names
}

// metricRef finds the metric names of a PromQL expression (Coordinator's,
// the runtime collectors' and Prometheus's up).
var metricRef = regexp.MustCompile(`\b(?:coordinator_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up)\b`)

// checkExpr reports the metrics an expression uses that the binary does not
// export, and any sum over the queue gauges: every worker exports the same
// values, so a sum multiplies them by the number of workers.
func checkExpr(expr string, exported map[string]bool) []string {
	var problems []string
	for _, name := range metricRef.FindAllString(expr, -1) {
		if !exported[name] {
			problems = append(problems, name+" is not exported by the binary")
		}
	}
	for i := strings.Index(expr, "sum"); i >= 0; i = next(expr, i) {
		if arg := aggregated(expr[i+3:]); strings.Contains(arg, "coordinator_queue_") {
			problems = append(problems, "sums the queue gauges (every worker exports them: use max)")
		}
	}
	return problems
}

func next(s string, i int) int {
	j := strings.Index(s[i+1:], "sum")
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// aggregated returns the argument of the aggregation whose text follows its
// operator: "by (x) (arg)" or "(arg) by (x)".
func aggregated(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "by") || strings.HasPrefix(s, "without") {
		if k := strings.Index(s, ")"); k >= 0 {
			s = strings.TrimSpace(s[k+1:])
		}
	}
	if !strings.HasPrefix(s, "(") {
		return ""
	}
	depth := 0
	for k, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return s[1:k]
			}
		}
	}
	return s
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
			Labels map[string]string
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleScenario is one test group of a promtool test file.
type ruleScenario struct {
	Name  string `yaml:"name"`
	Cases []struct {
		EvalTime  string `yaml:"eval_time"`
		Alertname string `yaml:"alertname"`
		ExpAlerts []any  `yaml:"exp_alerts"`
	} `yaml:"alert_rule_test"`
}

// The alert rules load in Prometheus's own checker, use only metrics the
// binary exports, and pass the scenario tests of alerts_test.yml, which list
// at each evaluation every alert that must fire and every one that must not.
func TestAlertRules(t *testing.T) {
	exported := exportedMetrics(t)
	var rules ruleFile
	if err := yaml.Unmarshal([]byte(readDeploy(t, "prometheus/alerts.yml")), &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			for _, p := range checkExpr(r.Expr, exported) {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("alert %s: severity %q, want page or ticket", r.Alert, s)
			}
			if strings.Contains(r.Expr, `job=`) {
				t.Errorf("alert %s names a scrape job: the operator names it", r.Alert)
			}
		}
	}

	var tests struct {
		Tests []ruleScenario `yaml:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readDeploy(t, "prometheus/alerts_test.yml")), &tests); err != nil {
		t.Fatal(err)
	}
	fired := map[string]bool{}
	for _, sc := range tests.Tests {
		listed := map[string][]string{}
		for _, c := range sc.Cases {
			listed[c.EvalTime] = append(listed[c.EvalTime], c.Alertname)
			if len(c.ExpAlerts) > 0 {
				fired[c.Alertname] = true
			}
		}
		for at, names := range listed {
			slices.Sort(names)
			if want := slices.Sorted(slices.Values(alerts)); !slices.Equal(names, want) {
				t.Errorf("scenario %q at %s lists %v, want every alert %v", sc.Name, at, names, want)
			}
		}
	}
	for _, a := range alerts {
		if !fired[a] {
			t.Errorf("no scenario shows alert %s firing", a)
		}
	}
	for _, want := range []string{"LMS down", "Retry backlog", "Redis down", "stuck worker"} {
		if !slices.ContainsFunc(tests.Tests, func(sc ruleScenario) bool { return strings.Contains(sc.Name, want) }) {
			t.Errorf("alerts_test.yml has no %q scenario", want)
		}
	}

	promtool := requireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(deployDir, "prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// grafanaDashboard is the part of Grafana's dashboard model the test reads.
type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// The Grafana dashboard is valid JSON whose every query is valid PromQL
// (promtool checks them as recording rules) over metrics the binary exports.
func TestGrafanaDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	raw := readDeploy(t, "grafana/coordinator.json")
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/coordinator.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q", d.UID, d.Title)
	}
	vars := map[string]string{"$__rate_interval": "5m"}
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			vars["${"+v.Name+"}"] = "prometheus"
		case "query":
			q, _ := v.Query.(map[string]any)
			expr, _ := q["query"].(string)
			m := regexp.MustCompile(`^label_values\((\w+), *(\w+)\)$`).FindStringSubmatch(expr)
			if m == nil || !exported[m[1]] {
				t.Errorf("variable %s: query %q is not label_values over an exported metric", v.Name, expr)
			}
			vars["$"+v.Name] = ".*"
		}
	}
	var exprs []string
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the dashboard's data source variable", p.Title)
			}
			for _, tg := range p.Targets {
				for _, problem := range checkExpr(tg.Expr, exported) {
					t.Errorf("panel %q: %s", p.Title, problem)
				}
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(exprs) < 10 {
		t.Fatalf("%d queries: the dashboard lost its panels", len(exprs))
	}
	// Which metrics the dashboard shows: at least every coordinator_ family.
	shown := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricRef.FindAllString(e, -1) {
			shown[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")] = true
		}
	}
	for name := range maps.Keys(exported) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		if strings.HasPrefix(name, "coordinator_") && !shown[base] {
			t.Errorf("no panel shows %s", base)
		}
	}

	promtool := requireTool(t, "promtool", "prometheus")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		for k, v := range vars {
			e = strings.ReplaceAll(e, k, v)
		}
		b, _ := json.Marshal(e)
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, b)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("dashboard queries are not valid PromQL: %v\n%s", err, out)
	}
}
