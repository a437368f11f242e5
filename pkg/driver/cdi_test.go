package driver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// ptRealNode describes an existing device node as discovery would.
func ptRealNode(t testing.TB, name, path string) (discovery.Device, bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return discovery.Device{}, false
	}
	d := discovery.Device{Name: name, Path: path, Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev))}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		d.Type = v1alpha1.DeviceTypeBlock
	case unix.S_IFCHR:
		d.Type = v1alpha1.DeviceTypeChar
	default:
		t.Fatalf("%s is not a device node", path)
	}
	return d, true
}

// ptFileID identifies a file version: inode, size and mtime. A rewrite by
// temp file and rename always gets a new inode.
func ptFileID(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("ino=%d size=%d mtime=%d.%09d", st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
}

func TestCDINaming(t *testing.T) {
	uid := types.UID("6f1c2a9e-0b7d-4c1e-9f3a-2d5e8b7c6a10")
	if got, want := CDISpecName(uid), "power-dev-plugin.io-claim_6f1c2a9e-0b7d-4c1e-9f3a-2d5e8b7c6a10.json"; got != want {
		t.Errorf("CDISpecName = %q, want %q", got, want)
	}
	if got, ok := claimUIDFromSpecName(CDISpecName(uid)); !ok || got != uid {
		t.Errorf("claimUIDFromSpecName(%q) = %q, %v", CDISpecName(uid), got, ok)
	}
	for _, name := range []string{
		"power-dev-plugin.io-claim.json",         // a static spec of the same kind
		"power-dev-plugin.io-claim_.json",        // no UID
		"power-dev-plugin.io-other_x.json",       // another class
		"nvidia.com-gpu_abc.json",                // another vendor
		"power-dev-plugin.io-claim_abc.json.bak", // not a spec
		"power-dev-plugin.io-claim_a_b.json",     // not a UID
	} {
		if uid, ok := claimUIDFromSpecName(name); ok {
			t.Errorf("claimUIDFromSpecName(%q) = %q, want not ours", name, uid)
		}
	}
	share := types.UID("11111111-2222-3333-4444-555555555555")
	if got, want := CDIDeviceName(uid, "loop0", nil), string(uid)+"_loop0"; got != want {
		t.Errorf("CDIDeviceName = %q, want %q", got, want)
	}
	if got, want := CDIDeviceName(uid, "fuse", &share), string(uid)+"_fuse_"+string(share); got != want {
		t.Errorf("CDIDeviceName with share = %q, want %q", got, want)
	}
	if got, want := CDIDeviceID("x_y"), "power-dev-plugin.io/claim=x_y"; got != want {
		t.Errorf("CDIDeviceID = %q, want %q", got, want)
	}
}

func TestCDISpecContent(t *testing.T) {
	share := types.UID("11111111-2222-3333-4444-555555555555")
	r := ptResult("fs", "fuse")
	r.ShareID = &share
	claim := ptClaim("foo", ptResults(ptResult("disk", "loop0"), r, ptResult("all", "mp-all")),
		ptConfig(resourceapi.AllocationConfigSourceClaim, ptParams(`"uid":1000,"gid":1001,"fileMode":432`), "disk"))
	pc := NewPreparedClaim(mustPlan(t, claim, ptInventory()))
	spec, err := pc.CDISpec()
	if err != nil {
		t.Fatal(err)
	}
	// hostPath needs 0.5.0; nothing newer is used, so older runtimes
	// read the spec too.
	if spec.Version != "0.5.0" || spec.Kind != "power-dev-plugin.io/claim" {
		t.Errorf("version %q kind %q", spec.Version, spec.Kind)
	}
	var names []string
	for _, d := range spec.Devices {
		names = append(names, d.Name)
	}
	want := []string{"uid-foo_loop0", "uid-foo_fuse_" + string(share), "uid-foo_mp-all"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("device names %q, want %q", names, want)
	}
	dn := spec.Devices[0].ContainerEdits.DeviceNodes[0]
	if dn.Path != "/dev/loop0" || dn.HostPath != "/dev/loop0" || dn.Type != "b" || dn.Major != 7 || dn.Minor != 0 ||
		dn.Permissions != "rw" || ptr.Deref(dn.UID, 0) != 1000 || ptr.Deref(dn.GID, 0) != 1001 || dn.FileMode == nil || *dn.FileMode != 0o660 {
		t.Errorf("loop0 node = %+v", dn)
	}
	if dn := spec.Devices[1].ContainerEdits.DeviceNodes[0]; dn.UID != nil || dn.GID != nil || dn.FileMode != nil {
		t.Errorf("fuse node has owner or mode without config: %+v", dn)
	}
	if n := len(spec.Devices[2].ContainerEdits.DeviceNodes); n != 3 {
		t.Errorf("bundle has %d nodes, want 3", n)
	}

	res := pc.PrepareResult()
	if res.Err != nil || len(res.Devices) != 3 {
		t.Fatalf("PrepareResult = %+v", res)
	}
	d := res.Devices[1]
	if !reflect.DeepEqual(d.Requests, []string{"fs"}) || d.PoolName != ptNode || d.DeviceName != "fuse" ||
		!reflect.DeepEqual(d.CDIDeviceIDs, []string{"power-dev-plugin.io/claim=uid-foo_fuse_" + string(share)}) ||
		d.ShareID == nil || *d.ShareID != share {
		t.Errorf("PrepareResult device = %+v", d)
	}
	if res.Devices[0].ShareID != nil {
		t.Errorf("ShareID set without one in the allocation: %v", *res.Devices[0].ShareID)
	}
}

// TestCDIInjectRealDevices writes a spec for real device nodes, loads it
// with the CDI library's cache and injects it into an OCI spec, which is
// what containerd and CRI-O do, then checks what the container gets.
func TestCDIInjectRealDevices(t *testing.T) {
	null, ok := ptRealNode(t, "null", "/dev/null")
	if !ok {
		t.Skip("no /dev/null")
	}
	chars := discovery.Group{Name: "chars", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingShared},
		Devices: []discovery.Device{null}}
	results := ptResults(ptResult("null", "null"))
	fuse, haveFuse := ptRealNode(t, "fuse", "/dev/fuse")
	if haveFuse {
		chars.Devices = append(chars.Devices, fuse)
		results = append(results, ptResult("fuse", "fuse"))
	} else {
		t.Log("no /dev/fuse; testing without it")
	}
	inv := &discovery.Inventory{Groups: []discovery.Group{chars}}
	var loop discovery.Device
	haveLoop := false
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("losetup"); err == nil {
			path, _ := discoverytest.LoopDevice(t, 4<<20)
			loop, haveLoop = ptRealNode(t, "loop", path)
			inv.Groups = append(inv.Groups, discovery.Group{Name: "disks", Permissions: "rw",
				Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive}, Devices: []discovery.Device{loop}})
			results = append(results, ptResult("disk", "loop"))
		}
	}
	if !haveLoop {
		t.Log("not root or no losetup: testing without a real loop device")
	}
	claim := ptClaim("foo", results,
		ptConfig(resourceapi.AllocationConfigSourceClaim, ptParams(`"containerPath":"/dev/mynull","uid":1000,"gid":2000,"fileMode":416`), "null"),
		ptConfig(resourceapi.AllocationConfigSourceClaim, ptParams(`"permissions":"r"`), "disk"),
	)
	plan, err := PlanClaim(claim, ptNode, inv)
	if err != nil {
		t.Fatal(err)
	}
	pc := NewPreparedClaim(plan)
	dir := t.TempDir()
	w, err := NewCDIWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	if written, err := w.WriteSpec(pc); err != nil || !written {
		t.Fatalf("WriteSpec = %v, %v", written, err)
	}

	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("CDI cache errors: %v", errs)
	}
	var ids []string
	for _, d := range pc.PrepareResult().Devices {
		ids = append(ids, d.CDIDeviceIDs...)
	}
	if got := cache.ListDevices(); len(got) != len(ids) {
		t.Errorf("cache lists %q, want %q", got, ids)
	}

	inject := func(t *testing.T, uid, gid uint32) *oci.Spec {
		t.Helper()
		spec := &oci.Spec{Process: &oci.Process{User: oci.User{UID: uid, GID: gid}}, Linux: &oci.Linux{}}
		if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
			t.Fatalf("InjectDevices: %v (unresolved %v)", err, unresolved)
		}
		return spec
	}
	devByPath := func(spec *oci.Spec) map[string]oci.LinuxDevice {
		m := map[string]oci.LinuxDevice{}
		for _, d := range spec.Linux.Devices {
			m[d.Path] = d
		}
		return m
	}
	type rule struct {
		typ          string
		major, minor int64
		access       string
	}
	rules := func(spec *oci.Spec) []rule {
		var out []rule
		for _, r := range spec.Linux.Resources.Devices {
			if !r.Allow {
				t.Errorf("deny rule %+v", r)
			}
			out = append(out, rule{r.Type, ptr.Deref(r.Major, -1), ptr.Deref(r.Minor, -1), r.Access})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].major*1000+out[i].minor < out[j].major*1000+out[j].minor })
		return out
	}
	hostMode := func(path string) os.FileMode {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}

	t.Run("non-root container", func(t *testing.T) {
		spec := inject(t, 1001, 1002)
		devs := devByPath(spec)
		if len(devs) != len(ids) {
			t.Errorf("devices %+v, want %d", spec.Linux.Devices, len(ids))
		}
		// Configured owner and mode, at the configured path.
		d := devs["/dev/mynull"]
		if d.Type != "c" || d.Major != 1 || d.Minor != 3 || ptr.Deref(d.UID, 0) != 1000 || ptr.Deref(d.GID, 0) != 2000 ||
			d.FileMode == nil || *d.FileMode != 0o640 {
			t.Errorf("/dev/mynull = %+v", d)
		}
		if _, ok := devs["/dev/null"]; ok {
			t.Error("/dev/null injected at its host path although containerPath was set")
		}
		// Unset owner: the runtime gives the node to the container's user;
		// unset mode: the host node's mode.
		if haveFuse {
			d := devs["/dev/fuse"]
			if d.Type != "c" || d.Major != int64(fuse.Major) || d.Minor != int64(fuse.Minor) ||
				ptr.Deref(d.UID, 0) != 1001 || ptr.Deref(d.GID, 0) != 1002 || d.FileMode == nil || *d.FileMode != hostMode("/dev/fuse") {
				t.Errorf("/dev/fuse = %+v (uid %v gid %v mode %v)", d, ptr.Deref(d.UID, 0), ptr.Deref(d.GID, 0), ptr.Deref(d.FileMode, 0))
			}
		}
		if haveLoop {
			d := devs[loop.Path]
			if d.Type != "b" || d.Major != int64(loop.Major) || d.Minor != int64(loop.Minor) ||
				ptr.Deref(d.UID, 0) != 1001 || ptr.Deref(d.GID, 0) != 1002 || d.FileMode == nil || *d.FileMode != hostMode(loop.Path) {
				t.Errorf("%s = %+v", loop.Path, d)
			}
		}
		want := []rule{{"c", 1, 3, "rw"}}
		if haveLoop {
			want = append(want, rule{"b", int64(loop.Major), int64(loop.Minor), "r"})
		}
		if haveFuse {
			want = append(want, rule{"c", int64(fuse.Major), int64(fuse.Minor), "rw"})
		}
		sort.Slice(want, func(i, j int) bool { return want[i].major*1000+want[i].minor < want[j].major*1000+want[j].minor })
		if got := rules(spec); !reflect.DeepEqual(got, want) {
			t.Errorf("cgroup rules:\n got %+v\nwant %+v", got, want)
		}
	})

	t.Run("root container", func(t *testing.T) {
		spec := inject(t, 0, 0)
		for _, d := range spec.Linux.Devices {
			if d.Path == "/dev/mynull" {
				if ptr.Deref(d.UID, 0) != 1000 || ptr.Deref(d.GID, 0) != 2000 {
					t.Errorf("/dev/mynull = %+v", d)
				}
				continue
			}
			// Nothing configured, root process: left to the runtime (root).
			if d.UID != nil || d.GID != nil {
				t.Errorf("%s: uid %v gid %v, want unset", d.Path, ptr.Deref(d.UID, 0), ptr.Deref(d.GID, 0))
			}
		}
	})

	if haveLoop {
		t.Run("loop device is usable read-only", func(t *testing.T) {
			// The node the spec points at is the real, attached device.
			f, err := os.Open(loop.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			if _, err := f.Read(buf); err != nil {
				t.Errorf("read %s: %v", loop.Path, err)
			}
		})
	}
}

func TestCDIWriteSpecSkipsUnchangedAndRemoveIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	w, err := NewCDIWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	pc := NewPreparedClaim(mustPlan(t, ptClaim("foo", ptResults(ptResult("disk", "loop0"))), ptInventory()))
	path := filepath.Join(dir, pc.SpecName)
	if written, err := w.WriteSpec(pc); err != nil || !written {
		t.Fatalf("first WriteSpec = %v, %v", written, err)
	}
	before := ptFileID(t, path)
	if written, err := w.WriteSpec(pc); err != nil || written {
		t.Fatalf("second WriteSpec = %v, %v; want no write", written, err)
	}
	if after := ptFileID(t, path); after != before {
		t.Errorf("unchanged spec was rewritten: %s -> %s", before, after)
	}
	// A changed file is put right.
	if err := os.WriteFile(path, []byte(`{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim","devices":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if written, err := w.WriteSpec(pc); err != nil || !written {
		t.Fatalf("WriteSpec over a changed file = %v, %v", written, err)
	}
	// Remove both encodings; removing again is fine.
	yaml := strings.TrimSuffix(path, ".json") + ".yaml"
	if err := os.WriteFile(yaml, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := w.RemoveSpec(pc.UID); err != nil {
			t.Fatalf("RemoveSpec #%d: %v", i+1, err)
		}
	}
	for _, p := range []string{path, yaml} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	// No temp files left behind.
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
}

func TestCDIRecoverClaimFromSpec(t *testing.T) {
	share := types.UID("11111111-2222-3333-4444-555555555555")
	r := ptResult("fs", "fuse")
	r.ShareID = &share
	claim := ptClaim("foo", ptResults(ptResult("disk", "loop0"), r),
		ptConfig(resourceapi.AllocationConfigSourceClaim, ptParams(`"uid":7,"fileMode":384,"containerPath":"/dev/d"`), "disk"))
	pc := NewPreparedClaim(mustPlan(t, claim, ptInventory()))
	dir := t.TempDir()
	w, _ := NewCDIWriter(dir)
	if _, err := w.WriteSpec(pc); err != nil {
		t.Fatal(err)
	}
	files, err := w.listSpecs()
	if err != nil || len(files) != 1 || files[0].ClaimUID != pc.UID {
		t.Fatalf("listSpecs = %+v, %v", files, err)
	}
	spec, err := w.readSpec(files[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	got := preparedClaimFromSpec(files[0], spec, ptNode)
	if !got.Recovered || got.UID != pc.UID || got.SpecName != pc.SpecName || len(got.Devices) != 2 {
		t.Fatalf("recovered %+v", got)
	}
	for i, d := range got.Devices {
		want := pc.Devices[i]
		if d.Device != want.Device || d.CDIDeviceID != want.CDIDeviceID || d.Pool != ptNode ||
			!reflect.DeepEqual(d.ShareID, want.ShareID) || !reflect.DeepEqual(d.Nodes, want.Nodes) {
			t.Errorf("device %d:\n got %+v\nwant %+v", i, d, want)
		}
	}
	// The recovered claim writes the very same spec.
	want, _ := pc.CDISpec()
	again, _ := got.CDISpec()
	if !reflect.DeepEqual(want, again) {
		t.Errorf("recovered spec differs:\n got %+v\nwant %+v", again, want)
	}
}
