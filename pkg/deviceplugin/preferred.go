package deviceplugin

import (
	"math"
	"sort"
	"strconv"
)

// greedyLimit bounds the allocation size that gets the scored choice; a
// larger request is filled in order (distinct devices first), which keeps
// the answer fast for requests of thousands of shares.
const greedyLimit = 1024

// Preferred answers GetPreferredAllocation for one container: size IDs out
// of available, always including mustInclude. It prefers, in this order:
//
//  1. IDs of devices not chosen yet (two shares of one device give the
//     container the same node twice);
//  2. devices on a NUMA node already chosen, where sysfs knows it;
//  3. devices that share a parent with one already chosen (partitions of
//     one disk, volumes on the same physical volumes);
//  4. the lower ID in the set's order.
//
// When nothing is chosen yet, the first ID comes from the NUMA node, and in
// it the parent, that has enough devices for the whole request with the
// fewest to spare, else the most. IDs the set does not know are skipped.
func (s *DeviceSet) Preferred(available, mustInclude []string, size int) []string {
	chosen := make([]string, 0, max(size, len(mustInclude)))
	taken := map[string]bool{}
	for _, id := range mustInclude {
		if !taken[id] {
			taken[id] = true
			chosen = append(chosen, id)
		}
	}
	if len(chosen) >= size {
		return chosen
	}
	var cands []int // unit indexes, in set order
	seen := map[int]bool{}
	for _, id := range available {
		if i, ok := s.byID[id]; ok && !taken[id] && !seen[i] {
			seen[i] = true
			cands = append(cands, i)
		}
	}
	sort.Ints(cands)

	devs, numas, parents := map[string]bool{}, map[int64]bool{}, map[string]bool{}
	take := func(ci int) {
		u := &s.Units[cands[ci]]
		chosen = append(chosen, u.ID)
		devs[u.Device] = true
		for _, n := range u.NUMANodes {
			numas[n] = true
		}
		if u.Parent != "" {
			parents[u.Parent] = true
		}
		cands = append(cands[:ci], cands[ci+1:]...)
	}
	for _, id := range chosen {
		if u, ok := s.Unit(id); ok {
			devs[u.Device] = true
			for _, n := range u.NUMANodes {
				numas[n] = true
			}
			if u.Parent != "" {
				parents[u.Parent] = true
			}
		}
	}

	if size-len(chosen) > greedyLimit {
		// Distinct devices first, then the rest, in order.
		for pass := 0; pass < 2 && len(chosen) < size; pass++ {
			for ci := 0; ci < len(cands) && len(chosen) < size; {
				if pass == 0 && devs[s.Units[cands[ci]].Device] {
					ci++
					continue
				}
				take(ci)
			}
		}
		return chosen
	}

	if len(chosen) == 0 && len(cands) > 0 {
		take(s.seed(cands, size))
	}
	for len(chosen) < size && len(cands) > 0 {
		best, bestScore := 0, -1
		for ci, i := range cands {
			u := &s.Units[i]
			score := 0
			if !devs[u.Device] {
				score += 4
			}
			for _, n := range u.NUMANodes {
				if numas[n] {
					score += 2
					break
				}
			}
			if u.Parent != "" && parents[u.Parent] {
				score++
			}
			if score > bestScore {
				best, bestScore = ci, score
			}
		}
		take(best)
	}
	return chosen
}

// seed picks the first candidate (an index into cands) of an allocation
// with nothing chosen yet.
func (s *DeviceSet) seed(cands []int, size int) int {
	numaOf := func(u *Unit) string {
		if len(u.NUMANodes) == 0 {
			return "-"
		}
		return strconv.FormatInt(u.NUMANodes[0], 10)
	}
	parentOf := func(u *Unit) string { return u.Parent }
	// group counts the distinct devices per key and remembers where each
	// key's first candidate is.
	group := func(keyOf func(u *Unit) string, filter func(u *Unit) bool) (map[string]int, map[string]int) {
		devices := map[string]map[string]bool{}
		firsts := map[string]int{}
		for ci, i := range cands {
			u := &s.Units[i]
			if filter != nil && !filter(u) {
				continue
			}
			k := keyOf(u)
			if devices[k] == nil {
				devices[k] = map[string]bool{}
				firsts[k] = ci
			}
			devices[k][u.Device] = true
		}
		counts := make(map[string]int, len(devices))
		for k, d := range devices {
			counts[k] = len(d)
		}
		return counts, firsts
	}
	counts, firsts := group(numaOf, nil)
	nk := bestFit(counts, firsts, size)
	counts, firsts = group(parentOf, func(u *Unit) bool { return numaOf(u) == nk })
	return firsts[bestFit(counts, firsts, size)]
}

// bestFit returns the key whose count covers need with the least to spare,
// else the key with the largest count; ties go to the key whose first
// candidate comes first.
func bestFit(counts, firsts map[string]int, need int) string {
	best, bestCount, bestFirst, fits := "", 0, math.MaxInt, false
	for k, c := range counts {
		o := firsts[k]
		f := c >= need
		better := false
		switch {
		case f && !fits:
			better = true
		case f && fits:
			better = c < bestCount || (c == bestCount && o < bestFirst)
		case !f && !fits:
			better = c > bestCount || (c == bestCount && o < bestFirst)
		}
		if better {
			best, bestCount, bestFirst, fits = k, c, o, f
		}
	}
	return best
}
