package driver

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Test fixtures for the prepare/cdi/checkpoint/state tests. Names start
// with "pt" so they do not collide with other tests of the package.

const ptNode = "node-a"

// ptInventory has an exclusive group of two loop disks, a shared group
// with /dev/fuse, a bundle of three multipath nodes (read-only by default)
// and a group whose permissions are left empty.
func ptInventory() *discovery.Inventory {
	return &discovery.Inventory{Groups: []discovery.Group{
		{
			Name: "disks", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
			Devices: []discovery.Device{
				{Name: "loop0", Group: "disks", Path: "/dev/loop0", Type: v1alpha1.DeviceTypeBlock, Major: 7, Minor: 0},
				{Name: "loop1", Group: "disks", Path: "/dev/loop1", Type: v1alpha1.DeviceTypeBlock, Major: 7, Minor: 1},
			},
		},
		{
			Name: "fuse", Permissions: "rwm", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingShared},
			Devices: []discovery.Device{
				{Name: "fuse", Group: "fuse", Path: "/dev/fuse", Type: v1alpha1.DeviceTypeChar, Major: 10, Minor: 229},
			},
		},
		{
			Name: "mp", Permissions: "r", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
			Bundle: true, BundleName: "mp-all",
			Devices: []discovery.Device{
				{Name: "mpatha", Group: "mp", Path: "/dev/mapper/mpatha", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 0},
				{Name: "mpathb", Group: "mp", Path: "/dev/mapper/mpathb", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 1},
				{Name: "mpathc", Group: "mp", Path: "/dev/mapper/mpathc", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 2},
			},
		},
		{
			Name: "nodefault", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
			Devices: []discovery.Device{
				{Name: "zero", Group: "nodefault", Path: "/dev/zero", Type: v1alpha1.DeviceTypeChar, Major: 1, Minor: 5},
			},
		},
	}}
}

// ptResult is a result of this driver on ptNode.
func ptResult(request, device string) resourceapi.DeviceRequestAllocationResult {
	return resourceapi.DeviceRequestAllocationResult{Request: request, Driver: DriverName, Pool: ptNode, Device: device}
}

// ptConfig is an opaque config entry of this driver.
func ptConfig(source resourceapi.AllocationConfigSource, params string, requests ...string) resourceapi.DeviceAllocationConfiguration {
	return resourceapi.DeviceAllocationConfiguration{
		Source:   source,
		Requests: requests,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     DriverName,
			Parameters: runtime.RawExtension{Raw: []byte(params)},
		}},
	}
}

// ptParams is a DeviceConfig document with the given fields.
func ptParams(fields string) string {
	s := `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig"`
	if fields != "" {
		s += "," + fields
	}
	return s + "}"
}

// ptClaim is an allocated claim default/<name> with UID "uid-<name>".
func ptClaim(name string, results []resourceapi.DeviceRequestAllocationResult, configs ...resourceapi.DeviceAllocationConfiguration) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{Results: results, Config: configs},
		}},
	}
}

func ptResults(rs ...resourceapi.DeviceRequestAllocationResult) []resourceapi.DeviceRequestAllocationResult {
	return rs
}

func mustPlan(t testing.TB, claim *resourceapi.ResourceClaim, inv *discovery.Inventory) *ClaimPlan {
	t.Helper()
	plan, err := PlanClaim(claim, ptNode, inv)
	if err != nil {
		t.Fatalf("PlanClaim: %v", err)
	}
	return plan
}

// nodesOf returns the nodes of request as "containerPath<-hostPath type maj:min perms [uid] [gid] [mode]".
func nodesOf(plan *ClaimPlan, request string) []string {
	var out []string
	for _, d := range plan.Devices {
		if d.Request != request {
			continue
		}
		for _, n := range d.Nodes {
			s := fmt.Sprintf("%s<-%s %s %d:%d %s", n.ContainerPath, n.HostPath, n.Type, n.Major, n.Minor, n.Permissions)
			if n.UID != nil {
				s += fmt.Sprintf(" uid=%d", *n.UID)
			}
			if n.GID != nil {
				s += fmt.Sprintf(" gid=%d", *n.GID)
			}
			if n.FileMode != nil {
				s += fmt.Sprintf(" mode=%#o", *n.FileMode)
			}
			out = append(out, s)
		}
	}
	return out
}

func TestPlanClaimSingleDeviceDefaults(t *testing.T) {
	claim := ptClaim("foo", ptResults(ptResult("disk", "loop1")))
	plan := mustPlan(t, claim, ptInventory())
	if plan.Namespace != "default" || plan.Name != "foo" || plan.UID != "uid-foo" || plan.Allocation == "" {
		t.Errorf("plan header = %+v", plan)
	}
	want := []PlannedDevice{{
		Request: "disk", Pool: ptNode, Device: "loop1", Group: "disks", Exclusive: true,
		Nodes: []PlannedNode{{ContainerPath: "/dev/loop1", HostPath: "/dev/loop1", Type: "b", Major: 7, Minor: 1, Permissions: "rw"}},
	}}
	if !reflect.DeepEqual(plan.Devices, want) {
		t.Errorf("devices:\n got %+v\nwant %+v", plan.Devices, want)
	}
	// UID, GID and mode stay unset: the runtime gives the node to the
	// container's user.
	n := plan.Devices[0].Nodes[0]
	if n.UID != nil || n.GID != nil || n.FileMode != nil {
		t.Errorf("owner/mode set without config: %+v", n)
	}
}

func TestPlanClaimGroupWithoutPermissionsGetsDefault(t *testing.T) {
	plan := mustPlan(t, ptClaim("foo", ptResults(ptResult("z", "zero"))), ptInventory())
	if got := nodesOf(plan, "z"); !reflect.DeepEqual(got, []string{"/dev/zero<-/dev/zero c 1:5 rw"}) {
		t.Errorf("nodes = %q", got)
	}
}

func TestPlanClaimBundleExpandsToEveryNode(t *testing.T) {
	plan := mustPlan(t, ptClaim("foo", ptResults(ptResult("all", "mp-all"))), ptInventory())
	if len(plan.Devices) != 1 || plan.Devices[0].Device != "mp-all" || plan.Devices[0].Group != "mp" {
		t.Fatalf("devices = %+v", plan.Devices)
	}
	want := []string{
		"/dev/mapper/mpatha<-/dev/mapper/mpatha b 253:0 r",
		"/dev/mapper/mpathb<-/dev/mapper/mpathb b 253:1 r",
		"/dev/mapper/mpathc<-/dev/mapper/mpathc b 253:2 r",
	}
	if got := nodesOf(plan, "all"); !reflect.DeepEqual(got, want) {
		t.Errorf("nodes:\n got %q\nwant %q", got, want)
	}
}

func TestPlanClaimIgnoresOtherDriversAndPools(t *testing.T) {
	other := ptResult("gpu", "gpu-0")
	other.Driver = "gpu.example.com"
	otherPool := ptResult("disk2", "loop0")
	otherPool.Pool = "node-b"
	otherCfg := ptConfig(resourceapi.AllocationConfigSourceClaim, `{"not":"ours"}`)
	otherCfg.Opaque.Driver = "gpu.example.com"
	claim := ptClaim("foo", ptResults(other, ptResult("disk", "loop1"), otherPool), otherCfg,
		resourceapi.DeviceAllocationConfiguration{Source: resourceapi.AllocationConfigSourceClaim}) // no opaque config
	plan := mustPlan(t, claim, ptInventory())
	if len(plan.Devices) != 1 || plan.Devices[0].Device != "loop1" {
		t.Fatalf("devices = %+v, want only loop1", plan.Devices)
	}
	// The other driver's config does not change the fingerprint source
	// either: a plan of the same claim without it has the same fingerprint.
	claim2 := ptClaim("foo", ptResults(ptResult("disk", "loop1")))
	if mustPlan(t, claim2, ptInventory()).Allocation != plan.Allocation {
		t.Error("fingerprint depends on other drivers' results or configs")
	}
	// A claim with nothing for this node is a valid, empty plan.
	plan = mustPlan(t, ptClaim("bar", ptResults(other, otherPool)), ptInventory())
	if len(plan.Devices) != 0 {
		t.Errorf("devices = %+v, want none", plan.Devices)
	}
}

func TestPlanClaimPrecedence(t *testing.T) {
	class, claimSrc := resourceapi.AllocationConfigSourceClass, resourceapi.AllocationConfigSourceClaim
	for _, tc := range []struct {
		name    string
		configs []resourceapi.DeviceAllocationConfiguration
		want    string
	}{
		{
			name: "group default only",
			want: "/dev/loop0<-/dev/loop0 b 7:0 rw",
		},
		{
			name:    "class overrides group",
			configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(class, ptParams(`"permissions":"r"`))},
			want:    "/dev/loop0<-/dev/loop0 b 7:0 r",
		},
		{
			name: "claim overrides class even when listed first",
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(claimSrc, ptParams(`"permissions":"r"`)),
				ptConfig(class, ptParams(`"permissions":"rw","uid":1000`)),
			},
			want: "/dev/loop0<-/dev/loop0 b 7:0 r uid=1000",
		},
		{
			name: "later class entry wins field by field",
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(class, ptParams(`"permissions":"r","gid":5`)),
				ptConfig(class, ptParams(`"permissions":"w"`)),
			},
			want: "/dev/loop0<-/dev/loop0 b 7:0 w gid=5",
		},
		{
			name: "later claim entry wins field by field",
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(claimSrc, ptParams(`"uid":1,"fileMode":384`)),
				ptConfig(claimSrc, ptParams(`"uid":2,"containerPath":"/dev/data"`)),
			},
			want: "/dev/data<-/dev/loop0 b 7:0 rw uid=2 mode=0600",
		},
		{
			name:    "permissions are normalized",
			configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claimSrc, ptParams(`"permissions":"wr"`))},
			want:    "/dev/loop0<-/dev/loop0 b 7:0 rw",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := mustPlan(t, ptClaim("foo", ptResults(ptResult("disk", "loop0")), tc.configs...), ptInventory())
			if got := nodesOf(plan, "disk"); !reflect.DeepEqual(got, []string{tc.want}) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPlanClaimRequestFilters(t *testing.T) {
	claimSrc := resourceapi.AllocationConfigSourceClaim
	claim := ptClaim("foo",
		ptResults(ptResult("a", "loop0"), ptResult("b/fast", "loop1"), ptResult("c/slow", "fuse")),
		ptConfig(claimSrc, ptParams(`"uid":1`)),                  // all requests
		ptConfig(claimSrc, ptParams(`"uid":2`), "a"),             // a only
		ptConfig(claimSrc, ptParams(`"gid":3`), "b"),             // b and all its subrequests
		ptConfig(claimSrc, ptParams(`"gid":4`), "c/fast"),        // not the chosen subrequest
		ptConfig(claimSrc, ptParams(`"fileMode":416`), "c/slow"), // exactly the chosen subrequest
		ptConfig(claimSrc, ptParams(`"permissions":"r"`), "nope"),
	)
	plan := mustPlan(t, claim, ptInventory())
	for req, want := range map[string]string{
		"a":      "/dev/loop0<-/dev/loop0 b 7:0 rw uid=2",
		"b/fast": "/dev/loop1<-/dev/loop1 b 7:1 rw uid=1 gid=3",
		"c/slow": "/dev/fuse<-/dev/fuse c 10:229 rwm uid=1 mode=0640",
	} {
		if got := nodesOf(plan, req); !reflect.DeepEqual(got, []string{want}) {
			t.Errorf("request %s: got %q, want %q", req, got, want)
		}
	}
}

func TestPlanClaimAdminAccessAndShareID(t *testing.T) {
	r1 := ptResult("fuse1", "fuse")
	r1.ShareID = ptr.To(types.UID("11111111-2222-3333-4444-555555555555"))
	r2 := ptResult("admin", "loop0")
	r2.AdminAccess = ptr.To(true)
	plan := mustPlan(t, ptClaim("foo", ptResults(r1, r2)), ptInventory())
	if d := plan.Devices[0]; d.ShareID == nil || *d.ShareID != *r1.ShareID || d.Exclusive {
		t.Errorf("shared device = %+v", d)
	}
	if d := plan.Devices[1]; !d.AdminAccess || !d.Exclusive {
		t.Errorf("admin device = %+v", d)
	}
}

func TestPlanClaimIsDeterministic(t *testing.T) {
	mk := func() *resourceapi.ResourceClaim {
		return ptClaim("foo", ptResults(ptResult("all", "mp-all"), ptResult("d", "loop0")),
			ptConfig(resourceapi.AllocationConfigSourceClass, ptParams(`"uid":1000`)))
	}
	a, _ := json.Marshal(mustPlan(t, mk(), ptInventory()))
	b, _ := json.Marshal(mustPlan(t, mk(), ptInventory()))
	if string(a) != string(b) {
		t.Errorf("two plans of the same claim differ:\n%s\n%s", a, b)
	}
	// The fingerprint changes with the allocation and the config.
	base := mustPlan(t, mk(), ptInventory()).Allocation
	c := mk()
	c.Status.Allocation.Devices.Results[1].Device = "loop1"
	if mustPlan(t, c, ptInventory()).Allocation == base {
		t.Error("fingerprint ignores the allocated device")
	}
	c = mk()
	c.Status.Allocation.Devices.Config[0].Opaque.Parameters.Raw = []byte(ptParams(`"permissions":"r"`))
	if mustPlan(t, c, ptInventory()).Allocation == base {
		t.Error("fingerprint ignores the config")
	}
}

// TestPlanClaimErrors covers every way a claim is refused. Each message
// must name the claim, the request and config entry where there is one,
// and the field.
func TestPlanClaimErrors(t *testing.T) {
	claimSrc := resourceapi.AllocationConfigSourceClaim
	one := ptResults(ptResult("disk", "loop0"))
	cfg := func(params string) []resourceapi.DeviceAllocationConfiguration {
		return []resourceapi.DeviceAllocationConfiguration{
			ptConfig(resourceapi.AllocationConfigSourceClass, ptParams("")), // config[0] is fine
			ptConfig(claimSrc, params),                                      // config[1] is the bad one
		}
	}
	for _, tc := range []struct {
		name    string
		results []resourceapi.DeviceRequestAllocationResult
		configs []resourceapi.DeviceAllocationConfiguration
		inv     *discovery.Inventory
		want    []string // substrings of the error, in order
	}{
		{
			name:    "unknown kind",
			results: one,
			configs: cfg(`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"GpuConfig"}`),
			want:    []string{`claim default/foo: request "disk": config[1]: kind`, `GpuConfig`},
		},
		{
			name:    "bad apiVersion",
			results: one,
			configs: cfg(`{"apiVersion":"power-dev-plugin.io/v2","kind":"DeviceConfig"}`),
			want:    []string{`claim default/foo: request "disk": config[1]: apiVersion`, `power-dev-plugin.io/v2`},
		},
		{
			name:    "unknown field",
			results: one,
			configs: cfg(ptParams(`"permision":"r"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: permision`},
		},
		{
			name:    "not JSON",
			results: one,
			configs: cfg(`{"apiVersion":`),
			want:    []string{`claim default/foo: request "disk": config[1]: `},
		},
		{
			name:    "empty parameters",
			results: one,
			configs: cfg(``),
			want:    []string{`claim default/foo: request "disk": config[1]: parameters: Required value`},
		},
		{
			name:    "bad permissions",
			results: one,
			configs: cfg(ptParams(`"permissions":"rx"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: permissions: Invalid value: "rx"`},
		},
		{
			name:    "containerPath relative",
			results: one,
			configs: cfg(ptParams(`"containerPath":"dev/data"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: containerPath: Invalid value: "dev/data"`},
		},
		{
			name:    "containerPath outside /dev",
			results: one,
			configs: cfg(ptParams(`"containerPath":"/etc/x"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: containerPath: Invalid value: "/etc/x": `, `/dev`},
		},
		{
			name:    "containerPath with ..",
			results: one,
			configs: cfg(ptParams(`"containerPath":"/dev/../etc/shadow"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: containerPath: Invalid value: "/dev/../etc/shadow"`},
		},
		{
			name:    "containerPath shadows what the container needs",
			results: one,
			configs: cfg(ptParams(`"containerPath":"/dev/null"`)),
			want:    []string{`claim default/foo: request "disk": config[1]: containerPath: Invalid value: "/dev/null": must not be /dev/null or below it`},
		},
		{
			name:    "containerPath on a bundle",
			results: ptResults(ptResult("all", "mp-all")),
			configs: cfg(ptParams(`"containerPath":"/dev/data"`)),
			want: []string{`claim default/foo: request "all": config[1]: containerPath: Invalid value: "/dev/data": ` +
				`only valid when the request resolves to exactly one device node, but it resolves to 3 (bundle "mp-all" of group "mp" has 3)`},
		},
		{
			name:    "containerPath on a request with two devices",
			results: ptResults(ptResult("disk", "loop0"), ptResult("disk", "loop1")),
			configs: cfg(ptParams(`"containerPath":"/dev/data"`)),
			want: []string{`claim default/foo: request "disk": config[1]: containerPath: Invalid value: "/dev/data": ` +
				`only valid when the request resolves to exactly one device node, but it resolves to 2`},
		},
		{
			name:    "uid negative",
			results: one,
			configs: cfg(ptParams(`"uid":-1`)),
			want:    []string{`claim default/foo: request "disk": config[1]: uid: Invalid value: -1`},
		},
		{
			name:    "gid too large",
			results: one,
			configs: cfg(ptParams(`"gid":4294967295`)),
			want:    []string{`claim default/foo: request "disk": config[1]: gid: Invalid value: 4294967295`},
		},
		{
			name:    "fileMode with setuid",
			results: one,
			configs: cfg(ptParams(`"fileMode":2541`)), // 04755
			want:    []string{`claim default/foo: request "disk": config[1]: fileMode: Invalid value: 04755`},
		},
		{
			name:    "device gone",
			results: ptResults(ptResult("disk", "loop0"), ptResult("disk", "loop9")),
			want:    []string{`device "loop9" allocated to claim default/foo is no longer on this node`},
		},
		{
			name:    "bundle gone",
			results: ptResults(ptResult("all", "mp-all")),
			inv:     &discovery.Inventory{},
			want:    []string{`device "mp-all" allocated to claim default/foo is no longer on this node`},
		},
		{
			name:    "bundle emptied",
			results: ptResults(ptResult("all", "mp-all")),
			inv: &discovery.Inventory{Groups: []discovery.Group{{Name: "mp", Bundle: true, BundleName: "mp-all",
				Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive}}}},
			want: []string{`device "mp-all" allocated to claim default/foo is no longer on this node`},
		},
		{
			name:    "two nodes at the same container path",
			results: ptResults(ptResult("a", "loop0"), ptResult("b", "loop1")),
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(claimSrc, ptParams(`"containerPath":"/dev/data"`)),
			},
			want: []string{`claim default/foo: container path /dev/data: request "a" puts device node /dev/loop0 (b 7:0) there and request "b" puts /dev/loop1 (b 7:1) there`},
		},
		{
			name:    "a node at another node's default path",
			results: ptResults(ptResult("a", "loop0"), ptResult("b", "loop1")),
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(claimSrc, ptParams(`"containerPath":"/dev/loop0"`), "b"),
			},
			want: []string{`claim default/foo: container path /dev/loop0: request "a" puts device node /dev/loop0 (b 7:0) there and request "b" puts /dev/loop1 (b 7:1) there`},
		},
		{
			name: "one node twice with different settings",
			results: func() []resourceapi.DeviceRequestAllocationResult {
				a, b := ptResult("a", "fuse"), ptResult("b", "fuse")
				a.ShareID, b.ShareID = ptr.To(types.UID("s1")), ptr.To(types.UID("s2"))
				return ptResults(a, b)
			}(),
			configs: []resourceapi.DeviceAllocationConfiguration{
				ptConfig(claimSrc, ptParams(`"permissions":"r"`), "b"),
			},
			want: []string{`claim default/foo: container path /dev/fuse: requests "a" and "b" give device node /dev/fuse (c 10:229) different permissions, owner or mode (permissions rwm vs permissions r)`},
		},
		{
			name:    "unknown config source",
			results: one,
			configs: []resourceapi.DeviceAllocationConfiguration{ptConfig("FromNowhere", ptParams(""))},
			want:    []string{`claim default/foo: config[0]: source: Unsupported value: "FromNowhere"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := tc.inv
			if inv == nil {
				inv = ptInventory()
			}
			plan, err := PlanClaim(ptClaim("foo", tc.results, tc.configs...), ptNode, inv)
			if err == nil {
				t.Fatalf("no error; plan %+v", plan)
			}
			msg := err.Error()
			t.Logf("message: %s", msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("want exactly one problem, got:\n%s", msg)
			}
			rest := msg
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q does not contain %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestPlanClaimSameNodeTwiceWithSameSettingsIsFine(t *testing.T) {
	a, b := ptResult("a", "fuse"), ptResult("b", "fuse")
	a.ShareID, b.ShareID = ptr.To(types.UID("s1")), ptr.To(types.UID("s2"))
	plan := mustPlan(t, ptClaim("foo", ptResults(a, b)), ptInventory())
	if len(plan.Devices) != 2 {
		t.Errorf("devices = %+v", plan.Devices)
	}
}

func TestPlanClaimReportsAllProblemsOnce(t *testing.T) {
	claimSrc := resourceapi.AllocationConfigSourceClaim
	// One bad entry for all requests is reported once (against the first
	// request), together with a gone device.
	claim := ptClaim("foo", ptResults(ptResult("a", "loop0"), ptResult("b", "loop1"), ptResult("c", "gone")),
		ptConfig(claimSrc, ptParams(`"uid":-5`)))
	_, err := PlanClaim(claim, ptNode, ptInventory())
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if n := strings.Count(msg, "uid: Invalid value: -5"); n != 1 {
		t.Errorf("uid problem reported %d times: %s", n, msg)
	}
	for _, w := range []string{`request "a": config[0]: uid`, `device "gone" allocated to claim default/foo`} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
}

func TestPlanClaimNotAllocated(t *testing.T) {
	claim := ptClaim("foo", nil)
	claim.Status.Allocation = nil
	_, err := PlanClaim(claim, ptNode, ptInventory())
	if err == nil || err.Error() != "claim default/foo is not allocated" {
		t.Errorf("err = %v", err)
	}
}

// TestPlanClaimWithSchedulerAllocation plans claims that the scheduler's
// own allocator allocated from what BuildResources publishes: the device
// names and share IDs in real results resolve.
func TestPlanClaimWithSchedulerAllocation(t *testing.T) {
	inv := ptInventory()
	claims := allocateForTest(t, ptNode, inv, nil,
		claimForTest("one", exactRequestForTest("r", "", `device.attributes["power-dev-plugin.io"].path == "/dev/loop1"`)),
		claimForTest("bundle", exactRequestForTest("r", "", `device.attributes["power-dev-plugin.io"].group == "mp"`)),
		claimForTest("shared", exactRequestForTest("r", "", `device.attributes["power-dev-plugin.io"].group == "fuse"`)),
	)
	for _, c := range claims {
		plan, err := PlanClaim(c, ptNode, inv)
		if err != nil {
			t.Fatalf("claim %s: %v", c.Name, err)
		}
		if len(plan.Devices) != 1 {
			t.Fatalf("claim %s: devices %+v", c.Name, plan.Devices)
		}
		d := plan.Devices[0]
		switch c.Name {
		case "one":
			if d.Device != "loop1" || len(d.Nodes) != 1 {
				t.Errorf("one: %+v", d)
			}
		case "bundle":
			if d.Device != "mp-all" || len(d.Nodes) != 3 {
				t.Errorf("bundle: %+v", d)
			}
		case "shared":
			if d.Device != "fuse" || d.Exclusive {
				t.Errorf("shared: %+v", d)
			}
			t.Logf("shared device share ID: %v", ptr.Deref(d.ShareID, "<none>"))
		}
	}
}
