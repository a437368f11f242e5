package driver

// The scheduler's real allocator (k8s.io/dynamic-resource-allocation/
// structured, with a 1.37 scheduler's features: partitionable devices on)
// against what BuildResources publishes for disks with partitions: two
// claims never hold devices that share blocks.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// overlapInventoryForTest is disk sdd with partitions sdd1 and sdd2, disk
// sde without partitions, and sdg1, a partition whose disk is not published
// (like a free partition of the root disk).
func overlapInventoryForTest() *discovery.Inventory {
	devs := diskWithPartitionsForTest("sdd", 3, 2)
	sde := diskForTest("sde", "/dev/sde", 100<<30)
	sde.Minor = 64
	sdg := diskForTest("sdg", "/dev/sdg", 100<<30)
	sdg.Minor = 96
	return inventoryForTest(groupForTest("disks", append(devs, sde, partitionForTest(sdg, 1))...))
}

// overlapTruth is which devices of overlapInventoryForTest share blocks,
// written out by hand.
var overlapTruth = map[string][]string{
	"sdd":  {"sdd1", "sdd2"},
	"sdd1": {"sdd"},
	"sdd2": {"sdd"},
}

var overlapDeviceNames = []string{"sdd", "sdd1", "sdd2", "sde", "sdg1"}

// holders maps each allocated device to the claims that hold it.
func holders(claims []*resourceapi.ResourceClaim) map[string][]string {
	out := map[string][]string{}
	for _, c := range claims {
		for _, d := range allocatedDeviceNames(c) {
			out[d] = append(out[d], c.Name)
		}
	}
	return out
}

// summary names what claims got, for messages: "[c0:sdd c1:sdd1]".
func summary(claims []*resourceapi.ResourceClaim) string {
	var out []string
	for _, c := range claims {
		out = append(out, c.Name+":"+strings.Join(allocatedDeviceNames(c), "+"))
	}
	return fmt.Sprint(out)
}

// checkNoOverlap fails when two claims hold the same device or two that
// share blocks.
func checkNoOverlap(t *testing.T, claims []*resourceapi.ResourceClaim) {
	t.Helper()
	h := holders(claims)
	for d, cs := range h {
		if len(cs) > 1 {
			t.Errorf("device %s is held by claims %v", d, cs)
		}
		for _, o := range overlapTruth[d] {
			for _, c := range cs {
				for _, oc := range h[o] {
					if oc != c {
						t.Errorf("claim %s holds %s and claim %s holds %s, which share blocks", c, d, oc, o)
					}
				}
			}
		}
	}
}

// blocked reports whether device d cannot be allocated because it or a
// device that shares blocks with it is held.
func blocked(h map[string][]string, d string) bool {
	if len(h[d]) > 0 {
		return true
	}
	for _, o := range overlapTruth[d] {
		if len(h[o]) > 0 {
			return true
		}
	}
	return false
}

// Claims for "any block device", one after the other: each gets a device
// that shares no blocks with another claim's, until none is left: sde,
// sdg1, sdd1 and sdd2 (the partitions come before their disk, which would
// block both).
func TestAllocOverlapAnyDeviceOneAfterTheOther(t *testing.T) {
	env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
	var got []string
	for i := range 6 {
		claims, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
		if err != nil {
			t.Fatal(err)
		}
		if claims == nil {
			break
		}
		env.commit(claims...)
		got = append(got, allocatedDeviceNames(claims[0])...)
		checkNoOverlap(t, env.allocated)
	}
	if want := []string{"sde", "sdg1", "sdd1", "sdd2"}; !slices.Equal(got, want) {
		t.Errorf("allocated %v, want %v", got, want)
	}
}

// Many claims in one scheduling cycle (one Allocate call), and one claim
// with several devices.
func TestAllocOverlapManyClaimsAtOnce(t *testing.T) {
	env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
	var claims []*resourceapi.ResourceClaim
	for i := range 4 {
		claims = append(claims, claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
	}
	got, err := env.tryAllocate(claims...)
	if err != nil || got == nil {
		t.Fatalf("4 claims: %s %v", summary(got), err)
	}
	checkNoOverlap(t, got)
	got, err = env.tryAllocate(append(claims, claimForTest("c4", exactRequestForTest("r", "")))...)
	if err != nil || got != nil {
		t.Fatalf("5 claims on 4 independent devices: got %s, %v", summary(got), err)
	}

	// The disk and a partition never go together, even to one claim.
	both := claimForTest("both", exactRequestForTest("a", "", pathIs("/dev/sdd")), exactRequestForTest("b", "", pathIs("/dev/sdd1")))
	if got, err := env.tryAllocate(both); err != nil || got != nil {
		t.Fatalf("disk and partition in one claim: got %s, %v", summary(got), err)
	}
	// Two partitions of one disk do.
	parts := claimForTest("parts", exactRequestForTest("a", "", pathIs("/dev/sdd1")), exactRequestForTest("b", "", pathIs("/dev/sdd2")))
	if got, err := env.tryAllocate(parts); err != nil || got == nil {
		t.Fatalf("two partitions in one claim: got %s, %v", summary(got), err)
	}
}

// Claims for given devices in every order: a device is allocated exactly
// when neither it nor a device that shares blocks with it is held.
func TestAllocOverlapEveryOrder(t *testing.T) {
	var permute func(prefix, rest []string, yield func([]string))
	permute = func(prefix, rest []string, yield func([]string)) {
		if len(rest) == 0 {
			yield(prefix)
			return
		}
		for i := range rest {
			next := slices.Concat(rest[:i:i], rest[i+1:])
			permute(append(slices.Clip(prefix), rest[i]), next, yield)
		}
	}
	orders := 0
	permute(nil, overlapDeviceNames, func(order []string) {
		orders++
		env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
		for i, d := range order {
			wantOK := !blocked(holders(env.allocated), d)
			got, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "", pathIs("/dev/"+d))))
			if err != nil {
				t.Fatal(err)
			}
			if (got != nil) != wantOK {
				t.Fatalf("order %v: claim for %s allocated=%v, want %v (held: %v)", order, d, got != nil, wantOK, holders(env.allocated))
			}
			env.commit(got...)
		}
		checkNoOverlap(t, env.allocated)
	})
	if orders != 120 {
		t.Fatalf("tried %d orders, want 120", orders)
	}
}

// Claims come and go at random, for "any device" and for given devices.
func TestAllocOverlapChurn(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
	allocations := 0
	for step := range 400 {
		if len(env.allocated) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(env.allocated))
			env.allocated = slices.Delete(env.allocated, i, i+1)
			continue
		}
		name := fmt.Sprintf("c%d", step)
		var claim *resourceapi.ResourceClaim
		want := false
		h := holders(env.allocated)
		if d := rng.IntN(len(overlapDeviceNames) + 1); d < len(overlapDeviceNames) {
			claim = claimForTest(name, exactRequestForTest("r", "", pathIs("/dev/"+overlapDeviceNames[d])))
			want = !blocked(h, overlapDeviceNames[d])
		} else {
			claim = claimForTest(name, exactRequestForTest("r", ""))
			for _, n := range overlapDeviceNames {
				want = want || !blocked(h, n)
			}
		}
		got, err := env.tryAllocate(claim)
		if err != nil {
			t.Fatal(err)
		}
		if (got != nil) != want {
			t.Fatalf("step %d: %v allocated=%v, want %v (held: %v)", step, claim.Spec.Devices.Requests[0].Exactly.Selectors, got != nil, want, h)
		}
		if got != nil {
			allocations++
			env.commit(got...)
			checkNoOverlap(t, env.allocated)
		}
	}
	if allocations < 100 {
		t.Errorf("only %d allocations in 400 steps", allocations)
	}
}

// A shared disk goes to several claims at once, and then its partitions to
// none (and the other way round): sharing a device is not sharing the
// devices that overlap it.
func TestAllocOverlapSharedDisk(t *testing.T) {
	devs := diskWithPartitionsForTest("sdd", 3, 2)
	inv := inventoryForTest(sharedGroupForTest("whole", 2, devs[0]), groupForTest("parts", devs[1:]...))
	env := newAllocEnv(t, "node-1", inv, nil)
	disk := func(name string) *resourceapi.ResourceClaim {
		return claimForTest(name, exactRequestForTest("r", "", pathIs("/dev/sdd")))
	}
	part := func(name string) *resourceapi.ResourceClaim {
		return claimForTest(name, exactRequestForTest("r", "", pathIs("/dev/sdd1")))
	}
	for _, c := range []string{"a", "b"} {
		got, err := env.tryAllocate(disk(c))
		if err != nil || got == nil {
			t.Fatalf("share %s of the disk: %s %v", c, summary(got), err)
		}
		env.commit(got...)
	}
	if got, err := env.tryAllocate(part("p")); err != nil || got != nil {
		t.Fatalf("partition of a shared disk in use: got %s, %v", summary(got), err)
	}
	env.allocated = nil
	got, err := env.tryAllocate(part("p"))
	if err != nil || got == nil {
		t.Fatalf("partition of a free disk: %s %v", summary(got), err)
	}
	env.commit(got...)
	if got, err := env.tryAllocate(disk("a")); err != nil || got != nil {
		t.Fatalf("shared disk with a partition in use: got %s, %v", summary(got), err)
	}
}

// dropPartitionableFields does to slices what an API server with
// DRAPartitionableDevices off (the default of 1.34 and 1.35) does on
// create and update (pkg/registry/resource/resourceslice/strategy.go,
// dropDisabledDRAPartitionableDevicesFields).
func dropPartitionableFields(in []*resourceapi.ResourceSlice) []*resourceapi.ResourceSlice {
	out := make([]*resourceapi.ResourceSlice, len(in))
	for i, s := range in {
		s = s.DeepCopy()
		s.Spec.SharedCounters = nil
		s.Spec.PerDeviceNodeSelection = nil
		for j := range s.Spec.Devices {
			s.Spec.Devices[j].ConsumesCounters = nil
		}
		out[i] = s
	}
	return out
}

// On 1.34 and 1.35 the API server drops the counters: the counters slice
// becomes an empty slice, still valid and counted in the pool, and every
// device can be allocated, overlaps included; Prepare then refuses the
// second of two overlapping claims (TestStateRefusesOverlappingDiskAndPartition).
// A scheduler with the feature off on an API server with it on skips the
// devices that consume counters: overlaps are never allocated at all.
func TestAllocOverlapWithoutPartitionableDevices(t *testing.T) {
	old := allocTestFeatures
	old.PartitionableDevices = false

	t.Run("fields dropped by the API server", func(t *testing.T) {
		env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
		env.slices = dropPartitionableFields(env.slices)
		env.features = &old
		if err := ValidateResources(resourcesFromSlices(env.slices)); err != nil {
			t.Fatalf("the slices the API server stores are invalid: %v", err)
		}
		for i := range overlapDeviceNames {
			got, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
			if err != nil || got == nil {
				t.Fatalf("claim %d: %s %v", i, summary(got), err)
			}
			env.commit(got...)
		}
		if h := holders(env.allocated); len(h) != len(overlapDeviceNames) {
			t.Errorf("allocated %v", h)
		}
	})
	t.Run("scheduler without the feature", func(t *testing.T) {
		env := newAllocEnv(t, "node-1", overlapInventoryForTest(), nil)
		env.features = &old
		var got []string
		for i := range overlapDeviceNames {
			claims, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
			if err != nil {
				t.Fatal(err)
			}
			if claims == nil {
				break
			}
			env.commit(claims...)
			got = append(got, allocatedDeviceNames(claims[0])...)
		}
		if want := []string{"sde", "sdg1"}; !slices.Equal(got, want) {
			t.Errorf("allocated %v, want %v", got, want)
		}
	})
}

// resourcesFromSlices is the inverse of resourceSlicesFromResources.
func resourcesFromSlices(in []*resourceapi.ResourceSlice) resourceslice.DriverResources {
	res := resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{}}
	for _, s := range in {
		p := res.Pools[s.Spec.Pool.Name]
		p.Slices = append(p.Slices, resourceslice.Slice{Devices: s.Spec.Devices, SharedCounters: s.Spec.SharedCounters})
		res.Pools[s.Spec.Pool.Name] = p
	}
	return res
}
