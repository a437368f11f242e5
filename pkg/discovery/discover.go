package discovery

import (
	"context"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Reasons that do not name a device.
const (
	reasonNotIncluded = "not included by any group"
	reasonHidden      = "hidden by the kernel: no device node of its own"
)

// Discover lists the host's device nodes, sorts them into the groups of cfg
// and applies the safety rules. cfg must be defaulted and valid; nil means
// v1alpha1.DefaultDiscoveryConfig(). The result depends only on the files
// under the host root and is sorted; see the package documentation for the
// rules.
func Discover(ctx context.Context, cfg *v1alpha1.DiscoveryConfig, opts ...Option) (*Inventory, error) {
	return discover(ctx, cfg, newSettings(opts))
}

func discover(ctx context.Context, cfg *v1alpha1.DiscoveryConfig, s settings) (*Inventory, error) {
	start := time.Now()
	logger := klog.FromContext(ctx)
	if cfg == nil {
		cfg = v1alpha1.DefaultDiscoveryConfig()
	}
	if s.state == nil {
		s.state = newScanState(false)
	}
	if s.opener == nil {
		root := s.root
		s.opener = func(p string, major, minor uint32) (*os.File, error) {
			return OpenBlockDevice(root, p, major, minor, false)
		}
	}
	h := newHostFS(s.root, s.stat)

	blocks, err := h.scanBlock(ctx)
	if err != nil {
		return nil, err
	}
	blocks.inheritFromParents()
	blocks.fillUnder()
	h.scanAliases(blocks)
	uses, unknown := h.inUse(ctx, blocks)
	helds := held(blocks)
	holds, stackWarnings := h.checkStacks(ctx, cfg, blocks, uses, &s)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.fillIdentities(blocks)
	chars := h.scanChar(ctx, cfg, blocks)
	var aliases map[uint64]*blockAlias
	if len(chars) > 0 {
		aliases = h.blockAliases(blocks)
	}

	allowed := make(map[string]bool, len(cfg.AllowInUse))
	for _, p := range cfg.AllowInUse {
		allowed[path.Clean(p)] = true
	}
	isAllowed := func(paths []string) bool {
		for _, p := range paths {
			if allowed[p] {
				return true
			}
		}
		return false
	}

	inv := &Inventory{
		Groups:   make([]Group, len(cfg.Groups)),
		Excluded: []Exclusion{},
	}
	if h.warning != "" {
		inv.Warnings = append(inv.Warnings, h.warning)
	}
	inv.Warnings = append(inv.Warnings, stackWarnings...)
	var reserved []string
	for i, g := range cfg.Groups {
		perms := g.Permissions
		if perms == "" {
			perms = v1alpha1.DefaultPermissions
		}
		inv.Groups[i] = Group{
			Name:        g.Name,
			Permissions: perms,
			Sharing:     copySharing(g.Sharing),
			Bundle:      g.Bundle,
			Devices:     []Device{},
		}
		inv.Groups[i].UnhealthyTaintEffect = g.UnhealthyTaintEffect
		if g.Bundle {
			inv.Groups[i].BundleName = g.Name
			reserved = append(reserved, g.Name)
		}
	}
	exclude := func(p, reason string, t v1alpha1.DeviceType, major, minor uint32, id string) {
		inv.Excluded = append(inv.Excluded, Exclusion{Path: p, Reason: reason, Type: t, Major: major, Minor: minor, Identity: id})
	}

	var paths []string
	for _, d := range blocks.list {
		all := append([]string{d.path}, d.aliases...)
		gi, patternReason := matchGroup(cfg, all, v1alpha1.DeviceTypeBlock)
		ok := isAllowed(all)
		k := d.info.KernelName
		var reason string
		switch {
		case isKernelBlock(d) && !ok:
			reason = reasonKernel
		case unknown != "":
			reason = unknown
		case uses[k] != nil && !ok:
			reason = "in use: " + uses[k].reason
		case helds[k] != "" && !ok:
			reason = helds[k]
		case holds[k] != "" && !ok:
			reason = holds[k]
		case d.info.SizeBytes == 0:
			reason = emptyReason(d)
		case d.hidden:
			reason = reasonHidden
		case d.nodeProblem != "":
			reason = d.nodeProblem
		case gi < 0 && patternReason != "":
			reason = patternReason
		case gi < 0:
			reason = reasonNotIncluded
		}
		if reason != "" {
			major, minor := d.sysMajor, d.sysMinor
			if !d.sysDevOK {
				major, minor = d.major, d.minor
			}
			exclude(d.path, reason, v1alpha1.DeviceTypeBlock, major, minor, d.identity)
			continue
		}
		info := d.info
		info.ByID = slices.Clone(d.info.ByID)
		info.Slaves = slices.Clone(d.info.Slaves)
		info.Under = slices.Clone(d.info.Under)
		inv.Groups[gi].Devices = append(inv.Groups[gi].Devices, Device{
			Group:    cfg.Groups[gi].Name,
			Path:     d.path,
			Type:     v1alpha1.DeviceTypeBlock,
			Major:    d.major,
			Minor:    d.minor,
			Identity: d.identity,
			Aliases:  slices.Clone(d.aliases),
			Block:    &info,

			InUseAllowed: ok,
		})
		paths = append(paths, d.path)
	}
	for _, c := range chars {
		all := append([]string{c.path}, c.aliases...)
		gi, patternReason := matchGroup(cfg, all, v1alpha1.DeviceTypeChar)
		alias := aliasReason(aliases[devKey(c.major, c.minor)], blocks, uses, helds, unknown)
		var reason string
		switch {
		case isKernelInterface(c.major, c.minor, append(all, c.resolved)) && !isAllowed(all):
			reason = reasonKernel
		case alias != "" && (unknown != "" || !isAllowed(all)):
			reason = alias
		case gi < 0 && patternReason != "":
			reason = patternReason
		case gi < 0:
			reason = reasonNotIncluded
		}
		id := shortIdentity(idPath + c.path)
		if reason != "" {
			exclude(c.path, reason, v1alpha1.DeviceTypeChar, c.major, c.minor, id)
			continue
		}
		inv.Groups[gi].Devices = append(inv.Groups[gi].Devices, Device{
			Group:    cfg.Groups[gi].Name,
			Path:     c.path,
			Type:     v1alpha1.DeviceTypeChar,
			Major:    c.major,
			Minor:    c.minor,
			Identity: id,
			Aliases:  slices.Clone(c.aliases),
		})
		paths = append(paths, c.path)
	}

	names := assignNames(paths, reserved)
	published := 0
	for gi := range inv.Groups {
		devs := inv.Groups[gi].Devices
		sort.Slice(devs, func(i, j int) bool { return devs[i].Path < devs[j].Path })
		for i := range devs {
			devs[i].Name = names[devs[i].Path]
		}
		published += len(devs)
	}
	fillTopology(s.root, inv)
	sort.Slice(inv.Excluded, func(i, j int) bool { return inv.Excluded[i].Path < inv.Excluded[j].Path })

	logger.V(2).Info("Discovered devices", "root", s.root, "published", published,
		"excluded", len(inv.Excluded), "duration", time.Since(start))
	if logger.V(5).Enabled() {
		for _, e := range inv.Excluded {
			logger.V(5).Info("Excluded device", "path", e.Path, "reason", e.Reason)
		}
	}
	return inv, nil
}

// matchGroup finds the first group that includes one of paths and excludes
// none. When there is none it also returns why the first group that included
// the node dropped it, if any did.
func matchGroup(cfg *v1alpha1.DiscoveryConfig, paths []string, t v1alpha1.DeviceType) (int, string) {
	first := ""
	for gi := range cfg.Groups {
		g := &cfg.Groups[gi]
		if !includes(g, paths, t) {
			continue
		}
		if pat := matchAny(g.Exclude, paths); pat != "" {
			if first == "" {
				first = fmt.Sprintf("excluded from group %q by pattern %q", g.Name, pat)
			}
			continue
		}
		return gi, ""
	}
	return -1, first
}

// includes reports whether a group's include patterns take a node. The types
// filter applies to globs only: a pattern without metacharacters names its
// path exactly and takes it whatever its type.
func includes(g *v1alpha1.DeviceGroup, paths []string, t v1alpha1.DeviceType) bool {
	typeOK := typeAllowed(g.Types, t)
	for _, pat := range g.Include {
		if !typeOK && hasMeta(pat) {
			continue
		}
		for _, p := range paths {
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}

// matchAny returns the first pattern that matches one of paths.
func matchAny(patterns, paths []string) string {
	for _, pat := range patterns {
		for _, p := range paths {
			if ok, _ := path.Match(pat, p); ok {
				return pat
			}
		}
	}
	return ""
}

func emptyReason(d *blockDev) string {
	switch d.info.Kind {
	case KindLoop:
		return "empty: size 0 (loop device with no backing file)"
	case KindROM:
		return "empty: size 0 (no medium)"
	}
	if d.info.Removable {
		return "empty: size 0 (no medium)"
	}
	if strings.HasPrefix(d.info.KernelName, "zram") {
		return "empty: size 0 (zram device not set up)"
	}
	return "empty: size 0"
}

func copySharing(s *v1alpha1.Sharing) v1alpha1.Sharing {
	if s == nil {
		return v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive}
	}
	out := *s
	if out.Mode == "" {
		out.Mode = v1alpha1.SharingExclusive
	}
	if s.MaxConsumers != nil {
		v := *s.MaxConsumers
		out.MaxConsumers = &v
	}
	return out
}
