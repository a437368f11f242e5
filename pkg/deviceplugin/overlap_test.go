package deviceplugin

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// sharesBlocks is, written out by hand, which nodes of these tests share
// blocks: a disk and its partitions, a multipath map and its paths (and
// the paths with each other: one LUN).
var sharesBlocks = map[string][]string{
	"/dev/sdb":  {"/dev/sdb1", "/dev/sdb2"},
	"/dev/sdb1": {"/dev/sdb"},
	"/dev/sdb2": {"/dev/sdb"},
	"/dev/sdc":  {"/dev/dm-0", "/dev/sdd"},
	"/dev/sdd":  {"/dev/dm-0", "/dev/sdc"},
	"/dev/dm-0": {"/dev/sdc", "/dev/sdd"},
}

// checkNoOverlappingIDs fails when two IDs of different devices (in any
// group) grant nodes that share blocks: the kubelet would hand them to two
// pods.
func checkNoOverlappingIDs(t *testing.T, sets []*DeviceSet) {
	t.Helper()
	owner := map[string]string{} // node path -> group/device
	for _, s := range sets {
		for _, u := range s.Units {
			unit := s.Group + "/" + u.Device
			for _, n := range u.Nodes {
				if o, ok := owner[n.Path]; ok && o != unit {
					t.Errorf("%s is granted by %s and %s", n.Path, o, unit)
				}
				owner[n.Path] = unit
			}
		}
	}
	for p, unit := range owner {
		for _, o := range sharesBlocks[p] {
			if ou, ok := owner[o]; ok && ou != unit {
				t.Errorf("%s (%s) and %s (%s) share blocks and are offered as different IDs", p, unit, o, ou)
			}
		}
	}
}

func idsOf(sets []*DeviceSet) map[string][]string {
	out := map[string][]string{}
	for _, s := range sets {
		out[s.Group] = s.IDs()
	}
	return out
}

func heldOf(sets []*DeviceSet) []string {
	var out []string
	for _, s := range sets {
		for _, h := range s.HeldBack {
			out = append(out, s.Group+" "+h.Path)
		}
	}
	return out
}

// The default configuration takes every unused block device: a disk and its
// partitions must not become independent IDs, or pod A gets /dev/sdb and
// pod B /dev/sdb1 (the review's TestReviewDiskAndPartitionAreIndependentIDs).
// Fixture tree: the kernels here do not show loop partitions in sysfs.
func TestDiskAndPartitionAreNeverTwoIDs(t *testing.T) {
	tr := discoverytest.New(t)
	nd := func(maj, min uint32) discoverytest.DevNum { return discoverytest.DevNum{Major: maj, Minor: min} }
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: 10 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sdb1", Parent: "sdb", Dev: nd(8, 17), Size: 4 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sdb2", Parent: "sdb", Dev: nd(8, 18), Size: 4 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sde", Dev: nd(8, 64), Size: 10 << 30})
	_, ctx := ktesting.NewTestContext(t)
	inv, err := discovery.Discover(ctx, v1alpha1.DefaultDiscoveryConfig(), discovery.WithHostRoot(tr.Root), discovery.WithStat(tr.Stat()))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(inv.Groups[0].Devices); got != 4 {
		t.Fatalf("discovery published %d devices, want sdb, sdb1, sdb2, sde", got)
	}
	sets := BuildDeviceSets(inv, nil)
	checkNoOverlappingIDs(t, sets)
	if got, want := sets[0].IDs(), []string{"sdb1", "sdb2", "sde"}; !slices.Equal(got, want) {
		t.Errorf("IDs %v, want %v: the partitions, not their disk", got, want)
	}
	if len(sets[0].HeldBack) != 1 || sets[0].HeldBack[0].Path != "/dev/sdb" ||
		sets[0].HeldBack[0].Reason != "not offered in device-plugin mode: /dev/sdb shares blocks with /dev/sdb1, /dev/sdb2, built on it, and the kubelet could hand both to different pods; only the top of a stack is offered: exclude those devices from their group to offer this one instead" {
		t.Errorf("held back %+v", sets[0].HeldBack)
	}
	// Excluding the partitions offers the disk.
	cfg := v1alpha1.DefaultDiscoveryConfig()
	cfg.Groups[0].Exclude = []string{"/dev/sd*[0-9]"}
	if inv, err = discovery.Discover(ctx, cfg, discovery.WithHostRoot(tr.Root), discovery.WithStat(tr.Stat())); err != nil {
		t.Fatal(err)
	}
	if got, want := BuildDeviceSets(inv, nil)[0].IDs(), []string{"sdb", "sde"}; !slices.Equal(got, want) {
		t.Errorf("partitions excluded: IDs %v, want %v", got, want)
	}
}

func TestOverlappingIDsAcrossGroupsAndModes(t *testing.T) {
	sdb, sdb1, sdb2 := blockDev("", "sdb", 8, 16, ""), blockDev("", "sdb1", 8, 17, "sdb"), blockDev("", "sdb2", 8, 18, "sdb")
	sdc, sdd := blockDev("", "sdc", 8, 32, ""), blockDev("", "sdd", 8, 48, "")
	mp := dmDev("", "dm-0", 0, "sdc", "sdd")
	group := func(name string, sharing v1alpha1.Sharing, bundle bool, devs ...discovery.Device) discovery.Group {
		g := discovery.Group{Name: name, Permissions: "rw", Sharing: sharing, Bundle: bundle}
		if bundle {
			g.BundleName = name
		}
		for _, d := range devs {
			d.Group = name
			g.Devices = append(g.Devices, d)
		}
		slices.SortFunc(g.Devices, func(a, b discovery.Device) int { return strings.Compare(a.Path, b.Path) })
		return g
	}
	tests := []struct {
		name     string
		groups   []discovery.Group
		wantIDs  map[string][]string
		wantHeld []string
	}{{
		name:     "exclusive group: the partitions",
		groups:   []discovery.Group{group("dev", exclusive(), false, sdb, sdb1, sdb2)},
		wantIDs:  map[string][]string{"dev": {"sdb1", "sdb2"}},
		wantHeld: []string{"dev /dev/sdb"},
	}, {
		name:     "a multipath map, not its paths",
		groups:   []discovery.Group{group("dev", exclusive(), false, sdc, sdd, mp)},
		wantIDs:  map[string][]string{"dev": {"dm-0"}},
		wantHeld: []string{"dev /dev/sdc", "dev /dev/sdd"},
	}, {
		name:     "shared group: sharing a device is not sharing those that overlap it",
		groups:   []discovery.Group{group("dev", shared(2), false, sdb, sdb1)},
		wantIDs:  map[string][]string{"dev": {"sdb1_0", "sdb1_1"}},
		wantHeld: []string{"dev /dev/sdb"},
	}, {
		name:     "across groups",
		groups:   []discovery.Group{group("disks", exclusive(), false, sdb), group("parts", exclusive(), false, sdb1, sdb2)},
		wantIDs:  map[string][]string{"disks": {}, "parts": {"sdb1", "sdb2"}},
		wantHeld: []string{"disks /dev/sdb"},
	}, {
		name:    "inside one bundle everything goes to the same pod",
		groups:  []discovery.Group{group("all", exclusive(), true, sdb, sdb1, sdc, sdd, mp)},
		wantIDs: map[string][]string{"all": {"all"}},
	}, {
		name:     "a bundle loses a node that another group's device is built on",
		groups:   []discovery.Group{group("all", exclusive(), true, sdb, sdc), group("parts", exclusive(), false, sdb1)},
		wantIDs:  map[string][]string{"all": {"all"}, "parts": {"sdb1"}},
		wantHeld: []string{"all /dev/sdb"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sets := BuildDeviceSets(&discovery.Inventory{Groups: tc.groups}, nil)
			checkNoOverlappingIDs(t, sets)
			got := idsOf(sets)
			for g, want := range tc.wantIDs {
				if !slices.Equal(got[g], want) {
					t.Errorf("group %s: IDs %v, want %v", g, got[g], want)
				}
			}
			if held := heldOf(sets); !slices.Equal(held, tc.wantHeld) {
				t.Errorf("held back %v, want %v", held, tc.wantHeld)
			}
		})
	}
}

// What is held back is logged when it changes, not on every inventory.
func TestHeldBackLoggedOncePerChange(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	m := &Manager{logger: logger}
	inv := &discovery.Inventory{Groups: []discovery.Group{{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{
		blockDev("dev", "sdb", 8, 16, ""), blockDev("dev", "sdb1", 8, 17, "sdb"),
	}}}}
	for range 3 {
		m.logHeldBack(BuildDeviceSets(inv, nil))
	}
	inv.Groups[0].Devices = inv.Groups[0].Devices[:1]
	m.logHeldBack(BuildDeviceSets(inv, nil))
	out := logger.GetSink().(ktesting.Underlier).GetBuffer().String()
	for what, want := range map[string]int{
		"Not offering a device resource=\"power-dev-plugin/dev\" path=\"/dev/sdb\"": 1,
		"Device no longer held back for shared blocks path=\"/dev/sdb\"":            1,
	} {
		if n := strings.Count(out, what); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", what, n, want, out)
		}
	}
}

// The kubelet sees the partitions, never the disk, and can hand them to
// two pods.
func TestOverlapOverTheKubeletAPI(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, &discovery.Inventory{Groups: []discovery.Group{{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{
		blockDev("dev", "sdb", 8, 16, ""), blockDev("dev", "sdb1", 8, 17, "sdb"), blockDev("dev", "sdb2", 8, 18, "sdb"),
	}}}})
	p := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, p, "sdb1", "sdb2")
	ctx := waitCtx(t, 5*time.Second)
	if _, err := p.Allocate(ctx, []string{"sdb"}); err == nil {
		t.Error("Allocate of the held-back disk succeeded")
	}
	for _, id := range []string{"sdb1", "sdb2"} {
		resp, err := p.Allocate(ctx, []string{id})
		if err != nil {
			t.Fatal(err)
		}
		if paths := specPaths(resp.ContainerResponses[0]); !slices.Equal(paths, []string{"/dev/" + id}) {
			t.Errorf("%s grants %v", id, paths)
		}
	}
}
