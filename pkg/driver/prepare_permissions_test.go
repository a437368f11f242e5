package driver

import (
	"reflect"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
)

// A group's permissions (and a DeviceClass's) are a ceiling set by the
// admin: a claim may ask for less, never more (review 2026-12-04, finding
// 3: a claim used to turn a read-only group into rwm).
func TestPlanClaimPermissionCeiling(t *testing.T) {
	class, claim := resourceapi.AllocationConfigSourceClass, resourceapi.AllocationConfigSourceClaim
	for _, tc := range []struct {
		name    string
		results []resourceapi.DeviceRequestAllocationResult
		configs []resourceapi.DeviceAllocationConfiguration
		want    []string // the nodes of the request, when planned
		wantErr []string // the problems, each a complete line
	}{{
		name:    "claim narrows a read-write group",
		results: ptResults(ptResult("disk", "loop0")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"r"`))},
		want:    []string{"/dev/loop0<-/dev/loop0 b 7:0 r"},
	}, {
		name:    "claim asks for mknod only on an rwm group",
		results: ptResults(ptResult("disk", "fuse")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"m"`))},
		want:    []string{"/dev/fuse<-/dev/fuse c 10:229 m"},
	}, {
		name:    "claim asks for the group's own permissions in another order",
		results: ptResults(ptResult("disk", "loop0")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"wr"`))},
		want:    []string{"/dev/loop0<-/dev/loop0 b 7:0 rw"},
	}, {
		name:    "class narrows, claim narrows further",
		results: ptResults(ptResult("disk", "fuse")),
		configs: []resourceapi.DeviceAllocationConfiguration{
			ptConfig(class, ptParams(`"permissions":"rw"`)),
			ptConfig(claim, ptParams(`"permissions":"r"`)),
		},
		want: []string{"/dev/fuse<-/dev/fuse c 10:229 r"},
	}, {
		name:    "claim asks for rwm on a read-only bundle",
		results: ptResults(ptResult("all", "mp-all")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"rwm"`))},
		wantErr: []string{`claim default/foo: request "all": config[0]: permissions: Forbidden: "rwm" is more than group "mp" allows ("r"): ` +
			`a DeviceClass or claim may narrow its group's permissions, never widen them; ask for a subset of "r", or have the node admin change the group`},
	}, {
		name:    "claim asks for mknod on a group with the default rw",
		results: ptResults(ptResult("z", "zero")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"rm"`))},
		wantErr: []string{`claim default/foo: request "z": config[0]: permissions: Forbidden: "rm" is more than group "nodefault" allows ("rw")`},
	}, {
		name:    "claim asks for more than its class",
		results: ptResults(ptResult("disk", "loop0")),
		configs: []resourceapi.DeviceAllocationConfiguration{
			ptConfig(class, ptParams(`"permissions":"r"`)),
			ptConfig(claim, ptParams(`"permissions":"rw"`)),
		},
		wantErr: []string{`claim default/foo: request "disk": config[1]: permissions: Forbidden: "rw" is more than the DeviceClass allows for group "disks" ("r", set by config[0]): ` +
			`a claim may narrow its class's permissions, never widen them`},
	}, {
		name:    "class config above the group, even when the claim narrows",
		results: ptResults(ptResult("all", "mp-all")),
		configs: []resourceapi.DeviceAllocationConfiguration{
			ptConfig(class, ptParams(`"permissions":"rw"`)),
			ptConfig(claim, ptParams(`"permissions":"r"`)),
		},
		wantErr: []string{`claim default/foo: request "all": config[0]: permissions: Forbidden: "rw" is more than group "mp" allows ("r")`},
	}, {
		name:    "one entry for two requests on two devices of the group: reported per request",
		results: ptResults(ptResult("a", "loop0"), ptResult("b", "loop1")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"rwm"`))},
		wantErr: []string{
			`claim default/foo: request "a": config[0]: permissions: Forbidden: "rwm" is more than group "disks" allows ("rw")`,
			`claim default/foo: request "b": config[0]: permissions: Forbidden: "rwm" is more than group "disks" allows ("rw")`,
		},
	}, {
		name:    "two devices of one request: reported once",
		results: ptResults(ptResult("disk", "loop0"), ptResult("disk", "loop1")),
		configs: []resourceapi.DeviceAllocationConfiguration{ptConfig(claim, ptParams(`"permissions":"rwm"`))},
		wantErr: []string{`claim default/foo: request "disk": config[0]: permissions: Forbidden: "rwm" is more than group "disks" allows ("rw")`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := PlanClaim(ptClaim("foo", tc.results, tc.configs...), ptNode, ptInventory())
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("PlanClaim: %v", err)
				}
				if got := nodesOf(plan, tc.results[0].Request); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %q, want %q", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; plan %+v", plan)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.wantErr) {
				t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(tc.wantErr), err)
			}
			for i, w := range tc.wantErr {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s...", i, lines[i], w)
				}
			}
		})
	}
}
