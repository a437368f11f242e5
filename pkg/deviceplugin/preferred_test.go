package deviceplugin

import (
	"fmt"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

func TestPreferred(t *testing.T) {
	// sdb1 sdb2 on disk sdb (NUMA 0); sdc1 sdc2 sdc3 on sdc (NUMA 1); sdd
	// alone (NUMA 1); nvme0n1 (NUMA unknown).
	numa := map[string][]int64{"sdb1": {0}, "sdb2": {0}, "sdc1": {1}, "sdc2": {1}, "sdc3": {1}, "sdd": {1}}
	devs := []discovery.Device{
		blockDev("g", "sdb1", 8, 17, "sdb"), blockDev("g", "sdb2", 8, 18, "sdb"),
		blockDev("g", "sdc1", 8, 33, "sdc"), blockDev("g", "sdc2", 8, 34, "sdc"), blockDev("g", "sdc3", 8, 35, "sdc"),
		blockDev("g", "sdd", 8, 48, ""), blockDev("g", "nvme0n1", 259, 0, ""),
	}
	set := BuildDeviceSets(&discovery.Inventory{Groups: []discovery.Group{{Name: "g", Permissions: "rw", Sharing: exclusive(), Devices: devs}}},
		func(d *discovery.Device) []int64 { return numa[d.Name] })[0]
	all := set.IDs()

	sharedSet := BuildDeviceSets(&discovery.Inventory{Groups: []discovery.Group{{Name: "s", Permissions: "rw", Sharing: shared(3), Devices: devs[:3]}}},
		func(d *discovery.Device) []int64 { return numa[d.Name] })[0]

	tests := []struct {
		name      string
		set       *DeviceSet
		available []string
		must      []string
		size      int
		want      []string
	}{
		{"must-include only", set, all, []string{"sdc2"}, 1, []string{"sdc2"}},
		{"sibling partition first", set, all, []string{"sdb1"}, 2, []string{"sdb1", "sdb2"}},
		{"same NUMA node next", set, all, []string{"sdb1"}, 3, []string{"sdb1", "sdb2", "nvme0n1"}},
		{"NUMA before parent when the parent is full", set, all, []string{"sdc1", "sdc2", "sdc3"}, 4, []string{"sdc1", "sdc2", "sdc3", "sdd"}},
		{"best fit: the NUMA node with just enough", set, all, nil, 2, []string{"sdb1", "sdb2"}},
		{"best fit: a bigger request goes to the bigger node", set, all, nil, 3, []string{"sdc1", "sdc2", "sdc3"}},
		{"everything", set, all, nil, 7, []string{"sdc1", "sdc2", "sdc3", "sdd", "nvme0n1", "sdb1", "sdb2"}},
		{"only what is available", set, []string{"sdd", "sdb2"}, nil, 2, []string{"sdb2", "sdd"}},
		{"unknown IDs skipped", set, []string{"nope", "sdd"}, nil, 2, []string{"sdd"}},
		{"size 0", set, all, nil, 0, []string{}},
		{"shares: distinct devices before a second share", sharedSet, sharedSet.IDs(), nil, 3, []string{"sdb1_0", "sdb2_0", "sdc1_0"}},
		{"shares: then the same devices again", sharedSet, sharedSet.IDs(), []string{"sdc1_0"}, 4, []string{"sdc1_0", "sdb1_0", "sdb2_0", "sdb1_1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.set.Preferred(tc.available, tc.must, tc.size)
			if !equal(got, tc.want) {
				t.Errorf("Preferred(%v, must %v, %d) = %v, want %v", tc.available, tc.must, tc.size, got, tc.want)
			}
		})
	}
}

// Large requests of shares take distinct devices first, quickly.
func TestPreferredLarge(t *testing.T) {
	var devs []discovery.Device
	for i := 0; i < 100; i++ {
		devs = append(devs, blockDev("g", fmt.Sprintf("loop%d", i), 7, uint32(i), ""))
	}
	set := BuildDeviceSets(&discovery.Inventory{Groups: []discovery.Group{{Name: "g", Permissions: "rw", Sharing: shared(100), Devices: devs}}}, nil)[0]
	got := set.Preferred(set.IDs(), nil, 2000)
	if len(got) != 2000 {
		t.Fatalf("%d IDs", len(got))
	}
	seen := map[string]bool{}
	for _, id := range got[:100] {
		u, _ := set.Unit(id)
		if seen[u.Device] {
			t.Fatalf("device %s twice among the first 100", u.Device)
		}
		seen[u.Device] = true
	}
}
