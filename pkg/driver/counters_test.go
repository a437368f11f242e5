package driver

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// partitionForTest is partition n of disk, as discovery reports it.
func partitionForTest(disk discovery.Device, n int) discovery.Device {
	p := diskForTest(fmt.Sprintf("%s%d", disk.Name, n), fmt.Sprintf("%s%d", disk.Path, n), 1<<30)
	p.Major, p.Minor = disk.Major, disk.Minor+uint32(n)
	p.Block.Kind, p.Block.Parent, p.Block.Serial = discovery.KindPartition, disk.Block.KernelName, ""
	p.Block.Under = []string{disk.Block.KernelName}
	return p
}

// diskWithPartitionsForTest is a disk with minor 16*index and its n
// partitions.
func diskWithPartitionsForTest(name string, index, n int) []discovery.Device {
	d := diskForTest(name, "/dev/"+name, 100<<30)
	d.Minor = uint32(16 * index)
	out := []discovery.Device{d}
	for i := 1; i <= n; i++ {
		out = append(out, partitionForTest(d, i))
	}
	return out
}

// consumed lists what a device consumes as "set/counter", sorted.
func consumed(d *resourceapi.Device) []string {
	var out []string
	for _, c := range d.ConsumesCounters {
		for name, v := range c.Counters {
			if v.Value.Cmp(resource.MustParse("1")) != 0 {
				out = append(out, fmt.Sprintf("%s/%s=%s", c.CounterSet, name, v.Value.String()))
				continue
			}
			out = append(out, c.CounterSet+"/"+name)
		}
	}
	slices.Sort(out)
	return out
}

// counterSetsOf returns the pool's counter sets as "set" -> sorted counter
// names, and checks that no slice holds both devices and counters.
func counterSetsOf(t *testing.T, res resourceslice.DriverResources, node string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for i, s := range res.Pools[node].Slices {
		if len(s.SharedCounters) > 0 && len(s.Devices) > 0 {
			t.Errorf("slice %d holds devices and counters", i)
		}
		for _, cs := range s.SharedCounters {
			names := slices.Sorted(maps.Keys(cs.Counters))
			for _, n := range names {
				if v := cs.Counters[n].Value; v.Cmp(resource.MustParse("1")) != 0 {
					t.Errorf("counter %s/%s has value %s, want 1", cs.Name, n, v.String())
				}
			}
			out[cs.Name] = names
		}
	}
	return out
}

func TestCountersDiskAndPartitions(t *testing.T) {
	devs := diskWithPartitionsForTest("sdd", 3, 2)
	sde := diskForTest("sde", "/dev/sde", 100<<30)
	sde.Minor = 64
	res, withheld, err := BuildResourcesWithheld("node-1", inventoryForTest(groupForTest("disks", append(devs, sde)...)))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	if len(withheld) != 0 {
		t.Errorf("withheld %v", withheld)
	}
	if got, want := counterSetsOf(t, res, "node-1"), map[string][]string{"sdd": {"sdd1", "sdd2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("counter sets: got %v, want %v", got, want)
	}
	for name, want := range map[string][]string{
		"sdd":  {"sdd/sdd1", "sdd/sdd2"},
		"sdd1": {"sdd/sdd1"},
		"sdd2": {"sdd/sdd2"},
		"sde":  nil,
	} {
		if got := consumed(findDevice(t, res, name)); !slices.Equal(got, want) {
			t.Errorf("%s consumes %v, want %v", name, got, want)
		}
	}
	// Devices without overlaps come first, then those that block fewer
	// others; the counters come last, in a slice of their own.
	names, perSlice := publishedNames(t, res, "node-1")
	if want := []string{"sde", "sdd1", "sdd2", "sdd"}; !slices.Equal(names, want) {
		t.Errorf("order: got %v, want %v", names, want)
	}
	if want := []int{1, 3, 0}; !slices.Equal(perSlice, want) {
		t.Errorf("devices per slice: got %v, want %v", perSlice, want)
	}
}

// A device consumes at most 32 counters of one set, and a set holds at
// most 32: a disk with 32 partitions is expressed, one with 33 is not
// published (its partitions are, without counters: they do not overlap).
func TestCountersLimitWithholdsTheDisk(t *testing.T) {
	for _, parts := range []int{32, 33} {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			other := diskWithPartitionsForTest("sdb", 1, 1)
			big := diskWithPartitionsForTest("sdc", 2, parts)
			res, withheld, err := BuildResourcesWithheld("node-1", inventoryForTest(groupForTest("disks", append(other, big...)...)))
			if err != nil {
				t.Fatal(err)
			}
			checkPublishable(t, res)
			sets := counterSetsOf(t, res, "node-1")
			if got := sets["sdb"]; !slices.Equal(got, []string{"sdb1"}) {
				t.Errorf("the small disk's set: got %v", got)
			}
			names, _ := publishedNames(t, res, "node-1")
			if parts == 32 {
				if n := len(sets["sdc"]); n != 32 || len(consumed(findDevice(t, res, "sdc"))) != 32 {
					t.Errorf("sdc: set of %d counters, consumes %v", n, consumed(findDevice(t, res, "sdc")))
				}
				if len(withheld) != 0 {
					t.Errorf("withheld %v", withheld)
				}
				return
			}
			if slices.Contains(names, "sdc") {
				t.Errorf("the disk with %d partitions is published", parts)
			}
			if _, ok := sets["sdc"]; ok {
				t.Errorf("counter set for the withheld disk: %v", sets["sdc"])
			}
			for i := 1; i <= parts; i++ {
				name := fmt.Sprintf("sdc%d", i)
				if !slices.Contains(names, name) {
					t.Errorf("%s not published", name)
				} else if c := consumed(findDevice(t, res, name)); len(c) != 0 {
					t.Errorf("%s consumes %v", name, c)
				}
			}
			if len(withheld) != 1 || withheld[0].Path != "/dev/sdc" ||
				!strings.Contains(withheld[0].Reason, `device "sdc" shares blocks with /dev/sdc1, /dev/sdc10, /dev/sdc11 and 30 more`) ||
				!strings.Contains(withheld[0].Reason, "needs 33 overlap counters") ||
				!strings.Contains(withheld[0].Reason, "exclude some of them") {
				t.Errorf("withheld: %+v", withheld)
			}
		})
	}
}

// More than 8 counter sets need more than one counters slice.
func TestCountersManySets(t *testing.T) {
	var devs []discovery.Device
	for i := range 10 {
		devs = append(devs, diskWithPartitionsForTest(fmt.Sprintf("vd%c", 'a'+i), i, 2)...)
	}
	res, err := BuildResources("node-1", inventoryForTest(groupForTest("disks", devs...)))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	var sets []int
	for _, s := range res.Pools["node-1"].Slices {
		if len(s.SharedCounters) > 0 {
			sets = append(sets, len(s.SharedCounters))
		}
	}
	if !slices.Equal(sets, []int{8, 2}) {
		t.Errorf("counter sets per slice: got %v, want [8 2]", sets)
	}
}

// What counts is the published device: a bundle consumes the counters of
// all its nodes, and a stack inside one bundle needs no counter.
func TestCountersBundle(t *testing.T) {
	devs := diskWithPartitionsForTest("sdd", 3, 2)
	res, err := BuildResources("node-1", inventoryForTest(
		bundleGroupForTest("whole", "whole", devs[0], devs[1]),
		groupForTest("parts", devs[2]),
	))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	if got, want := counterSetsOf(t, res, "node-1"), map[string][]string{"sdd2": {"sdd2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("counter sets: got %v, want %v", got, want)
	}
	if got := consumed(findDevice(t, res, "whole")); !slices.Equal(got, []string{"sdd2/sdd2"}) {
		t.Errorf("bundle consumes %v", got)
	}
	if got := consumed(findDevice(t, res, "sdd2")); !slices.Equal(got, []string{"sdd2/sdd2"}) {
		t.Errorf("sdd2 consumes %v", got)
	}
}

// A device-mapper device over two published paths: all three overlap (the
// paths are one LUN), through a layer that is not published as well.
func TestCountersStackedDevices(t *testing.T) {
	sdc, sdd := diskForTest("sdc", "/dev/sdc", 10<<30), diskForTest("sdd", "/dev/sdd", 10<<30)
	mp := diskForTest("dm-0", "/dev/dm-0", 10<<30)
	mp.Block.Kind, mp.Block.Slaves, mp.Block.Under = discovery.KindMpath, []string{"sdc", "sdd"}, []string{"sdc", "sdd"}
	lv := diskForTest("dm-2", "/dev/dm-2", 1<<30)
	lv.Block.Kind, lv.Block.Slaves, lv.Block.Under = discovery.KindLVM, []string{"dm-1"}, []string{"dm-1", "sde"}
	sde := diskForTest("sde", "/dev/sde", 10<<30)
	res, err := BuildResources("node-1", inventoryForTest(groupForTest("disks", sdc, sdd, sde), groupForTest("dm", mp, lv)))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	if got, want := counterSetsOf(t, res, "node-1"), map[string][]string{"dm-0": {"dm-0"}, "dm-2": {"dm-2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("counter sets: got %v, want %v", got, want)
	}
	for name, want := range map[string][]string{
		"dm-0": {"dm-0/dm-0"}, "sdc": {"dm-0/dm-0"}, "sdd": {"dm-0/dm-0"}, "dm-2": {"dm-2/dm-2"}, "sde": {"dm-2/dm-2"},
	} {
		if got := consumed(findDevice(t, res, name)); !slices.Equal(got, want) {
			t.Errorf("%s consumes %v, want %v", name, got, want)
		}
	}
}

func TestValidateCountersRejects(t *testing.T) {
	base := func(t *testing.T) resourceslice.DriverResources {
		res, err := BuildResources("node-1", inventoryForTest(groupForTest("disks", diskWithPartitionsForTest("sdd", 3, 2)...)))
		if err != nil {
			t.Fatal(err)
		}
		checkPublishable(t, res)
		return res
	}
	// Slice 0 holds sdd1, sdd2, sdd; slice 1 the counter set "sdd".
	dev := func(res resourceslice.DriverResources, i int) *resourceapi.Device {
		return &res.Pools["node-1"].Slices[0].Devices[i]
	}
	set := func(res resourceslice.DriverResources) *resourceapi.CounterSet {
		return &res.Pools["node-1"].Slices[1].SharedCounters[0]
	}
	one := resourceapi.Counter{Value: resource.MustParse("1")}
	tests := []struct {
		name   string
		mutate func(res *resourceslice.DriverResources)
		want   []string
	}{{
		name:   "counter set missing from the pool",
		mutate: func(res *resourceslice.DriverResources) { dev(*res, 0).ConsumesCounters[0].CounterSet = "sdx" },
		want:   []string{`device "sdd1": devices[0].consumesCounters[0]: counter set "sdx" is in none of the pool's slices`},
	}, {
		name:   "counter missing from its set",
		mutate: func(res *resourceslice.DriverResources) { delete(set(*res).Counters, "sdd2") },
		want:   []string{`device "sdd2": devices[1].consumesCounters[0]: counter "sdd2" is not in counter set "sdd"`},
	}, {
		name: "duplicate counter set name",
		mutate: func(res *resourceslice.DriverResources) {
			p := res.Pools["node-1"]
			p.Slices = append(p.Slices, resourceslice.Slice{SharedCounters: []resourceapi.CounterSet{*set(*res)}})
			res.Pools["node-1"] = p
		},
		want: []string{`slice 2: sharedCounters[0]: counter set name "sdd" is also used in slice 1`},
	}, {
		name: "33 counters in a set",
		mutate: func(res *resourceslice.DriverResources) {
			for i := range 31 {
				set(*res).Counters[fmt.Sprintf("c%d", i)] = one
			}
		},
		want: []string{`slice 1: sharedCounters[0]: counters: 33 counters, more than the 32 allowed`},
	}, {
		name: "three counter sets consumed",
		mutate: func(res *resourceslice.DriverResources) {
			d := dev(*res, 0)
			d.ConsumesCounters = append(d.ConsumesCounters, d.ConsumesCounters[0], d.ConsumesCounters[0])
		},
		want: []string{"devices[0].consumesCounters: 3 entries, more than the 2 allowed", `counter set "sdd" appears twice`},
	}, {
		name:   "counter name not a DNS label",
		mutate: func(res *resourceslice.DriverResources) { set(*res).Counters["Bad_Name"] = one },
		want:   []string{`sharedCounters[0]: counters[Bad_Name]: name: a lowercase RFC 1123 label`},
	}, {
		name: "empty consumption",
		mutate: func(res *resourceslice.DriverResources) {
			dev(*res, 0).ConsumesCounters[0].Counters = nil
		},
		want: []string{`devices[0].consumesCounters[0]: counters: must not be empty`},
	}, {
		name: "devices and counters in one slice",
		mutate: func(res *resourceslice.DriverResources) {
			p := res.Pools["node-1"]
			p.Slices[0].SharedCounters = p.Slices[1].SharedCounters
			p.Slices = p.Slices[:1]
			res.Pools["node-1"] = p
		},
		want: []string{"slice 0: only one of devices and sharedCounters may be set"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := base(t)
			tc.mutate(&res)
			err := ValidateResources(res)
			if err == nil {
				t.Fatal("ValidateResources accepted the mutated resources")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}
