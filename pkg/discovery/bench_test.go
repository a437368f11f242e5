package discovery

import (
	"context"
	"fmt"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// diskName gives the n-th SCSI disk name: sda ... sdz, sdaa ...
func diskName(n int) string {
	s := ""
	for n++; n > 0; n = (n - 1) / 26 {
		s = string(rune('a'+(n-1)%26)) + s
	}
	return "sd" + s
}

// bigTree lays out 10,000 block devices: 2,400 disks with 3 partitions
// each, 200 LVM volumes on the third partitions of the first 200 disks, and
// 200 loop devices of which half are bound; the first disk's first
// partition is mounted at /.
func bigTree(tb testing.TB) *discoverytest.Tree {
	tr := discoverytest.New(tb)
	const disks, dms, loops = 2400, 200, 200
	for i := 0; i < disks; i++ {
		name := diskName(i)
		major, minor := uint32(8+i/16), uint32(i%16*16)
		tr.AddBlock(discoverytest.Block{Name: name, Dev: nd(major, minor), Size: 100 * gib,
			Model: "MODEL", Vendor: "VENDOR", Serial: fmt.Sprintf("SN%06d", i),
			ByID: []string{fmt.Sprintf("wwn-0x5000c500%08x", i)}})
		for p := 1; p <= 3; p++ {
			tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("%s%d", name, p), Parent: name,
				Dev: nd(major, minor+uint32(p)), Size: 30 * gib})
		}
	}
	for i := 0; i < dms; i++ {
		tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("dm-%d", i), Dev: nd(253, uint32(i)), Size: 30 * gib,
			DMName: fmt.Sprintf("vg%d-lv", i), DMUUID: fmt.Sprintf("LVM-%032d", i),
			Slaves: []string{diskName(i) + "3"}})
	}
	for i := 0; i < loops; i++ {
		size := uint64(0)
		if i%2 == 0 {
			size = 16 * mib
		}
		tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("loop%d", i), Dev: nd(7, uint32(i)), Size: size})
	}
	tr.Mount("/dev/sda1", nd(8, 1), "/", "xfs")
	return tr
}

// BenchmarkDiscover10k measures one discovery pass over 10,000 block
// devices with the default configuration.
//
//	go test ./pkg/discovery -run '^$' -bench Discover10k -benchmem
func BenchmarkDiscover10k(b *testing.B) {
	tr := bigTree(b)
	cfg := v1alpha1.DefaultDiscoveryConfig()
	opts := []Option{WithHostRoot(tr.Root), WithStat(tr.Stat())}
	ctx := context.Background()
	inv, err := Discover(ctx, cfg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	if n := len(inv.Groups[0].Devices) + len(inv.Excluded); n != 10000 {
		b.Fatalf("got %d devices, want 10000", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Discover(ctx, cfg, opts...); err != nil {
			b.Fatal(err)
		}
	}
}
