package deviceplugin

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// oldHost lays out a node as the old plugin's users had it: device-mapper
// devices dm-0 (the root volume, on sda2, mounted at /), dm-1 to dm-4, a
// data disk sdb and the NX-GZIP accelerator.
func oldHost(t *testing.T) *discoverytest.Tree {
	t.Helper()
	tr := discoverytest.New(t)
	nd := func(maj, min uint32) discoverytest.DevNum { return discoverytest.DevNum{Major: maj, Minor: min} }
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: 100 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: 1 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sda2", Parent: "sda", Dev: nd(8, 2), Size: 50 << 30})
	tr.AddBlock(discoverytest.Block{Name: "dm-0", Dev: nd(253, 0), Size: 50 << 30, DMName: "rhel-root", Slaves: []string{"sda2"}})
	for i, name := range []string{"mpatha", "mpathb", "mpathc", "mpathd"} {
		tr.AddBlock(discoverytest.Block{Name: "dm-" + string(rune('1'+i)), Dev: nd(253, uint32(i+1)), Size: 200 << 30, DMName: name,
			DMUUID: "mpath-36005076" + name})
	}
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: 10 << 30})
	tr.CharNode("/dev/crypto/nx-gzip", 10, 121)
	tr.Mount("/dev/mapper/rhel-root", nd(253, 0), "/", "xfs")
	tr.Mount("/dev/sda1", nd(8, 1), "/boot", "xfs")
	return tr
}

// The old plugin's config.json samples load unchanged and give what the
// migration guide says: one resource power-dev-plugin/dev; capacity the
// number of matched devices (README sample) or upper-limit (development
// sample); every unit grants every matched device, rw, at its host path.
func TestOldConfigSamples(t *testing.T) {
	tr := oldHost(t)
	// Every matched device at its host path, and the multipath devices
	// under their /dev/mapper names too (as in DRA mode).
	matched := []string{"/dev/crypto/nx-gzip", "/dev/dm-1", "/dev/dm-2", "/dev/dm-4",
		"/dev/mapper/mpatha <- /dev/dm-1", "/dev/mapper/mpathb <- /dev/dm-2", "/dev/mapper/mpathd <- /dev/dm-4"}
	for _, tc := range []struct {
		file    string
		wantIDs []string
	}{
		// No upper-limit: one unit per matched device, as the old capacity.
		{"config-readme.json", []string{"dev_0", "dev_1", "dev_2", "dev_3"}},
		// upper-limit 2: at most two consumers at once.
		{"config-development.json", []string{"dev_0", "dev_1"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			cfg, warnings, err := v1alpha1.LoadDiscoveryConfig(filepath.Join("testdata", "old-config", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) == 0 {
				t.Error("an old config.json should warn that it is the old format")
			}
			_, ctx := ktesting.NewTestContext(t)
			inv, err := discovery.Discover(ctx, cfg, discovery.WithHostRoot(tr.Root), discovery.WithStat(tr.Stat()))
			if err != nil {
				t.Fatal(err)
			}

			e := newEnv(t)
			e.src.send(t, inv)
			p := e.plugin(t, "power-dev-plugin/dev")
			waitIDs(t, p, tc.wantIDs...)
			for _, r := range e.kubelet.Requests() {
				if r.ResourceName != "power-dev-plugin/dev" {
					t.Errorf("registered %s, want only power-dev-plugin/dev", r.ResourceName)
				}
			}

			// Each unit grants every matched device; two containers of a
			// pod each get all of them.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := p.Allocate(ctx, []string{"dev_1"}, []string{"dev_0"})
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range resp.ContainerResponses {
				for _, d := range c.Devices {
					if d.Permissions != "rw" {
						t.Errorf("container %d: %+v, want rw", i, d)
					}
				}
				if paths := specPaths(c); !equal(paths, matched) {
					t.Errorf("container %d got %v, want every matched device %v (never dm-0 under /, nor dm-3 excluded, nor sdb)", i, paths, matched)
				}
				if got := cdiNames(c); !equal(got, []string{"power-dev-plugin.io/device=dev"}) {
					t.Errorf("container %d CDI devices %v", i, got)
				}
			}
		})
	}
}
