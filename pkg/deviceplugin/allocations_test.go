package deviceplugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
)

// kubeletCheckpoint is a device-manager checkpoint as the kubelet writes it
// (pkg/kubelet/cm/devicemanager/checkpoint): two containers of pod p1 and
// one of p2 hold power-dev-plugin/dev IDs, p3 holds another vendor's.
const kubeletCheckpoint = `{"Data":{"PodDeviceEntries":[` +
	`{"PodUID":"p1","ContainerName":"a","ResourceName":"power-dev-plugin/dev","DeviceIDs":{"-1":["sdb"]},"AllocResp":"CgA="},` +
	`{"PodUID":"p1","ContainerName":"b","ResourceName":"power-dev-plugin/dev","DeviceIDs":{"-1":["sdc"]},"AllocResp":"CgA="},` +
	`{"PodUID":"p2","ContainerName":"a","ResourceName":"power-dev-plugin/db2","DeviceIDs":{"0":["db2"]},"AllocResp":"CgA="},` +
	`{"PodUID":"p3","ContainerName":"a","ResourceName":"example.com/gpu","DeviceIDs":{"-1":["gpu0"]},"AllocResp":"CgA="}],` +
	`"RegisteredDevices":{"power-dev-plugin/dev":["sdb","sdc"],"example.com/gpu":["gpu0"]}},"Checksum":1234}`

func TestKubeletAllocations(t *testing.T) {
	ctx := context.Background()
	dir := shortDir(t)
	socket := filepath.Join(dir, "pod-resources.sock")

	// Neither the socket nor the checkpoint: a node where the kubelet has
	// allocated nothing yet.
	a, err := KubeletAllocations(ctx, socket, dir)
	if err != nil || a.Total() != 0 {
		t.Errorf("nothing there: %+v, %v", a, err)
	}

	// The checkpoint alone: every pod it lists, not exact.
	cp := filepath.Join(dir, KubeletCheckpoint)
	if err := os.WriteFile(cp, []byte(kubeletCheckpoint), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err = KubeletAllocations(ctx, socket, dir)
	if err != nil || a.Exact || a.Source != cp || a.Pods["power-dev-plugin/dev"] != 1 || a.Pods["power-dev-plugin/db2"] != 1 || a.Total() != 2 {
		t.Errorf("from the checkpoint: %+v, %v; want p1 (dev) and p2 (db2), not the other vendor's p3", a, err)
	}

	// The pod-resources API wins: it lists running pods only (p1 ended).
	pr := kubelettest.ServePodResources(t, socket,
		kubelettest.PodDevices("p2", "power-dev-plugin/db2", "db2"),
		kubelettest.PodDevices("p3", "example.com/gpu", "gpu0"))
	a, err = KubeletAllocations(ctx, socket, dir)
	if err != nil || !a.Exact || a.Source != socket || a.Total() != 1 || a.Pods["power-dev-plugin/db2"] != 1 {
		t.Errorf("from the pod-resources API: %+v, %v; want p2 only", a, err)
	}
	pr.SetPods(kubelettest.PodDevices("p3", "example.com/gpu", "gpu0"))
	if a, err = KubeletAllocations(ctx, socket, dir); err != nil || a.Total() != 0 || !a.Exact {
		t.Errorf("no pod of ours running: %+v, %v (the checkpoint's stale entries must not count)", a, err)
	}

	// A checkpoint this plugin cannot read, and no API: an error, never
	// "no allocations".
	for _, bad := range []string{"{", `{"Checksum":1}`} {
		if err := os.WriteFile(cp, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if a, err := KubeletAllocations(ctx, filepath.Join(dir, "gone.sock"), dir); err == nil || !strings.Contains(err.Error(), cp) {
			t.Errorf("checkpoint %q: %+v, %v; want an error naming it", bad, a, err)
		}
	}
}
