package discovery

import (
	"context"
	"slices"
	"sort"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// charDev is a character device some group's include patterns name.
type charDev struct {
	path     string
	resolved string // host path of the node itself
	major    uint32
	minor    uint32
	aliases  []string
}

// scanChar finds the character device candidates: the paths the groups'
// include patterns name. A glob is expanded only for groups that take
// character devices; a pattern without metacharacters is looked at whatever
// the group's types. Block nodes are skipped (sysfs lists those), and so are
// paths that are a block device's canonical path.
func (h *hostFS) scanChar(ctx context.Context, cfg *v1alpha1.DiscoveryConfig, blocks *blockSet) []*charDev {
	logger := klog.FromContext(ctx)
	found := make(map[string]*charDev)
	consider := func(p string) {
		if _, ok := found[p]; ok || blocks.devPath[p] {
			return
		}
		n, err := h.statPath(p)
		if err != nil {
			logger.V(5).Info("Skipping path", "path", p, "err", err)
			found[p] = nil
			return
		}
		if !isCharMode(n.mode) {
			found[p] = nil
			return
		}
		found[p] = &charDev{path: p, resolved: n.resolved, major: n.major, minor: n.minor}
	}
	for _, g := range cfg.Groups {
		takesChar := typeAllowed(g.Types, v1alpha1.DeviceTypeChar)
		for _, pat := range g.Include {
			if !hasMeta(pat) {
				consider(pat)
				continue
			}
			if !takesChar {
				continue
			}
			for _, p := range h.glob(pat) {
				consider(p)
			}
		}
	}

	// One candidate per node: links that lead to the same node become
	// aliases of the node's own path when that is a candidate, else of the
	// first link.
	byNode := make(map[string][]*charDev)
	for _, c := range found {
		if c != nil {
			byNode[c.resolved] = append(byNode[c.resolved], c)
		}
	}
	out := make([]*charDev, 0, len(byNode))
	for _, cs := range byNode {
		sort.Slice(cs, func(i, j int) bool {
			ri, rj := cs[i].path == cs[i].resolved, cs[j].path == cs[j].resolved
			if ri != rj {
				return ri
			}
			return cs[i].path < cs[j].path
		})
		primary := cs[0]
		for _, c := range cs[1:] {
			primary.aliases = append(primary.aliases, c.path)
		}
		sort.Strings(primary.aliases)
		out = append(out, primary)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// typeAllowed reports whether a group's types filter lets t through.
func typeAllowed(types []v1alpha1.DeviceType, t v1alpha1.DeviceType) bool {
	return len(types) == 0 || slices.Contains(types, t)
}
