package driver

import (
	"fmt"
	"slices"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// counters checks a pool's shared counters and what its devices consume:
// the API server's rules (pkg/apis/resource/validation, 1.37:
// validateCounterSet, validateDeviceCounterConsumption) and the references
// across slices that only the allocator checks. A device that names a
// counter set or counter the pool lacks makes the scheduler treat the whole
// pool as invalid, and then nothing on the node can be allocated.
func (v *validator) counters(pool string, p resourceslice.Pool) {
	sets := map[string]map[string]resourceapi.Counter{}
	setSlice := map[string]int{}
	for si := range p.Slices {
		for ci, cs := range p.Slices[si].SharedCounters {
			at := fmt.Sprintf("pool %q, slice %d: sharedCounters[%d]", pool, si, ci)
			for _, msg := range validation.IsDNS1123Label(cs.Name) {
				v.addf("%s: name %q: %s", at, cs.Name, msg)
			}
			if prev, dup := setSlice[cs.Name]; dup {
				v.addf("%s: counter set name %q is also used in slice %d; names must be unique in the pool", at, cs.Name, prev)
				continue
			}
			setSlice[cs.Name] = si
			sets[cs.Name] = cs.Counters
			v.counterMap(at+": counters", cs.Counters, resourceapi.ResourceSliceMaxCountersPerCounterSet)
		}
	}
	for si := range p.Slices {
		for di := range p.Slices[si].Devices {
			d := &p.Slices[si].Devices[di]
			at := fmt.Sprintf("pool %q, slice %d, device %q: devices[%d].consumesCounters", pool, si, d.Name, di)
			if n := len(d.ConsumesCounters); n > resourceapi.ResourceSliceMaxDeviceCounterConsumptionsPerDevice {
				v.addf("%s: %d entries, more than the %d allowed", at, n, resourceapi.ResourceSliceMaxDeviceCounterConsumptionsPerDevice)
			}
			seen := map[string]bool{}
			for ci, cc := range d.ConsumesCounters {
				at := fmt.Sprintf("%s[%d]", at, ci)
				for _, msg := range validation.IsDNS1123Label(cc.CounterSet) {
					v.addf("%s: counterSet %q: %s", at, cc.CounterSet, msg)
				}
				if seen[cc.CounterSet] {
					v.addf("%s: counter set %q appears twice; one entry per counter set", at, cc.CounterSet)
				}
				seen[cc.CounterSet] = true
				v.counterMap(at+": counters", cc.Counters, resourceapi.ResourceSliceMaxCountersPerDeviceCounterConsumption)
				set, ok := sets[cc.CounterSet]
				if !ok {
					v.addf("%s: counter set %q is in none of the pool's slices; the scheduler would treat the whole pool as invalid", at, cc.CounterSet)
					continue
				}
				for _, c := range sortedKeys(cc.Counters) {
					if _, ok := set[c]; !ok {
						v.addf("%s: counter %q is not in counter set %q; the scheduler would treat the whole pool as invalid", at, c, cc.CounterSet)
					}
				}
			}
		}
	}
}

// counterMap checks a map of counters: not empty, at most limit entries,
// names DNS labels, values not negative.
func (v *validator) counterMap(at string, counters map[string]resourceapi.Counter, limit int) {
	switch n := len(counters); {
	case n == 0:
		v.addf("%s: must not be empty", at)
	case n > limit:
		v.addf("%s: %d counters, more than the %d allowed", at, n, limit)
	}
	for _, name := range sortedKeys(counters) {
		for _, msg := range validation.IsDNS1123Label(name) {
			v.addf("%s[%s]: name: %s", at, name, msg)
		}
		if c := counters[name]; c.Value.Sign() < 0 {
			v.addf("%s[%s]: value %s must not be negative", at, name, c.Value.String())
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
