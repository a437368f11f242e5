package discovery

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// configFile writes a configuration the way a ConfigMap update lands: a new
// file renamed into place.
func configFile(t *testing.T, p string, cfg *v1alpha1.DiscoveryConfig) {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, p, data)
}

func writeAtomic(t *testing.T, p string, data []byte) {
	t.Helper()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// fileLoader is the plugin's loader (FileConfigLoader) for one file.
func fileLoader(p string) ConfigLoader {
	return FileConfigLoader(func() string { return p })
}

// startWatcher runs w until the test ends and checks that Run returns and
// leaves no goroutine behind.
func startWatcher(t *testing.T, w *Watcher) (stop func()) {
	t.Helper()
	return startWatcherIn(t, testContext(t), w)
}

func startWatcherIn(t *testing.T, ctx context.Context, w *Watcher) (stop func()) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		// The channel is closed once Run is done.
		for range w.Updates() {
		}
		goleak.VerifyNone(t, ignore)
	}
	t.Cleanup(stop)
	return stop
}

// waitFor reads updates until one satisfies cond.
func waitFor(t *testing.T, w *Watcher, timeout time.Duration, what string, cond func(*Inventory) bool) *Inventory {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case inv, ok := <-w.Updates():
			if !ok {
				t.Fatalf("updates closed while waiting for %s", what)
			}
			if cond(inv) {
				return inv
			}
		case <-deadline:
			t.Fatalf("no inventory where %s within %v", what, timeout)
		}
	}
}

// expectQuiet checks that no inventory arrives for a while.
func expectQuiet(t *testing.T, w *Watcher, d time.Duration, why string) {
	t.Helper()
	select {
	case inv := <-w.Updates():
		t.Errorf("unexpected inventory after %s: %+v", why, outcomes(inv))
	case <-time.After(d):
	}
}

func published(p, group string) func(*Inventory) bool {
	return func(inv *Inventory) bool { return outcomes(inv)[p].group == group }
}

func notPublished(p string) func(*Inventory) bool {
	return func(inv *Inventory) bool { return outcomes(inv)[p].group == "" }
}

// TestWatcherFixtureTree drives the file-watch path on a fixture tree; it
// needs no privileges and no uevents.
func TestWatcherFixtureTree(t *testing.T) {
	tr := discoverytest.NewFake(t)
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: gib})
	tr.Mount("/dev/sda", nd(8, 0), "/", "ext4")
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	configFile(t, cfgPath, config(nil, v1alpha1.DeviceGroup{Name: "dev", Include: []string{"/dev/sd*", "/dev/fuse"}}))
	w := NewWatcher(
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat())),
		WithConfigLoader(fileLoader(cfgPath)), WithConfigFile(cfgPath),
		WithRescanInterval(time.Hour), WithDebounce(20*time.Millisecond),
		withoutUevents())
	stop := startWatcher(t, w)
	const within = 2 * time.Second

	waitFor(t, w, within, "the first inventory has the root disk in use", func(inv *Inventory) bool {
		return outcomes(inv)["/dev/sda"].reason == "in use: mounted at /"
	})

	tr.CharNode("/dev/fuse", 10, 229)
	waitFor(t, w, within, "/dev/fuse is published", published("/dev/fuse", "dev"))

	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	waitFor(t, w, within, "/dev/sdb is published", published("/dev/sdb", "dev"))

	// A file that changes nothing gives a scan but no update.
	tr.File("/dev/.udev-tmp", "x")
	expectQuiet(t, w, 300*time.Millisecond, "an irrelevant file")

	// A by-id link appears: the device gets an alias.
	tr.Symlink("/dev/disk/by-id/wwn-0x1", "../../sdb")
	waitFor(t, w, within, "/dev/sdb has its by-id alias", func(inv *Inventory) bool {
		d := findDevice(inv, "/dev/sdb")
		return d != nil && len(d.Aliases) == 1 && d.Aliases[0] == "/dev/disk/by-id/wwn-0x1"
	})

	configFile(t, cfgPath, config(nil, v1alpha1.DeviceGroup{Name: "renamed", Include: []string{"/dev/sd*"}}))
	waitFor(t, w, within, "the new configuration is used", func(inv *Inventory) bool {
		return published("/dev/sdb", "renamed")(inv) && outcomes(inv)["/dev/fuse"] == outcome{}
	})

	// A broken file keeps the last good configuration...
	writeAtomic(t, cfgPath, []byte("{not json"))
	expectQuiet(t, w, 300*time.Millisecond, "a broken configuration")
	// ...until a good one comes.
	configFile(t, cfgPath, config(nil, v1alpha1.DeviceGroup{Name: "again", Include: []string{"/dev/sd*"}}))
	waitFor(t, w, within, "the repaired configuration is used", published("/dev/sdb", "again"))

	tr.RemoveBlock("sdb")
	waitFor(t, w, within, "/dev/sdb is gone", func(inv *Inventory) bool {
		_, listed := outcomes(inv)["/dev/sdb"]
		return !listed
	})

	stop()
}

func TestWatcherRescanInterval(t *testing.T) {
	tr := discoverytest.NewFake(t)
	w := NewWatcher(WithConfig(config(nil, v1alpha1.DeviceGroup{Name: "dev", Include: []string{"/dev/sd*"}})),
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat())),
		WithRescanInterval(100*time.Millisecond), withoutUevents())
	startWatcher(t, w)
	waitFor(t, w, 2*time.Second, "first inventory", func(*Inventory) bool { return true })
	// sysfs changes raise no file event; only the rescan finds this.
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib, NoNode: true})
	waitFor(t, w, 2*time.Second, "the rescan sees /dev/sdc", func(inv *Inventory) bool {
		return outcomes(inv)["/dev/sdc"].reason == "no block device node at /dev/sdc"
	})
}

// TestWatcherMountTableFailsClosed: without the host's mount table the
// watcher runs, publishes no block device and says why; once the table
// can be read the next scan publishes again.
func TestWatcherMountTableFailsClosed(t *testing.T) {
	tr := discoverytest.NewFake(t)
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	tr.Remove("/proc/1/mountinfo")
	w := NewWatcher(WithConfig(config(nil, v1alpha1.DeviceGroup{Name: "dev", Include: []string{"/dev/sd*"}})),
		WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat())),
		WithRescanInterval(100*time.Millisecond), withoutUevents())
	startWatcher(t, w)
	waitFor(t, w, 2*time.Second, "/dev/sdb held back", func(inv *Inventory) bool {
		return strings.HasPrefix(outcomes(inv)["/dev/sdb"].reason, "unknown whether in use: ") && len(inv.Warnings) == 1
	})
	tr.File("/proc/1/mountinfo", "")
	waitFor(t, w, 2*time.Second, "/dev/sdb published", published("/dev/sdb", "dev"))
}

func TestWatcherFirstScanError(t *testing.T) {
	// A configuration that never loaded is no reason to guess one.
	tr := discoverytest.NewFake(t)
	w := NewWatcher(WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat())), withoutUevents(),
		WithConfigLoader(fileLoader(filepath.Join(t.TempDir(), "missing.json"))))
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	if err := w.Run(testContext(t)); err == nil || !strings.Contains(err.Error(), "load configuration") {
		t.Errorf("Run with a failing loader: %v", err)
	}
	if _, ok := <-w.Updates(); ok {
		t.Error("updates not closed")
	}
	if err := w.Run(testContext(t)); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestIsDeviceUevent(t *testing.T) {
	tests := map[string]bool{
		"change@/devices/virtual/block/loop0\x00ACTION=change\x00SUBSYSTEM=block\x00DEVNAME=loop0\x00": true,
		"add@/devices/virtual/misc/fuse\x00ACTION=add\x00SUBSYSTEM=misc\x00DEVNAME=fuse\x00":           true,
		"add@/module/fuse\x00ACTION=add\x00SUBSYSTEM=module\x00":                                       false,
		"libudev\x00\xfe\xed\xca\xfe SUBSYSTEM=block DEVNAME=x":                                        false,
	}
	for msg, want := range tests {
		if got := isDeviceUevent([]byte(msg)); got != want {
			t.Errorf("isDeviceUevent(%q) = %v, want %v", msg, got, want)
		}
	}
}

// TestWatcherRealLoop binds and unbinds a loop device on the running kernel
// and expects the Watcher to follow from uevents (the rescan interval is far
// too long to help).
func TestWatcherRealLoop(t *testing.T) {
	requireRoot(t)
	requireTool(t, "losetup")
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	configFile(t, cfgPath, config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}))
	// This machine has no udev: a bound loop device is new and waits the
	// settle time, after which the Watcher publishes it by itself.
	w := NewWatcher(WithWatchHostRoot("/"), WithConfigLoader(fileLoader(cfgPath)), WithConfigFile(cfgPath),
		WithRescanInterval(time.Hour), WithDebounce(50*time.Millisecond), WithSettleTime(500*time.Millisecond))
	stop := startWatcher(t, w)
	const within = 2 * time.Second
	waitFor(t, w, within, "first inventory", func(*Inventory) bool { return true })

	dev, detach := discoverytest.LoopDevice(t, 16*mib)
	if _, err := os.Stat("/run/udev/control"); err == nil {
		t.Log("this host runs udev: the loop device waits for udev, not for the settle time")
	} else {
		waitFor(t, w, within, dev+" is held back as new", func(inv *Inventory) bool {
			return strings.HasPrefix(outcomes(inv)[dev].reason, "not ready: new device")
		})
	}
	waitFor(t, w, within, dev+" is published", published(dev, "loops"))

	detach()
	waitFor(t, w, within, dev+" is gone", notPublished(dev))

	configFile(t, cfgPath, config(nil, v1alpha1.DeviceGroup{Name: "renamed", Include: []string{"/dev/loop*"}},
		v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/nothing"}}))
	waitFor(t, w, within, "the new configuration is used", func(inv *Inventory) bool {
		return len(inv.Groups) == 2 && inv.Groups[0].Name == "renamed"
	})
	stop()
}
