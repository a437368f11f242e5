package deviceplugin

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// benchInventory: 1,000 disks in an exclusive group, and a shared bundle of
// 1,000 device-mapper devices as an old config.json makes it.
func benchInventory() *discovery.Inventory {
	var disks, dms []discovery.Device
	for i := 0; i < 1000; i++ {
		disks = append(disks, blockDev("dev", fmt.Sprintf("sd%04d", i), 8, uint32(i), ""))
		dms = append(dms, dmDev("old", fmt.Sprintf("dm-%d", i), uint32(i)))
	}
	return &discovery.Inventory{Groups: []discovery.Group{
		{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: disks},
		{Name: "old", Permissions: "rw", Sharing: shared(0), Bundle: true, BundleName: "old", Devices: dms},
	}}
}

// BenchmarkAllocate times one Allocate call as the kubelet makes it: over
// the plugin's real unix socket and gRPC, from the test kubelet's client.
func BenchmarkAllocate(b *testing.B) {
	e := newEnv(b)
	e.src.send(b, benchInventory())
	for _, bc := range []struct {
		name, resource string
		ids            []string
	}{
		{"1ID", "power-dev-plugin/dev", []string{"sd0042"}},
		{"8IDs", "power-dev-plugin/dev", []string{"sd0001", "sd0002", "sd0003", "sd0004", "sd0005", "sd0006", "sd0007", "sd0008"}},
		{"Bundle1000Nodes", "power-dev-plugin/old", []string{"old_7"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := e.plugin(b, bc.resource)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := p.Allocate(ctx, bc.ids); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildDeviceSets times turning an inventory into device sets
// (on every discovery change).
func BenchmarkBuildDeviceSets(b *testing.B) {
	inv := benchInventory()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		BuildDeviceSets(inv, nil)
	}
}
