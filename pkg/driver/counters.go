package driver

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Overlap counters (partitionable devices)
//
// A disk and its partitions, or a device-mapper device and the devices it is
// built on, are separate devices to the scheduler but share blocks
// (discovery.Overlaps says which). Shared counters tell the scheduler: every
// stack (a device with published devices below it, see discovery.Stack)
// becomes one counter of value 1, named after the top device, and every
// published device in the stack consumes 1 of it. Two devices then get the
// same counter exactly when they overlap, so the scheduler never allocates
// both at once, in two claims or in one; partitions of one disk share no
// counter and stay independent. For a disk with partitions that is one
// counter per partition, all of which the disk consumes.
//
// What counts is the published DRA device: a bundle consumes the counters
// of all its nodes, and a stack that lies inside one device needs no
// counter. Devices linked by stacks form a component; each component is one
// counter set, named after the device that consumes the most counters, so
// every device consumes from exactly one set (the API allows two).
//
// API limits (k8s.io/api/resource/v1, 1.37): a set holds at most
// ResourceSliceMaxCountersPerCounterSet (32) counters and a device consumes
// at most ResourceSliceMaxCountersPerDeviceCounterConsumption (32) of one
// set. A component beyond either limit (a disk with more than 32 partitions)
// fails safe: the devices that others of the component are built on (the
// disk) are not published, which leaves only devices that do not overlap,
// and need no counters. A slice holds either devices or counter sets, at
// most ResourceSliceMaxCounterSets (8) of them, so the sets go into slices
// of their own after the device slices.

// overlapCounterValue is the value of every counter and what each consumer
// takes: one holder at a time.
var overlapCounterValue = resource.NewQuantity(1, resource.DecimalSI)

// counterPlan is what BuildResources adds to the devices for overlaps.
type counterPlan struct {
	sets []resourceapi.CounterSet
	// consumes maps a DRA device name to what it consumes.
	consumes map[string][]resourceapi.DeviceCounterConsumption
	// withheld maps a DRA device name to why it is not published.
	withheld map[string]string
	// excluded lists the withheld nodes with their reason, by path.
	excluded []discovery.Exclusion
}

// draDeviceName is the name of the DRA device that publishes d.
func draDeviceName(g *discovery.Group, d *discovery.Device) string {
	if g != nil && g.Bundle {
		return g.BundleName
	}
	return d.Name
}

// counterClique is one counter and the DRA devices that consume it.
type counterClique struct {
	counter string
	devices []string // sorted
}

func planCounters(inv *discovery.Inventory) *counterPlan {
	plan := &counterPlan{consumes: map[string][]resourceapi.DeviceCounterConsumption{}, withheld: map[string]string{}}
	o := discovery.FindOverlaps(inv)
	if len(o.Stacks) == 0 {
		return plan
	}

	var cliques []counterClique
	seen := map[string]bool{}
	uf := unionFind{}
	for _, s := range o.Stacks {
		devs := []string{draDeviceName(s.TopGroup, s.Top)}
		for _, b := range s.Below {
			devs = append(devs, draDeviceName(o.GroupOf(b), b))
		}
		slices.Sort(devs)
		devs = slices.Compact(devs)
		key := strings.Join(devs, "/")
		if len(devs) < 2 || seen[key] {
			continue
		}
		seen[key] = true
		cliques = append(cliques, counterClique{counter: s.Top.Name, devices: devs})
		for _, d := range devs[1:] {
			uf.union(devs[0], d)
		}
	}

	byComponent := map[string][]counterClique{}
	var roots []string
	for _, c := range cliques {
		r := uf.find(c.devices[0])
		if byComponent[r] == nil {
			roots = append(roots, r)
		}
		byComponent[r] = append(byComponent[r], c)
	}
	sort.Strings(roots)

	heldBack := o.HeldBack()
	for _, r := range roots {
		comp := byComponent[r]
		perDevice := map[string][]string{}
		for _, c := range comp {
			for _, d := range c.devices {
				perDevice[d] = append(perDevice[d], c.counter)
			}
		}
		most, mostName := 0, ""
		for d, cs := range perDevice {
			if len(cs) > most || len(cs) == most && d < mostName {
				most, mostName = len(cs), d
			}
		}
		if len(comp) > resourceapi.ResourceSliceMaxCountersPerCounterSet || most > resourceapi.ResourceSliceMaxCountersPerDeviceCounterConsumption {
			plan.withhold(heldBack, r, uf, len(comp), most)
			continue
		}
		set := resourceapi.CounterSet{Name: mostName, Counters: make(map[string]resourceapi.Counter, len(comp))}
		for _, c := range comp {
			set.Counters[c.counter] = resourceapi.Counter{Value: *overlapCounterValue}
		}
		plan.sets = append(plan.sets, set)
		for d, cs := range perDevice {
			m := make(map[string]resourceapi.Counter, len(cs))
			for _, c := range cs {
				m[c] = resourceapi.Counter{Value: *overlapCounterValue}
			}
			plan.consumes[d] = []resourceapi.DeviceCounterConsumption{{CounterSet: set.Name, Counters: m}}
		}
	}
	sort.Slice(plan.sets, func(i, j int) bool { return plan.sets[i].Name < plan.sets[j].Name })
	sort.Slice(plan.excluded, func(i, j int) bool { return plan.excluded[i].Path < plan.excluded[j].Path })
	return plan
}

// withhold fails safe for a component whose overlaps need more counters
// than the API allows: the DRA devices holding a node that another device
// of the component is built on are not published. The rest do not overlap
// (see discovery.Overlaps.HeldBack) and need no counters.
func (p *counterPlan) withhold(heldBack []discovery.HeldBack, root string, uf unionFind, counters, perDevice int) {
	for _, h := range heldBack {
		name := draDeviceName(h.Group, h.Device)
		if uf.find(name) != root {
			continue
		}
		what := fmt.Sprintf("device %q", name)
		if h.Group != nil && h.Group.Bundle {
			what = fmt.Sprintf("bundle %q (group %q)", name, h.Group.Name)
		}
		reason := fmt.Sprintf("not published in DRA mode: %s shares blocks with %s, built on it; telling the scheduler about this stack needs %d overlap counters (up to %d for one device), more than the %d the ResourceSlice API allows, so only the devices on top are published; exclude some of them from their group to publish this one",
			what, h.TopsText(), counters, perDevice, resourceapi.ResourceSliceMaxCountersPerCounterSet)
		if _, done := p.withheld[name]; !done {
			p.withheld[name] = reason
		}
		p.excluded = append(p.excluded, discovery.Exclusion{Path: h.Device.Path, Reason: reason})
	}
}

// counterSlices puts the counter sets into slices of their own.
func (p *counterPlan) counterSlices() []resourceslice.Slice {
	var out []resourceslice.Slice
	for chunk := range slices.Chunk(p.sets, resourceapi.ResourceSliceMaxCounterSets) {
		out = append(out, resourceslice.Slice{SharedCounters: slices.Clip(chunk)})
	}
	return out
}

// countersConsumed is how many counters a device consumes, over all sets.
func countersConsumed(d *resourceapi.Device) int {
	n := 0
	for _, c := range d.ConsumesCounters {
		n += len(c.Counters)
	}
	return n
}

// unionFind joins device names into components. Components are small
// (a disk and its partitions), so there is no path compression; the
// smaller name is the root, which keeps the result independent of order.
type unionFind map[string]string

func (u unionFind) find(x string) string {
	for {
		p, ok := u[x]
		if !ok {
			return x
		}
		x = p
	}
}

func (u unionFind) union(a, b string) {
	ra, rb := u.find(a), u.find(b)
	if ra == rb {
		return
	}
	if rb < ra {
		ra, rb = rb, ra
	}
	u[rb] = ra
}
