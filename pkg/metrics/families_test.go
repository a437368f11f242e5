package metrics_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// familiesFile lists every family the plugin exports, for the dashboard
// check in deploy/grafana (a module of its own, which cannot import this).
var familiesFile = filepath.Join("..", "..", "deploy", "grafana", "metrics.txt")

// The list in deploy/grafana/metrics.txt is what the plugin exports.
// PDP_UPDATE=1 rewrites it.
func TestFamiliesFile(t *testing.T) {
	var lines []string
	for _, f := range metrics.New().Families() {
		lines = append(lines, fmt.Sprintf("%s %s", f.Name, f.Type))
	}
	sort.Strings(lines)
	want := "# Every metric family power-dev-plugin exports (name type), checked by pkg/metrics' tests;\n" +
		"# PDP_UPDATE=1 go test ./pkg/metrics rewrites it. deploy/grafana's test checks the dashboard against it.\n" +
		strings.Join(lines, "\n") + "\n"
	if os.Getenv("PDP_UPDATE") == "1" {
		if err := os.WriteFile(familiesFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(familiesFile)
	if err != nil {
		t.Fatal(err)
	}
	// The Go and process collectors' families depend on the machine (e.g.
	// process_network_* needs /proc/self/net): the file may list more of them.
	listed := map[string]bool{}
	for _, l := range strings.Split(string(got), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			listed[l] = true
		}
	}
	for _, l := range lines {
		if !listed[l] {
			t.Errorf("%s lacks %q; run PDP_UPDATE=1 go test ./pkg/metrics", familiesFile, l)
		}
		delete(listed, l)
	}
	for l := range listed {
		if !strings.HasPrefix(l, "go_") && !strings.HasPrefix(l, "process_") {
			t.Errorf("%s lists %q, which the plugin does not export; run PDP_UPDATE=1 go test ./pkg/metrics", familiesFile, l)
		}
	}
}
