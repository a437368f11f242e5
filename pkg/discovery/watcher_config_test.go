package discovery

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// loggedContext returns a context whose logger also keeps what it logs, and
// a function that returns it so far.
func loggedContext(t *testing.T) (context.Context, func() string) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	buf := logger.GetSink().(ktesting.Underlier).GetBuffer()
	return klog.NewContext(context.Background(), logger), buf.String
}

// configTree is a node with a mounted root disk and two free disks.
func configTree(t *testing.T) *discoverytest.Tree {
	tr := discoverytest.NewFake(t)
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: gib})
	tr.Mount("/dev/sda", nd(8, 0), "/", "ext4")
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib})
	return tr
}

func configWatcher(tr *discoverytest.Tree, cfgPath string) *Watcher {
	return NewWatcher(
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat())),
		WithConfigLoader(fileLoader(cfgPath)), WithConfigFile(cfgPath),
		WithRescanInterval(time.Hour), WithDebounce(20*time.Millisecond),
		withoutUevents())
}

// An emptied configuration file at run time is not "no configuration": the
// narrow configuration in force stays, and that is logged. Read as the
// built-in default it would publish every unused disk (review 2026-12-04,
// findings 9 and 18: this goes through the plugin's real loader).
func TestWatcherEmptyConfigKeepsLastGood(t *testing.T) {
	tr := configTree(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	const header = "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\n"
	writeAtomic(t, cfgPath, []byte(header+"groups:\n- name: narrow\n  include: [/dev/sdb]\n"))
	ctx, logs := loggedContext(t)
	w := configWatcher(tr, cfgPath)
	stop := startWatcherIn(t, ctx, w)
	const within = 2 * time.Second
	waitFor(t, w, within, "/dev/sdb is published in group narrow", func(inv *Inventory) bool {
		return published("/dev/sdb", "narrow")(inv) && notPublished("/dev/sdc")(inv)
	})

	// Emptied in place (": > config.yaml" on a hostPath file), which a
	// read may also catch half way; then replaced by an empty file.
	if err := os.Truncate(cfgPath, 0); err != nil {
		t.Fatal(err)
	}
	expectQuiet(t, w, 300*time.Millisecond, "a configuration file emptied in place")
	for _, content := range []string{"", "  \n", "# every group removed\n"} {
		writeAtomic(t, cfgPath, []byte(content))
		expectQuiet(t, w, 300*time.Millisecond, "an empty configuration file")
	}
	if l := logs(); !strings.Contains(l, "the last good configuration stays in force") ||
		!strings.Contains(l, "config "+cfgPath+": the file is empty or holds only comments") {
		t.Errorf("the log does not say that the empty file is ignored:\n%s", l)
	}

	// groups: [] is how to publish nothing.
	writeAtomic(t, cfgPath, []byte(header+"groups: []\n"))
	inv := waitFor(t, w, within, "no groups", func(inv *Inventory) bool { return len(inv.Groups) == 0 })
	for _, p := range []string{"/dev/sdb", "/dev/sdc"} {
		if !notPublished(p)(inv) {
			t.Errorf("%s is published with groups: []", p)
		}
	}
	stop()
	if l := logs(); !strings.Contains(l, "Configuration loads again") || !strings.Contains(l, v1alpha1.WarnNoGroups) {
		t.Errorf("the log does not say that the configuration loads again, with its warning:\n%s", l)
	}
}

// Configuration warnings are logged when a configuration brings them, at
// start or later, and again when they come back after going away; not on
// every rescan.
func TestWatcherLogsConfigWarnings(t *testing.T) {
	tr := configTree(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	const header = "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\n"
	noTypes := header + "groups:\n- name: all\n  include: [/dev/*]\n"
	blockOnly := header + "groups:\n- name: all\n  include: [/dev/*]\n  types: [block]\n"
	noTypesWarning := strings.ReplaceAll(v1alpha1.WarnCharDevices, "%d", "0")
	noTypesWarning = strings.ReplaceAll(noTypesWarning, "%q", `\"/dev/*\"`) // as the log quotes it
	count := func(logs string) int { return strings.Count(logs, noTypesWarning) }

	writeAtomic(t, cfgPath, []byte(blockOnly))
	ctx, logs := loggedContext(t)
	w := configWatcher(tr, cfgPath)
	stop := startWatcherIn(t, ctx, w)
	const within = 2 * time.Second
	waitFor(t, w, within, "first inventory", published("/dev/sdb", "all"))
	if n := count(logs()); n != 0 {
		t.Fatalf("warning logged %d times for a config without it", n)
	}

	// The warning appears at run time: logged once, though the
	// configuration is read before every scan.
	writeAtomic(t, cfgPath, []byte(noTypes))
	tr.CharNode("/dev/fuse", 10, 229)
	waitFor(t, w, within, "/dev/fuse is published", published("/dev/fuse", "all"))
	tr.File("/dev/.udev-tmp", "x")
	expectQuiet(t, w, 300*time.Millisecond, "an irrelevant file")
	if n := count(logs()); n != 1 {
		t.Errorf("warning logged %d times after it appeared, want 1:\n%s", n, logs())
	}

	// It goes away and comes back: logged again.
	writeAtomic(t, cfgPath, []byte(blockOnly))
	waitFor(t, w, within, "/dev/fuse is no longer in a group", func(inv *Inventory) bool { return outcomes(inv)["/dev/fuse"] == outcome{} })
	writeAtomic(t, cfgPath, []byte(noTypes))
	waitFor(t, w, within, "/dev/fuse is published again", published("/dev/fuse", "all"))
	stop()
	if n := count(logs()); n != 2 {
		t.Errorf("warning logged %d times after it came back, want 2:\n%s", n, logs())
	}
}

// A configuration file that is empty when the Watcher starts is an error:
// there is no good configuration to keep, and the default is no guess to
// make.
func TestWatcherStartsNotWithEmptyConfig(t *testing.T) {
	tr := configTree(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeAtomic(t, cfgPath, []byte("# nothing yet\n"))
	w := configWatcher(tr, cfgPath)
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	err := w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "config "+cfgPath+": the file is empty or holds only comments") {
		t.Errorf("Run with an empty configuration file: %v", err)
	}
}
