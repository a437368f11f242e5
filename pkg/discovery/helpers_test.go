package discovery

import (
	"context"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func nd(major, minor uint32) discoverytest.DevNum {
	return discoverytest.DevNum{Major: major, Minor: minor}
}

func ndp(major, minor uint32) *discoverytest.DevNum {
	d := nd(major, minor)
	return &d
}

const (
	kib = 1024
	mib = 1024 * kib
	gib = 1024 * mib
)

// config builds a defaulted configuration.
func config(allowInUse []string, groups ...v1alpha1.DeviceGroup) *v1alpha1.DiscoveryConfig {
	cfg := &v1alpha1.DiscoveryConfig{Groups: groups, AllowInUse: allowInUse}
	v1alpha1.SetDefaults(cfg)
	return cfg
}

func testContext(t testing.TB) context.Context {
	_, ctx := ktesting.NewTestContext(t)
	return ctx
}

// discoverTree runs Discover over a fixture tree and checks the invariants
// every inventory must keep.
func discoverTree(t *testing.T, tr *discoverytest.Tree, cfg *v1alpha1.DiscoveryConfig) *Inventory {
	t.Helper()
	inv, err := Discover(testContext(t), cfg, WithHostRoot(tr.Root), WithStat(tr.Stat()), WithBlockOpener(tr.Open))
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	checkInvariants(t, cfg, inv)
	return inv
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func checkInvariants(t *testing.T, cfg *v1alpha1.DiscoveryConfig, inv *Inventory) {
	t.Helper()
	if len(inv.Groups) != len(cfg.Groups) {
		t.Fatalf("got %d groups, want %d", len(inv.Groups), len(cfg.Groups))
	}
	seenPath := map[string]string{}
	seenName := map[string]string{}
	for i, g := range inv.Groups {
		if g.Name != cfg.Groups[i].Name {
			t.Errorf("group %d is %q, want %q", i, g.Name, cfg.Groups[i].Name)
		}
		if g.Bundle {
			if g.BundleName != g.Name {
				t.Errorf("bundle group %q has bundle name %q", g.Name, g.BundleName)
			}
			seenName[g.BundleName] = "bundle " + g.Name
		} else if g.BundleName != "" {
			t.Errorf("group %q is no bundle but has bundle name %q", g.Name, g.BundleName)
		}
		if !sort.SliceIsSorted(g.Devices, func(a, b int) bool { return g.Devices[a].Path < g.Devices[b].Path }) {
			t.Errorf("devices of group %q not sorted", g.Name)
		}
		for _, d := range g.Devices {
			if d.Group != g.Name {
				t.Errorf("%s: Group %q in group %q", d.Path, d.Group, g.Name)
			}
			if !labelRE.MatchString(d.Name) || len(d.Name) > 63 {
				t.Errorf("%s: name %q is not a DNS label", d.Path, d.Name)
			}
			if other, dup := seenName[d.Name]; dup {
				t.Errorf("name %q of %s already taken by %s", d.Name, d.Path, other)
			}
			seenName[d.Name] = d.Path
			if _, dup := seenPath[d.Path]; dup {
				t.Errorf("path %s listed twice", d.Path)
			}
			seenPath[d.Path] = "published"
			if !sort.StringsAreSorted(d.Aliases) {
				t.Errorf("%s: aliases not sorted: %v", d.Path, d.Aliases)
			}
			if (d.Type == v1alpha1.DeviceTypeBlock) != (d.Block != nil) {
				t.Errorf("%s: type %s with block info %v", d.Path, d.Type, d.Block)
			}
			checkIdentity(t, d.Path, d.Type, d.Identity)
		}
	}
	if !sort.SliceIsSorted(inv.Excluded, func(a, b int) bool { return inv.Excluded[a].Path < inv.Excluded[b].Path }) {
		t.Errorf("exclusions not sorted")
	}
	for _, e := range inv.Excluded {
		if e.Reason == "" {
			t.Errorf("%s excluded without reason", e.Path)
		}
		// The metric of left-out devices labels them by class.
		if ReasonClass(e.Reason) == "other" {
			t.Errorf("%s: reason %q has no class in reasonclass.go", e.Path, e.Reason)
		}
		if _, dup := seenPath[e.Path]; dup {
			t.Errorf("path %s listed twice", e.Path)
		}
		seenPath[e.Path] = "excluded"
		checkIdentity(t, e.Path, e.Type, e.Identity)
	}
}

// checkIdentity checks what every device discovery saw carries: an
// identity that fits an attribute, a character device's made of its path.
func checkIdentity(t *testing.T, p string, typ v1alpha1.DeviceType, id string) {
	t.Helper()
	switch {
	case id == "" || len(id) > MaxIdentityLen:
		t.Errorf("%s: identity %q is empty or longer than %d bytes", p, id, MaxIdentityLen)
	case typ == v1alpha1.DeviceTypeChar && !strings.HasPrefix(id, "path:"):
		t.Errorf("%s: character device with identity %q", p, id)
	case typ != v1alpha1.DeviceTypeChar && typ != v1alpha1.DeviceTypeBlock:
		t.Errorf("%s: type %q", p, typ)
	}
}

// outcome is where a path ended up: a group name or an exclusion reason.
type outcome struct {
	group  string
	reason string
}

func outcomes(inv *Inventory) map[string]outcome {
	out := map[string]outcome{}
	for _, g := range inv.Groups {
		for _, d := range g.Devices {
			out[d.Path] = outcome{group: g.Name}
		}
	}
	for _, e := range inv.Excluded {
		out[e.Path] = outcome{reason: e.Reason}
	}
	return out
}

func findDevice(inv *Inventory, p string) *Device {
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			if d := &inv.Groups[gi].Devices[di]; d.Path == p {
				return d
			}
		}
	}
	return nil
}
