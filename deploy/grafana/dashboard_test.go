// Package grafana checks the shipped Grafana dashboard: every query parses
// as PromQL and names only metrics the plugin exports (metrics.txt, which
// pkg/metrics' tests keep equal to what the plugin serves). It is a module
// of its own so that the Prometheus parser and its dependencies stay out of
// the plugin's go.mod.
package grafana

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// variables are the dashboard's template variables and what stands for
// them when a query is parsed.
var variables = map[string]string{
	"$__rate_interval": "5m",
	"$node":            ".*",
	"$job":             ".*",
}

type panel struct {
	ID          int     `json:"id"`
	Type        string  `json:"type"`
	Title       string  `json:"title"`
	Description string  `json:"description"`
	Panels      []panel `json:"panels"`
	Targets     []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// exported reads metrics.txt: family name -> type.
func exported(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, typ, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("metrics.txt: bad line %q", line)
		}
		out[name] = typ
	}
	if len(out) == 0 {
		t.Fatal("metrics.txt lists no families")
	}
	return out
}

// seriesOf says whether name is a series of an exported family: the family
// itself, or a histogram's or summary's _bucket, _sum and _count.
func seriesOf(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for suffix, types := range map[string]string{"_bucket": "histogram", "_sum": "histogram summary", "_count": "histogram summary"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && strings.Contains(types, families[base]) && families[base] != "" {
			return true
		}
	}
	return false
}

var labelValues = regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)

// check parses expr after substituting the variables and returns the
// metric names it selects, or why it is wrong.
func check(families map[string]string, expr string) ([]string, error) {
	q := expr
	for v, s := range variables {
		q = strings.ReplaceAll(q, v, s)
	}
	if strings.Contains(q, "$") {
		return nil, fmt.Errorf("unknown variable in %q", expr)
	}
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	var names []string
	var bad []string
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			bad = append(bad, "a selector without a metric name: "+vs.String())
			return nil
		}
		names = append(names, name)
		if !seriesOf(families, name) {
			bad = append(bad, name+" is not a metric the plugin exports")
		}
		return nil
	})
	if len(bad) > 0 {
		return names, fmt.Errorf("%q: %s", expr, strings.Join(bad, "; "))
	}
	return names, nil
}

func TestDashboardQueries(t *testing.T) {
	families := exported(t)
	data, err := os.ReadFile("power-dev-plugin.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("power-dev-plugin.json: %v", err)
	}
	used := map[string]bool{}
	queries := 0
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Description == "" || len(p.Targets) == 0 {
				t.Errorf("panel %q: needs a description and a query", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				names, err := check(families, tg.Expr)
				if err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
				}
				for _, n := range names {
					used[n] = true
				}
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Definition == "" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(<selector>, <label>)", v.Name, v.Definition)
			continue
		}
		if _, err := check(families, m[1]); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
		}
	}
	if queries < 10 {
		t.Errorf("only %d queries", queries)
	}
	// What the dashboard is for: devices, prepares and their latency.
	for _, n := range []string{
		"power_dev_plugin_devices_published", "power_dev_plugin_devices_excluded",
		"power_dev_plugin_dra_requests_total", "power_dev_plugin_dra_request_duration_seconds_bucket",
		"power_dev_plugin_dra_claims_prepared", "power_dev_plugin_deviceplugin_allocate_duration_seconds_bucket",
	} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

// The checker itself: it refuses what the dashboard must not contain.
func TestCheckRefuses(t *testing.T) {
	families := map[string]string{"a_total": "counter", "h_seconds": "histogram", "g": "gauge"}
	for _, expr := range []string{
		`rate(b_total[5m])`,                // not exported
		`sum(rate(a_total[5m]`,             // does not parse
		`g_bucket`,                         // a gauge has no buckets
		`{__name__=~"a.*"}`,                // no metric name to check
		`rate(a_total[$__range])`,          // unknown variable
		`a_total / on() group_left nosuch`, // one name of several unknown
	} {
		if _, err := check(families, expr); err == nil {
			t.Errorf("check(%q) passed", expr)
		}
	}
	for _, expr := range []string{
		`histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket{node=~"$node"}[$__rate_interval])))`,
		`sum(rate(a_total[5m])) / sum(g)`,
	} {
		if _, err := check(families, expr); err != nil {
			t.Errorf("check(%q): %v", expr, err)
		}
	}
}
