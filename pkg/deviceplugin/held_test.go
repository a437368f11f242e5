package deviceplugin

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// The real kernel: a loop device mounted in a private mount namespace is
// not in the host's mount table, so discovery publishes it; Allocate asks
// the kernel and refuses it. A shared group's device is not checked.
func TestAllocateRefusesDeviceHeldInPrivateMount(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 16<<20)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	kname := filepath.Base(dev)
	inv := &discovery.Inventory{Groups: []discovery.Group{
		{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{blockDev("dev", kname, major, minor, "")}},
		{Name: "db2", Permissions: "rw", Sharing: exclusive(), Bundle: true, BundleName: "db2", Devices: []discovery.Device{blockDev("db2", kname, major, minor, "")}},
		{Name: "shared", Permissions: "r", Sharing: shared(2), Devices: []discovery.Device{blockDev("shared", kname, major, minor, "")}},
	}}
	e := newEnv(t, withProbe(nil)) // the real discovery.CheckNotHeld on the host's /dev
	e.src.send(t, inv)
	ctx := waitCtx(t, 10*time.Second)
	p := e.plugin(t, "power-dev-plugin/dev")
	bundle := e.plugin(t, "power-dev-plugin/db2")
	sh := e.plugin(t, "power-dev-plugin/shared")
	waitIDs(t, p, kname)
	if _, err := p.Allocate(ctx, []string{kname}); err != nil {
		t.Fatalf("free device: %v", err)
	}

	discoverytest.HoldInPrivateMount(t, dev)
	for _, tc := range []struct {
		resource, id string
		allocate     func() error
	}{
		{"power-dev-plugin/dev", kname, func() error { _, err := p.Allocate(ctx, []string{kname}); return err }},
		{"power-dev-plugin/db2", "db2", func() error { _, err := bundle.Allocate(ctx, []string{"db2"}); return err }},
	} {
		err := tc.allocate()
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("%s: Allocate of a held device: %v, want FailedPrecondition", tc.resource, err)
		}
		want := fmt.Sprintf(`%s: device ID %q: block device %s (%d:%d) is in use on the node: the kernel refused to open it exclusively`,
			tc.resource, tc.id, dev, major, minor)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, want) || !strings.Contains(msg, "mount namespace") {
			t.Errorf("%s: message\n %q\nwant it to contain %q and say why", tc.resource, msg, want)
		}
	}
	if _, err := sh.Allocate(ctx, []string{kname + "_0"}); err != nil {
		t.Errorf("shared group: %v", err)
	}
}

// Which nodes Allocate asks about (a fake probe stands for the kernel: the
// inventory is made up), and that a refusal names the resource and ID.
func TestAllocateChecksNotHeld(t *testing.T) {
	var mu sync.Mutex
	var probed []string
	held := map[string]bool{"/dev/sdc": true}
	probe := func(d *discovery.Device) error {
		mu.Lock()
		defer mu.Unlock()
		s := fmt.Sprintf("%s %d:%d", d.Path, d.Major, d.Minor)
		if d.InUseAllowed {
			s += " allowed"
		}
		probed = append(probed, s)
		if held[d.Path] {
			return errors.New("block device " + d.Path + " is in use on the node")
		}
		return nil
	}
	take := func(what string, want ...string) {
		t.Helper()
		mu.Lock()
		got := probed
		probed = nil
		mu.Unlock()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: probed %q, want %q", what, got, want)
		}
	}
	inv := threeGroups()
	allowed := blockDev("dev", "sdh", 8, 112, "") // sdd-sdg are under db2's dm devices
	allowed.InUseAllowed = true
	inv.Groups[0].Devices = append(inv.Groups[0].Devices, allowed)
	e := newEnv(t, withProbe(probe))
	e.src.send(t, inv)
	ctx := waitCtx(t, 10*time.Second)

	dev := e.plugin(t, "power-dev-plugin/dev")
	if _, err := dev.Allocate(ctx, []string{"sdb", "sdh"}); err != nil {
		t.Fatal(err)
	}
	take("exclusive disks", "/dev/sdb 8:16", "/dev/sdh 8:112 allowed")
	_, err := dev.Allocate(ctx, []string{"sdb"}, []string{"sdc"})
	if status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != `power-dev-plugin/dev: device ID "sdc": block device /dev/sdc is in use on the node` {
		t.Errorf("held device: %v", err)
	}
	take("two containers", "/dev/sdb 8:16", "/dev/sdc 8:32")

	db2 := e.plugin(t, "power-dev-plugin/db2")
	if _, err := db2.Allocate(ctx, []string{"db2"}); err != nil {
		t.Fatal(err)
	}
	take("bundle: every node", "/dev/dm-1 253:1", "/dev/dm-2 253:2")
	nx := e.plugin(t, "power-dev-plugin/nx-gzip")
	if _, err := nx.Allocate(ctx, []string{"crypto-nx-gzip_0"}); err != nil {
		t.Fatal(err)
	}
	take("shared char device")
}
