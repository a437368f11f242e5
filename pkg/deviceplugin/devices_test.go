package deviceplugin

import (
	"fmt"
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

func TestBuildDeviceSets(t *testing.T) {
	disks := func(group string, n int) []discovery.Device {
		var out []discovery.Device
		for i := 0; i < n; i++ {
			out = append(out, blockDev(group, fmt.Sprintf("sd%c", 'b'+i), 8, uint32(16*(i+1)), ""))
		}
		return out
	}
	tests := []struct {
		name      string
		group     discovery.Group
		wantIDs   []string // nil: check only the count
		wantCount int
		perDevice int
		capped    bool
	}{
		{
			name:    "exclusive: one ID per node, the discovery name",
			group:   discovery.Group{Name: "dev", Sharing: exclusive(), Devices: disks("dev", 3)},
			wantIDs: []string{"sdb", "sdc", "sdd"}, perDevice: 1,
		},
		{
			name:    "bundle: one ID for the whole group",
			group:   discovery.Group{Name: "db2", Sharing: exclusive(), Bundle: true, BundleName: "db2", Devices: disks("db2", 3)},
			wantIDs: []string{"db2"}, perDevice: 1,
		},
		{
			name:    "empty bundle: no ID",
			group:   discovery.Group{Name: "db2", Sharing: exclusive(), Bundle: true, BundleName: "db2"},
			wantIDs: []string{}, perDevice: 1,
		},
		{
			name:    "shared with maxConsumers: that many IDs per device",
			group:   discovery.Group{Name: "dev", Sharing: shared(2), Devices: disks("dev", 2)},
			wantIDs: []string{"sdb_0", "sdb_1", "sdc_0", "sdc_1"}, perDevice: 2,
		},
		{
			name:    "shared bundle with maxConsumers (old upper-limit)",
			group:   discovery.Group{Name: "dev", Sharing: shared(2), Bundle: true, BundleName: "dev", Devices: disks("dev", 5)},
			wantIDs: []string{"dev_0", "dev_1"}, perDevice: 2,
		},
		{
			name:    "shared bundle without maxConsumers (old config.json): one ID per node, the old capacity",
			group:   discovery.Group{Name: "dev", Sharing: shared(0), Bundle: true, BundleName: "dev", Devices: disks("dev", 4)},
			wantIDs: []string{"dev_0", "dev_1", "dev_2", "dev_3"}, perDevice: 4,
		},
		{
			name:      "shared device without maxConsumers: DefaultSharedIDs",
			group:     discovery.Group{Name: "fuse", Sharing: shared(0), Devices: []discovery.Device{charDev("fuse", "fuse", "/dev/fuse", 10, 229)}},
			wantCount: DefaultSharedIDs, perDevice: DefaultSharedIDs,
		},
		{
			name:      "shared beyond MaxIDsPerResource: capped per device",
			group:     discovery.Group{Name: "dev", Sharing: shared(1 << 20), Devices: disks("dev", 3)},
			wantCount: 3 * (MaxIDsPerResource / 3), perDevice: MaxIDsPerResource / 3, capped: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.group.Permissions == "" {
				tc.group.Permissions = "rw"
			}
			sets := BuildDeviceSets(&discovery.Inventory{Groups: []discovery.Group{tc.group}}, nil)
			if len(sets) != 1 {
				t.Fatalf("%d sets", len(sets))
			}
			s := sets[0]
			if s.Resource != "power-dev-plugin/"+tc.group.Name || s.Group != tc.group.Name || s.Permissions != "rw" {
				t.Errorf("set %s %s %s", s.Resource, s.Group, s.Permissions)
			}
			ids := s.IDs()
			if tc.wantIDs != nil && !equal(ids, tc.wantIDs) {
				t.Errorf("IDs %v, want %v", ids, tc.wantIDs)
			}
			if tc.wantIDs == nil && len(ids) != tc.wantCount {
				t.Errorf("%d IDs, want %d", len(ids), tc.wantCount)
			}
			if s.PerDevice != tc.perDevice || s.Capped != tc.capped {
				t.Errorf("perDevice %d capped %v, want %d %v", s.PerDevice, s.Capped, tc.perDevice, tc.capped)
			}
			list := s.ListAndWatchResponse().Devices
			if len(list) != len(ids) {
				t.Fatalf("ListAndWatch has %d devices for %d IDs", len(list), len(ids))
			}
			seen := map[string]bool{}
			for i, d := range list {
				if d.ID != ids[i] || d.Health != "Healthy" || d.Topology != nil {
					t.Errorf("device %v", d)
				}
				if seen[d.ID] {
					t.Errorf("duplicate ID %s", d.ID)
				}
				seen[d.ID] = true
			}
			for _, id := range ids {
				u, ok := s.Unit(id)
				if !ok {
					t.Fatalf("Unit(%s) missing", id)
				}
				if tc.group.Bundle && len(u.Nodes) != len(tc.group.Devices) {
					t.Errorf("bundle unit %s has %d nodes, want %d", id, len(u.Nodes), len(tc.group.Devices))
				}
				if !tc.group.Bundle && len(u.Nodes) != 1 {
					t.Errorf("unit %s has %d nodes", id, len(u.Nodes))
				}
			}
		})
	}
}

func TestShareIDsNeverMeetDeviceNames(t *testing.T) {
	// A device literally named like another's share would collide with
	// "-"; "_" is not in DNS labels.
	g := discovery.Group{Name: "dev", Permissions: "rw", Sharing: shared(2), Devices: []discovery.Device{
		blockDev("dev", "nbd1", 43, 32, ""), blockDev("dev", "nbd1-0", 43, 33, ""),
	}}
	s := BuildDeviceSets(&discovery.Inventory{Groups: []discovery.Group{g}}, nil)[0]
	if got, want := s.IDs(), []string{"nbd1_0", "nbd1_1", "nbd1-0_0", "nbd1-0_1"}; !equal(got, want) {
		t.Errorf("IDs %v, want %v", got, want)
	}
	if !strings.Contains(ShareID("x", 3), ShareSeparator) {
		t.Error("share IDs must carry the separator")
	}
}

func TestTopologyInList(t *testing.T) {
	inv := threeGroups()
	numa := func(d *discovery.Device) []int64 {
		switch d.Name {
		case "sdb":
			return []int64{1}
		case "dm-1":
			return []int64{0}
		case "dm-2":
			return []int64{1, -1}
		}
		return nil
	}
	sets := BuildDeviceSets(inv, numa)
	topo := map[string]string{}
	for _, s := range sets {
		for _, d := range s.ListAndWatchResponse().Devices {
			if d.Topology == nil {
				topo[d.ID] = "-"
				continue
			}
			var ns []string
			for _, n := range d.Topology.Nodes {
				ns = append(ns, fmt.Sprint(n.ID))
			}
			topo[d.ID] = strings.Join(ns, ",")
		}
	}
	want := map[string]string{"sdb": "1", "sdc": "-", "db2": "0,1", "crypto-nx-gzip_0": "-", "crypto-nx-gzip_1": "-", "crypto-nx-gzip_2": "-"}
	for id, w := range want {
		if topo[id] != w {
			t.Errorf("%s: NUMA %q, want %q", id, topo[id], w)
		}
	}
}

func TestContainerResponse(t *testing.T) {
	s := BuildDeviceSets(threeGroups(), nil)[1] // db2 bundle, rwm
	c, err := s.ContainerResponse([]string{"db2"}, func(dev string) string {
		if dev == "db2" {
			return CDIDeviceName(dev)
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := specPaths(c); !equal(got, []string{
		"/dev/dm-1 <- /dev/disk/by-id/dm-name-mpath1", "/dev/dm-2 <- /dev/disk/by-id/dm-name-mpath2",
		"/dev/mapper/mpath1 <- /dev/disk/by-id/dm-name-mpath1", "/dev/mapper/mpath2 <- /dev/disk/by-id/dm-name-mpath2"}) {
		t.Errorf("paths %v", got)
	}
	if len(c.CdiDevices) != 1 || c.CdiDevices[0].Name != "power-dev-plugin.io/device=db2" {
		t.Errorf("CDI %v", c.CdiDevices)
	}
	// A device the spec does not define gets DeviceSpecs only.
	c, err = s.ContainerResponse([]string{"db2"}, func(string) string { return "" })
	if err != nil || len(c.CdiDevices) != 0 || len(c.Devices) != 4 {
		t.Errorf("without CDI name: %v %v", c, err)
	}
	_, err = s.ContainerResponse([]string{"db2", "x", "y"}, nil)
	if err == nil || !strings.Contains(err.Error(), `power-dev-plugin/db2: unknown device ID(s) "x", "y"`) {
		t.Errorf("unknown IDs: %v", err)
	}
	if empty := EmptyDeviceSet("gone"); len(empty.IDs()) != 0 || empty.Resource != "power-dev-plugin/gone" {
		t.Errorf("empty set %+v", empty)
	}
}

func TestBuildCDISpec(t *testing.T) {
	spec, err := BuildCDISpec(BuildDeviceSets(threeGroups(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Kind != CDIKind || spec.Version == "" {
		t.Errorf("kind %s version %s", spec.Kind, spec.Version)
	}
	var names []string
	for _, d := range spec.Devices {
		names = append(names, d.Name)
	}
	// One CDI device per device, not per share ID.
	if want := []string{"crypto-nx-gzip", "db2", "sdb", "sdc"}; !equal(names, want) {
		t.Errorf("CDI devices %v, want %v", names, want)
	}
	if spec, err := BuildCDISpec(nil); spec != nil || err != nil {
		t.Errorf("no devices: %v %v", spec, err)
	}
	if CDISpecFile != "power-dev-plugin.io-device.json" {
		t.Errorf("spec file %s", CDISpecFile)
	}
}
