package discovery

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
	"github.com/power-dev-plugin/power-dev-plugin/test/soak"
)

// The hotplug soak (`make bench-soak`, docs/benchmarks.md).
const (
	soakCycles = 500 // measured attach+detach cycles: 1,000 hotplug events
	soakWarmup = 10  // cycles before the baseline
	// soakWithin bounds how long one event may take to show in an
	// inventory; a missed event waits for the hourly rescan and fails.
	soakWithin = 10 * time.Second
)

// soakTolerance: files and goroutines back where they were; the live heap
// after a GC within 128 KiB, 130 bytes per event (it ends up to 45 KiB
// higher once, not growing with more events; signature cache entries that
// were never pruned came to 219 KiB).
var soakTolerance = soak.Tolerance{FDs: 2, Goroutines: 4, RSS: 8 << 20, Heap: 128 << 10}

// hotplug is one way of making a device come and go.
type hotplug struct {
	w      *Watcher
	attach func(i int) string // adds a device, returns its path
	detach func(path string)
	// ours reports whether inv publishes the device attach added.
	ours func(inv *Inventory, path string) bool
}

// TestSoakHotplug runs a Watcher through 1,000 hotplug events (500 devices
// added and removed), waiting for each to show in an inventory, and fails
// if open files, goroutines, RSS or the heap grew, or anything logged an
// error. Two sources of events:
//   - kernel (root): a real loop device bound and unbound with losetup, about
//     4 ms a pair. The Watcher follows kernel uevents over netlink and real
//     sysfs; each bind gets a new disk sequence number, so the signature cache
//     and the settle bookkeeping (no udev runs here) see a new device every
//     time and must forget the old one.
//   - fixture: a discoverytest tree whose disks (new names, new by-id links,
//     new disk sequence numbers) appear and vanish; the Watcher follows the
//     file watches on /dev and the udev database, which a loop bind does not
//     touch. Runs without root.
func TestSoakHotplug(t *testing.T) {
	soak.Require(t)
	t.Run("kernel", func(t *testing.T) { soakHotplug(t, soakKernel) })
	t.Run("fixture", func(t *testing.T) { soakHotplug(t, soakFixture) })
}

func soakHotplug(t *testing.T, setup func(*testing.T) hotplug) {
	var logged soak.Errors
	ctx := klog.NewContext(context.Background(), logged.Logger())
	h := setup(t)
	stop := startWatcherIn(t, ctx, h.w)
	waitFor(t, h.w, soakWithin, "the first inventory", func(*Inventory) bool { return true })

	cycle := func(i int) {
		p := h.attach(i)
		waitFor(t, h.w, soakWithin, p+" is published", func(inv *Inventory) bool { return h.ours(inv, p) })
		h.detach(p)
		waitFor(t, h.w, soakWithin, p+" is gone", func(inv *Inventory) bool { return !h.ours(inv, p) })
	}
	for i := range soakWarmup {
		cycle(i)
	}
	before, err := soak.Baseline(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d warm-up cycles: %v", soakWarmup, before)
	start := time.Now()
	for i := soakWarmup; i < soakWarmup+soakCycles; i++ {
		cycle(i)
		if n := i - soakWarmup + 1; n%125 == 0 {
			s, err := soak.Settled()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%5d events, %5.1fs: %v", 2*n, time.Since(start).Seconds(), s)
		}
	}
	elapsed := time.Since(start)
	after, err := soak.After(before, soakTolerance, 10*time.Second)
	t.Logf("%d hotplug events (%d devices added and removed) in %.1fs, %.1f ms per event until it shows in an inventory; before and after:\n%s",
		2*soakCycles, soakCycles, elapsed.Seconds(), float64(elapsed.Microseconds())/1000/(2*soakCycles), soak.Table(before, after))
	if err != nil {
		t.Errorf("not flat after the soak (allowed: %v):\n%v", soakTolerance, err)
	}
	if n := logged.Count(); n > 0 {
		t.Errorf("%d error lines logged during the soak; the first: %q", n, logged.First())
	}
	stop() // and no goroutine of the Watcher is left (goleak)
}

// soakLoopSize tells this soak's loop device from those of other tests
// running on the machine.
const soakLoopSize = 5<<20 + 4096

func soakKernel(t *testing.T) hotplug {
	requireRoot(t)
	losetup := requireTool(t, "losetup")
	img := filepath.Join(t.TempDir(), "hotplug.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, soakLoopSize); err != nil {
		t.Fatal(err)
	}
	var bound string
	detach := func(dev string) {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Fatalf("losetup -d %s: %v: %s", dev, err, out)
		}
		bound = ""
	}
	t.Cleanup(func() {
		if bound != "" {
			detach(bound)
		}
	})
	// No udev runs here: a bound device is new and waits the settle time
	// (20 ms instead of 5 s), then the Watcher publishes it by itself.
	w := NewWatcher(WithWatchHostRoot("/"),
		WithConfig(config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"},
			Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeBlock}})),
		WithRescanInterval(time.Hour), WithDebounce(10*time.Millisecond), WithSettleTime(20*time.Millisecond))
	return hotplug{
		w: w,
		attach: func(int) string {
			out, err := exec.Command(losetup, "-f", "--show", img).CombinedOutput()
			if err != nil {
				t.Fatalf("losetup -f %s: %v: %s", img, err, out)
			}
			bound = strings.TrimSpace(string(out))
			return bound
		},
		detach: detach,
		ours: func(inv *Inventory, p string) bool {
			d := findDevice(inv, p)
			return d != nil && d.Block != nil && d.Block.SizeBytes == soakLoopSize
		},
	}
}

func soakFixture(t *testing.T) hotplug {
	tr := discoverytest.NewFake(t)
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: 100 * gib})
	tr.Mount("/dev/sda", nd(8, 0), "/", "ext4")
	w := NewWatcher(WithWatchHostRoot(tr.Root), WithDiscoverOptions(WithStat(tr.Stat()), WithBlockOpener(tr.Open)),
		WithConfig(config(nil, v1alpha1.DeviceGroup{Name: "disks", Include: []string{"/dev/sd*"}})),
		WithRescanInterval(time.Hour), WithDebounce(10*time.Millisecond), withoutUevents())
	names := map[string]string{} // path -> kernel name
	return hotplug{
		w: w,
		attach: func(i int) string {
			name := soakDiskName(i)
			// Device numbers come back, as the kernel reuses them; the
			// names, serials and disk sequence numbers are new.
			tr.AddBlock(discoverytest.Block{Name: name, Dev: nd(8, uint32(16*(1+i%15))), Size: gib,
				Serial: fmt.Sprintf("SOAK%05d", i), ByID: []string{fmt.Sprintf("wwn-0x5000c500%08x", i)},
				DiskSeq: uint64(100 + i)})
			p := discoverytest.DevPath(name)
			names[p] = name
			return p
		},
		detach: func(p string) {
			tr.RemoveBlock(names[p])
			delete(names, p)
		},
		ours: func(inv *Inventory, p string) bool { return published(p, "disks")(inv) },
	}
}

// soakDiskName is the kernel's name of SCSI disk i+1: sdb, ..., sdz, sdaa, ...
func soakDiskName(i int) string {
	var b []byte
	for n := i + 2; n > 0; n = (n - 1) / 26 {
		b = append([]byte{byte('a' + (n-1)%26)}, b...)
	}
	return "sd" + string(b)
}
