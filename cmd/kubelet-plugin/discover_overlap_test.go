package main

import (
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// discover says which devices share blocks and what each mode does about
// it, so that an admin knows why legacy mode does not offer a disk.
func TestDiscoverSharedBlocks(t *testing.T) {
	tr := hostTree(t)
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: discoverytest.DevNum{Major: 8, Minor: 32}, Size: 128 * mib})
	tr.AddBlock(discoverytest.Block{Name: "sdc1", Parent: "sdc", Dev: discoverytest.DevNum{Major: 8, Minor: 33}, Size: 32 * mib})
	tr.AddBlock(discoverytest.Block{Name: "sdc2", Parent: "sdc", Dev: discoverytest.DevNum{Major: 8, Minor: 34}, Size: 32 * mib})
	out, _, err := runCmd(t, "discover", "--host-root", tr.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"SHARE BLOCKS: 2 device(s) built on other published devices",
		"/dev/sdc1  /dev/sdc\n", "/dev/sdc2  /dev/sdc\n",
		"NOT OFFERED IN DEVICE-PLUGIN MODE: 1",
		"  /dev/sdc  not offered in device-plugin mode: /dev/sdc shares blocks with /dev/sdc1, /dev/sdc2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT PUBLISHED IN DRA MODE") {
		t.Errorf("a disk with two partitions is published in DRA mode:\n%s", out)
	}
	out, _, err = runCmd(t, "discover", "--host-root", tr.Root, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"builtOn": [`) || !strings.Contains(out, `"notOfferedInDevicePluginMode": [`) {
		t.Errorf("json output:\n%s", out)
	}
}
