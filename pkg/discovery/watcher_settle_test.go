package discovery

import (
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// neverPublished reads inventories until one satisfies cond, failing the
// test if any of them publishes one of paths on the way.
func neverPublished(t *testing.T, w *Watcher, paths []string, what string, cond func(*Inventory) bool) *Inventory {
	t.Helper()
	return waitFor(t, w, 2*time.Second, what, func(inv *Inventory) bool {
		for _, p := range paths {
			if d := findDevice(inv, p); d != nil {
				t.Errorf("%s published while waiting for %s", p, what)
			}
		}
		return cond(inv)
	})
}

func reasonHas(p, part string) func(*Inventory) bool {
	return func(inv *Inventory) bool { return strings.Contains(outcomes(inv)[p].reason, part) }
}

// TestWatcherSettleWithoutUdev: on a host without udev a new block device
// is held back for the settle time, and the Watcher publishes it when that
// is over without waiting for an event or its rescan. A path that a
// multipath map takes within the settle time is never published. The
// clock is fake; the fixture tree stands in for a SAN rescan, which cannot
// be made here.
func TestWatcherSettleWithoutUdev(t *testing.T) {
	tr := discoverytest.NewFake(t)
	tr.NoUdev()
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: gib})
	tr.Mount("/dev/sda", nd(8, 0), "/", "ext4")
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	clock := testingclock.NewFakeClock(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	w := NewWatcher(WithConfig(config(nil, v1alpha1.DeviceGroup{Name: "dev", Include: []string{"/dev/sd*", "/dev/dm-*"}})),
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat()), WithBlockOpener(tr.Open)),
		WithRescanInterval(time.Hour), WithDebounce(20*time.Millisecond), WithClock(clock), withoutUevents())
	startWatcher(t, w)

	// Present at start is no proof of being set up: without udev the
	// devices of the first scan wait too.
	waitFor(t, w, 2*time.Second, "the first inventory holds sdb back", reasonHas("/dev/sdb", "not ready: new device"))
	clock.Step(DefaultSettleTime - time.Second)
	expectQuiet(t, w, 200*time.Millisecond, "most of the settle time")
	clock.Step(time.Second)
	waitFor(t, w, 2*time.Second, "sdb is published when its settle time is over", published("/dev/sdb", "dev"))

	// A SAN rescan brings a new path; multipathd builds its map 2 s later.
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib})
	paths := []string{"/dev/sdc"}
	neverPublished(t, w, paths, "sdc is held back", reasonHas("/dev/sdc", "not ready: new device"))
	clock.Step(2 * time.Second)
	tr.AddBlock(discoverytest.Block{Name: "dm-0", Dev: nd(253, 0), Size: gib, DMName: "mpatha",
		DMUUID: "mpath-3600a0b80", Slaves: []string{"sdc"}})
	neverPublished(t, w, paths, "sdc is held by the map", reasonHas("/dev/sdc", "held by dm-0 (mpatha)"))
	clock.Step(DefaultSettleTime)
	neverPublished(t, w, paths, "the map is published", published("/dev/dm-0", "dev"))
}

// TestWatcherWaitsForUdev: on a host with udev a new block device waits for
// its udev database entry however long that takes, and udev's word on it
// counts from the moment the entry is written (the Watcher watches the
// database directory).
func TestWatcherWaitsForUdev(t *testing.T) {
	tr := discoverytest.NewFake(t)
	clock := testingclock.NewFakeClock(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC))
	w := NewWatcher(WithConfig(config(nil, allBlocks)),
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat()), WithBlockOpener(tr.Open)),
		WithRescanInterval(time.Hour), WithDebounce(20*time.Millisecond), WithClock(clock), withoutUevents())
	startWatcher(t, w)
	waitFor(t, w, 2*time.Second, "first inventory", func(*Inventory) bool { return true })

	paths := []string{"/dev/sdb"}
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib, NoUdev: true})
	neverPublished(t, w, paths, "sdb waits for udev", reasonHas("/dev/sdb", "not ready: udev has not processed it yet"))
	// No settle time with udev: the clock does not publish it.
	clock.Step(time.Hour)
	expectQuiet(t, w, 200*time.Millisecond, "an hour without udev's entry")
	tr.UdevEntry("sdb", map[string]string{"DM_MULTIPATH_DEVICE_PATH": "1", "SYSTEMD_READY": "0"})
	neverPublished(t, w, paths, "sdb is a multipath path", reasonHas("/dev/sdb", "held for multipath"))

	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib, NoUdev: true})
	neverPublished(t, w, paths, "sdc waits for udev", reasonHas("/dev/sdc", "not ready: udev has not processed it yet"))
	tr.UdevEntry("sdc", map[string]string{"ID_FS_TYPE": "xfs", "ID_FS_USAGE": "filesystem"})
	inv := neverPublished(t, w, paths, "sdc is published", published("/dev/sdc", "all"))
	if fs := findDevice(inv, "/dev/sdc").Block.FSType; fs != "xfs" {
		t.Errorf("sdc: fsType %q, want xfs", fs)
	}
}
