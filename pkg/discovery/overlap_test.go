package discovery

import (
	"reflect"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// overlapTree is a fixture host (no device-mapper here, so dm devices are
// sysfs fixtures):
//
//	sdb              disk with partitions sdb1, sdb2, all unused
//	sdc sdd          two paths under multipath map dm-0
//	sde, sde1        disk and partition under dm-1 (crypt) under dm-2 (LV)
//	sdf              disk without partitions
func overlapTree(t *testing.T) *discoverytest.Tree {
	tr := discoverytest.New(t)
	for _, b := range []discoverytest.Block{
		{Name: "sdb", Dev: nd(8, 16), Size: 10 * gib},
		{Name: "sdb1", Parent: "sdb", Dev: nd(8, 17), Size: 4 * gib},
		{Name: "sdb2", Parent: "sdb", Dev: nd(8, 18), Size: 4 * gib},
		{Name: "sdc", Dev: nd(8, 32), Size: 10 * gib},
		{Name: "sdd", Dev: nd(8, 48), Size: 10 * gib},
		{Name: "dm-0", Dev: nd(253, 0), Size: 10 * gib, DMName: "mpatha", Slaves: []string{"sdc", "sdd"}},
		{Name: "sde", Dev: nd(8, 64), Size: 10 * gib},
		{Name: "sde1", Parent: "sde", Dev: nd(8, 65), Size: 9 * gib},
		{Name: "dm-1", Dev: nd(253, 1), Size: 9 * gib, DMName: "crypt", Slaves: []string{"sde1"}},
		{Name: "dm-2", Dev: nd(253, 2), Size: 9 * gib, DMName: "vg-lv", Slaves: []string{"dm-1"}},
		{Name: "sdf", Dev: nd(8, 80), Size: 10 * gib},
	} {
		tr.AddBlock(b)
	}
	return tr
}

func paths(ds []*Device) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.Path)
	}
	return out
}

func devByPath(t *testing.T, inv *Inventory, p string) *Device {
	t.Helper()
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			if d := &inv.Groups[gi].Devices[di]; d.Path == p {
				return d
			}
		}
	}
	t.Fatalf("%s not published", p)
	return nil
}

func TestOverlapsOfDiscoveredStacks(t *testing.T) {
	tr := overlapTree(t)
	// The held paths and the disk under the crypt/LV stack are published
	// only because allowInUse names them; dm-1 and sde1 stay held, so
	// dm-2 is linked to sde only through BlockInfo.Under.
	cfg := config([]string{"/dev/sdc", "/dev/sdd", "/dev/sde"},
		v1alpha1.DeviceGroup{Name: "disks", Include: []string{"/dev/sd*"}},
		v1alpha1.DeviceGroup{Name: "dm", Include: []string{"/dev/dm-*"}})
	inv := discoverTree(t, tr, cfg)

	if got, want := devByPath(t, inv, "/dev/dm-2").Block.Under, []string{"dm-1", "sde", "sde1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("dm-2 Under = %v, want %v", got, want)
	}
	o := FindOverlaps(inv)
	stacks := map[string][]string{}
	for _, s := range o.Stacks {
		stacks[s.Top.Path] = paths(s.Below)
	}
	wantStacks := map[string][]string{
		"/dev/sdb1": {"/dev/sdb"},
		"/dev/sdb2": {"/dev/sdb"},
		"/dev/dm-0": {"/dev/sdc", "/dev/sdd"},
		"/dev/dm-2": {"/dev/sde"},
	}
	if !reflect.DeepEqual(stacks, wantStacks) {
		t.Errorf("stacks = %v, want %v", stacks, wantStacks)
	}

	for p, want := range map[string][]string{
		"/dev/sdb":  {"/dev/sdb1", "/dev/sdb2"},
		"/dev/sdb1": {"/dev/sdb"}, // not sdb2: partitions do not share blocks
		"/dev/sdc":  {"/dev/dm-0", "/dev/sdd"},
		"/dev/dm-0": {"/dev/sdc", "/dev/sdd"},
		"/dev/sde":  {"/dev/dm-2"},
		"/dev/dm-2": {"/dev/sde"},
		"/dev/sdf":  {},
	} {
		if got := paths(o.Of(devByPath(t, inv, p))); !reflect.DeepEqual(got, want) {
			t.Errorf("Of(%s) = %v, want %v", p, got, want)
		}
	}

	held := map[string][]string{}
	for _, h := range o.HeldBack() {
		held[h.Device.Path] = paths(h.Tops)
	}
	wantHeld := map[string][]string{
		"/dev/sdb": {"/dev/sdb1", "/dev/sdb2"},
		"/dev/sdc": {"/dev/dm-0"},
		"/dev/sdd": {"/dev/dm-0"},
		"/dev/sde": {"/dev/dm-2"},
	}
	if !reflect.DeepEqual(held, wantHeld) {
		t.Errorf("HeldBack = %v, want %v", held, wantHeld)
	}
}

// Inside one bundle, overlaps go to the same pod and hold nothing back;
// across units they do.
func TestOverlapsHeldBackAcrossUnitsOnly(t *testing.T) {
	tr := overlapTree(t)
	cfg := config([]string{"/dev/sdc", "/dev/sdd"},
		v1alpha1.DeviceGroup{Name: "lun", Include: []string{"/dev/dm-0", "/dev/sdc"}, Bundle: true},
		v1alpha1.DeviceGroup{Name: "disks", Include: []string{"/dev/sd*"}})
	inv := discoverTree(t, tr, cfg)
	o := FindOverlaps(inv)
	var got []string
	for _, h := range o.HeldBack() {
		got = append(got, h.Device.Path+" under "+h.TopsText())
	}
	want := []string{"/dev/sdb under /dev/sdb1, /dev/sdb2", "/dev/sdd under /dev/dm-0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("HeldBack = %v, want %v", got, want)
	}
}

func TestHeldBackTopsText(t *testing.T) {
	h := HeldBack{}
	for _, p := range []string{"/dev/a1", "/dev/a2", "/dev/a3", "/dev/a4", "/dev/a5"} {
		h.Tops = append(h.Tops, &Device{Path: p})
	}
	if got, want := h.TopsText(), "/dev/a1, /dev/a2, /dev/a3 and 2 more"; got != want {
		t.Errorf("TopsText = %q, want %q", got, want)
	}
}
