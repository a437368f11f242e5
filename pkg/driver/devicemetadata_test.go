package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// metadataFiles are the helper's metadata file of a claim's request and
// the CDI spec mounting it, where kubeletplugin v0.37.2 writes them.
func metadataFiles(dataDir, cdiDir string, c *resourceapi.ResourceClaim, request string) (file, spec string) {
	return filepath.Join(dataDir, metadataSubDir, c.Namespace+"_"+c.Name, request, "metadata.json"),
		filepath.Join(cdiDir, DriverName+"_metadata_"+string(c.UID)+"_"+request+".json")
}

// writeMetadataFiles puts files where the helper would have written them.
func writeMetadataFiles(t *testing.T, dataDir, cdiDir string, c *resourceapi.ResourceClaim, request string) (file, spec string) {
	t.Helper()
	file, spec = metadataFiles(dataDir, cdiDir, c, request)
	for _, f := range []string{file, spec} {
		if err := os.MkdirAll(filepath.Dir(f), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("{}"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return file, spec
}

// The real helper writes the metadata file with the claim's data, the
// runtime's CDI library finds the mount, and removeDeviceMetadata finds
// the same files the helper wrote.
func TestDriverDeviceMetadataFile(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("c1", exactRequestForTest("dev", "pdp")))[0]
	e := startDriver(t, newFakeClient(claim), inv)
	e.waitForDevices(t, "null")
	ctx := context.Background()
	dra := drapb.NewDRAPluginClient(dialUnix(t, filepath.Join(e.dataDir, "dra.sock")))
	ref := &drapb.Claim{Namespace: claim.Namespace, Name: claim.Name, Uid: string(claim.UID)}
	resp, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref}})
	if err != nil || resp.Claims[string(claim.UID)].Error != "" {
		t.Fatalf("prepare: %v %+v", err, resp)
	}
	ids := resp.Claims[string(claim.UID)].Devices[0].CdiDeviceIds
	file, spec := metadataFiles(e.dataDir, e.cdiDir, claim, "dev")
	cache, err := cdi.NewCache(cdi.WithSpecDirs(e.cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || cache.GetDevice(ids[1]) == nil {
		t.Fatalf("CDI IDs %v: no metadata device in %s", ids, e.cdiDir)
	}
	if m := cache.GetDevice(ids[1]).ContainerEdits.Mounts; len(m) != 1 || m[0].HostPath != file {
		t.Fatalf("metadata mount %+v, want host path %s", m, file)
	}

	// The file is a JSON stream; the first object is the newest version.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		APIVersion string `json:"apiVersion"`
		Requests   []struct {
			Devices []struct {
				Driver, Pool, Name string
				Attributes         map[string]resourceapi.DeviceAttribute
			}
		}
	}
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&md); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if len(md.Requests) != 1 || len(md.Requests[0].Devices) != 1 {
		t.Fatalf("metadata: %s", raw)
	}
	dev := md.Requests[0].Devices[0]
	var status v1alpha1.DeviceStatusData
	if st := dev.Attributes["status"].StringValue; st == nil || json.Unmarshal([]byte(*st), &status) != nil {
		t.Fatalf("no status attribute: %s", raw)
	}
	if dev.Name != "null" || status.Kind != v1alpha1.DeviceStatusKind || len(status.Nodes) != 1 || status.Nodes[0].HostPath != "/dev/null" ||
		*dev.Attributes["hostPath"].StringValue != "/dev/null" || *dev.Attributes["group"].StringValue != "null" {
		t.Errorf("metadata device: %+v, status %+v", dev, status)
	}

	if err := e.driver.state.removeDeviceMetadata(claim.Namespace, claim.Name, claim.UID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{file, spec} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", f, err)
		}
	}
}

func TestDeviceMetadataRemovedByStaleClaimCollection(t *testing.T) {
	e := newGCEnv(t)
	old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
	keep := ptClaim("keep", ptResults(ptResult("disk", "loop1")))
	e.prepared(t, old, keep)
	oldFile, oldSpec := writeMetadataFiles(t, e.dataDir, e.cdiDir, old, "disk")
	keepFile, keepSpec := writeMetadataFiles(t, e.dataDir, e.cdiDir, keep, "disk")
	e.api.del(old.Namespace, old.Name)
	e.twoRounds(t)
	if e.isPrepared(t, old) {
		t.Fatal("the stale claim was not collected")
	}
	for _, f := range []string{oldFile, oldSpec} {
		if ptExists(f) {
			t.Errorf("%s of the collected claim is still there", f)
		}
	}
	for _, f := range []string{keepFile, keepSpec} {
		if !ptExists(f) {
			t.Errorf("%s of a claim still prepared was removed", f)
		}
	}
}

func TestDeviceMetadataRemovedByRollback(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	// Left from an earlier prepare of the claim whose Unprepare never came.
	file, spec := writeMetadataFiles(t, env.dataDir, env.cdiDir, foo, "disk")
	failAt(s, "prepare:before-checkpoint", 1)
	if err := prepareErr(t, ctx, s, foo); err == nil {
		t.Fatal("prepare did not fail")
	}
	for _, f := range []string{file, spec} {
		if ptExists(f) {
			t.Errorf("%s is still there after the rollback", f)
		}
	}
}

func TestDeviceMetadataRemovedByUnprepare(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	file, spec := writeMetadataFiles(t, env.dataDir, env.cdiDir, foo, "disk")
	if err := s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(foo)})[foo.UID]; err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{file, spec} {
		if ptExists(f) {
			t.Errorf("%s is still there after Unprepare", f)
		}
	}
}

func TestDriverDeviceMetadataOff(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("c1", exactRequestForTest("dev", "pdp")))[0]
	e := startDriver(t, newFakeClient(claim), inv, WithDeviceMetadata(false))
	e.waitForDevices(t, "null")
	dra := drapb.NewDRAPluginClient(dialUnix(t, filepath.Join(e.dataDir, "dra.sock")))
	ref := &drapb.Claim{Namespace: claim.Namespace, Name: claim.Name, Uid: string(claim.UID)}
	resp, err := dra.NodePrepareResources(context.Background(), &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref}})
	if err != nil || resp.Claims[string(claim.UID)].Error != "" {
		t.Fatalf("prepare: %v %+v", err, resp)
	}
	file, spec := metadataFiles(e.dataDir, e.cdiDir, claim, "dev")
	if ids := resp.Claims[string(claim.UID)].Devices[0].CdiDeviceIds; len(ids) != 1 || ptExists(file) || ptExists(spec) {
		t.Errorf("metadata off: CDI IDs %v, file there %v, spec there %v", ids, ptExists(file), ptExists(spec))
	}
}
