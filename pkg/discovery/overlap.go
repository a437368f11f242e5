package discovery

import (
	"fmt"
	"sort"
)

// This file is the one place that says which published block devices share
// blocks. DRA mode turns it into counters for the scheduler (pkg/driver),
// Prepare refuses on it as the last line of defence, and legacy mode serves
// only the top of each stack (pkg/deviceplugin). docs/design.md says why.

// fillUnder records in BlockInfo.Under, for every block device, all the
// devices it is built on, through any number of layers: a partition's disk,
// a device-mapper or md device's slaves, and what those are built on. It
// works on the whole set, so that a layer that is not published (held, in
// use) still links the devices above and below it.
func (s *blockSet) fillUnder() {
	for _, d := range s.list {
		seen := map[string]bool{d.info.KernelName: true}
		var under []string
		var walk func(b *blockDev)
		walk = func(b *blockDev) {
			for _, l := range directlyUnder(&b.info) {
				if seen[l] {
					continue
				}
				seen[l] = true
				under = append(under, l)
				if ld := s.byName[l]; ld != nil {
					walk(ld)
				}
			}
		}
		walk(d)
		sort.Strings(under)
		d.info.Under = under
	}
}

// directlyUnder lists the kernel names a device is built on directly.
func directlyUnder(b *BlockInfo) []string {
	if b.Parent == "" {
		return b.Slaves
	}
	return append([]string{b.Parent}, b.Slaves...)
}

// Stack is a published block device with the published block devices it is
// built on (directly or through other layers, published or not).
type Stack struct {
	Top      *Device
	TopGroup *Group
	// Below is sorted by Path.
	Below []*Device
}

// Overlaps says which published block devices of an inventory may reach the
// same blocks. Two devices overlap when one is built on the other (a disk
// and its partition, a device-mapper device and its paths, through any
// number of layers), or when both are under one published device (two
// paths of one multipath map, which are the same LUN; members of one RAID,
// which is cautious). Put differently: they overlap exactly when one Stack
// holds both.
//
// Unpublished devices only link layers (see BlockInfo.Under): paths of one
// LUN without a published map are not known to overlap.
type Overlaps struct {
	// Stacks are sorted by the top's Path; only tops with something
	// published below them have one.
	Stacks []Stack

	groupOf map[*Device]*Group
	of      map[*Device][]*Device
}

// FindOverlaps indexes the overlaps among inv's published block devices.
// The result points into inv, which must not change while it is used.
func FindOverlaps(inv *Inventory) *Overlaps {
	o := &Overlaps{groupOf: map[*Device]*Group{}, of: map[*Device][]*Device{}}
	if inv == nil {
		return o
	}
	byName := map[string]*Device{}
	for gi := range inv.Groups {
		g := &inv.Groups[gi]
		for di := range g.Devices {
			d := &g.Devices[di]
			if d.Block == nil || d.Block.KernelName == "" {
				continue
			}
			if _, dup := byName[d.Block.KernelName]; dup {
				continue
			}
			byName[d.Block.KernelName] = d
			o.groupOf[d] = g
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		top := byName[n]
		below := publishedUnder(top, byName)
		if len(below) == 0 {
			continue
		}
		o.Stacks = append(o.Stacks, Stack{Top: top, TopGroup: o.groupOf[top], Below: below})
	}
	sort.Slice(o.Stacks, func(i, j int) bool { return o.Stacks[i].Top.Path < o.Stacks[j].Top.Path })

	pairs := map[[2]*Device]bool{}
	add := func(a, b *Device) {
		if a == b || pairs[[2]*Device{a, b}] {
			return
		}
		pairs[[2]*Device{a, b}] = true
		o.of[a] = append(o.of[a], b)
	}
	for _, s := range o.Stacks {
		members := append([]*Device{s.Top}, s.Below...)
		for _, a := range members {
			for _, b := range members {
				add(a, b)
			}
		}
	}
	for _, l := range o.of {
		sort.Slice(l, func(i, j int) bool { return l[i].Path < l[j].Path })
	}
	return o
}

// publishedUnder lists the published devices d is built on, sorted by
// Path. BlockInfo.Under has every layer when discovery filled it in;
// Parent and Slaves are followed as well, through published devices, so
// that an inventory made by hand (tests) gives the same answer.
func publishedUnder(d *Device, byName map[string]*Device) []*Device {
	seen := map[string]bool{d.Block.KernelName: true}
	var out []*Device
	var walk func(b *BlockInfo)
	walk = func(b *BlockInfo) {
		for _, l := range append(directlyUnder(b), b.Under...) {
			if seen[l] {
				continue
			}
			seen[l] = true
			if p := byName[l]; p != nil {
				out = append(out, p)
				walk(p.Block)
			}
		}
	}
	walk(d.Block)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Of returns the published block devices that overlap d, sorted by Path.
func (o *Overlaps) Of(d *Device) []*Device { return o.of[d] }

// GroupOf returns the group a published block device belongs to.
func (o *Overlaps) GroupOf(d *Device) *Group { return o.groupOf[d] }

// Unit names what one allocation hands out, in both modes: all the nodes of
// a bundle group together, or one device. Overlaps inside one unit do not
// matter: they go to the same pod.
func Unit(g *Group, d *Device) string {
	if g != nil && g.Bundle {
		return "bundle " + g.Name
	}
	return d.Path
}

// HeldBack is a device that devices of other units are built on.
type HeldBack struct {
	Device *Device
	Group  *Group
	// Tops are the published devices of other units built on Device,
	// sorted by Path.
	Tops []*Device
}

// TopsText names the tops for a reason: "/dev/sdb1, /dev/sdb2", with at
// most three paths and then "and N more".
func (h HeldBack) TopsText() string {
	const show = 3
	s := ""
	for i, t := range h.Tops {
		if i == show {
			return fmt.Sprintf("%s and %d more", s, len(h.Tops)-show)
		}
		if i > 0 {
			s += ", "
		}
		s += t.Path
	}
	return s
}

// HeldBack returns the devices to leave out so that no two units overlap:
// every device that a device of another unit is built on. What remains is
// the top of each stack (partitions rather than their disk, a multipath map
// rather than its paths), and no two remaining units overlap: two devices
// that overlap are both under some top that is held back by nothing (take
// the highest), and whichever of them is not in that top's unit is held
// back. Sorted by Path.
func (o *Overlaps) HeldBack() []HeldBack {
	found := map[*Device]*HeldBack{}
	var order []*Device
	for _, s := range o.Stacks {
		topUnit := Unit(s.TopGroup, s.Top)
		for _, b := range s.Below {
			g := o.groupOf[b]
			if Unit(g, b) == topUnit {
				continue
			}
			h := found[b]
			if h == nil {
				h = &HeldBack{Device: b, Group: g}
				found[b] = h
				order = append(order, b)
			}
			h.Tops = append(h.Tops, s.Top) // Stacks are sorted by Path
		}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Path < order[j].Path })
	out := make([]HeldBack, len(order))
	for i, d := range order {
		out[i] = *found[d]
	}
	return out
}
