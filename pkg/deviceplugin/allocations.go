package deviceplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultPodResourcesSocket is the kubelet's pod-resources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// KubeletCheckpoint is the name of the kubelet's device-manager checkpoint
// in the device-plugin directory: every allocation with its response, kept
// across kubelet restarts and reboots.
const KubeletCheckpoint = "kubelet_internal_checkpoint"

// Allocations are the pods on this node that hold devices of this plugin's
// resources (power-dev-plugin/<group>), as the kubelet knows them.
type Allocations struct {
	// Source is where they were read: the pod-resources socket, or the
	// checkpoint file when the socket did not answer.
	Source string
	// Exact is false when they come from the checkpoint, which also lists
	// pods that ended since the kubelet's last allocation.
	Exact bool
	// Pods counts the pods per resource.
	Pods map[string]int
}

// Total is the number of pods, over all resources.
func (a Allocations) Total() int {
	n := 0
	for _, p := range a.Pods {
		n += p
	}
	return n
}

// KubeletAllocations asks the kubelet's pod-resources API on socket which
// running pods hold devices of this plugin's resources. When the socket is
// missing or does not answer it reads the kubelet's checkpoint in the
// device-plugin directory dir instead. No file and no socket: none. An
// error means that neither could be read.
func KubeletAllocations(ctx context.Context, socket, dir string) (Allocations, error) {
	a, sockErr := podResourcesAllocations(ctx, socket)
	if sockErr == nil {
		return a, nil
	}
	a, err := checkpointAllocations(filepath.Join(dir, KubeletCheckpoint))
	if err != nil {
		return a, fmt.Errorf("%w (and the pod-resources API: %v)", err, sockErr)
	}
	return a, nil
}

func podResourcesAllocations(ctx context.Context, socket string) (Allocations, error) {
	a := Allocations{Source: socket, Exact: true, Pods: map[string]int{}}
	if _, err := os.Stat(socket); err != nil {
		return a, err
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return a, err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return a, fmt.Errorf("pod-resources API at %s: %w", socket, err)
	}
	for _, p := range resp.GetPodResources() {
		held := map[string]bool{}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if isOurResource(d.GetResourceName()) && len(d.GetDeviceIds()) > 0 {
					held[d.GetResourceName()] = true
				}
			}
		}
		for r := range held {
			a.Pods[r]++
		}
	}
	return a, nil
}

// checkpointAllocations reads the kubelet's device-manager checkpoint
// (k8s.io/kubernetes pkg/kubelet/cm/devicemanager/checkpoint, unchanged
// since 1.20): {"Data":{"PodDeviceEntries":[{"PodUID",...,"ResourceName",...}]}}.
func checkpointAllocations(path string) (Allocations, error) {
	a := Allocations{Source: path, Pods: map[string]int{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("the kubelet's device-manager checkpoint: %w", err)
	}
	var cp struct {
		Data *struct {
			PodDeviceEntries []struct {
				PodUID       string
				ResourceName string
			}
		}
	}
	if err := json.Unmarshal(b, &cp); err != nil || cp.Data == nil {
		return a, fmt.Errorf("the kubelet's device-manager checkpoint %s is not in a format this plugin knows (%v)", path, err)
	}
	pods := map[string]map[string]bool{}
	for _, e := range cp.Data.PodDeviceEntries {
		if !isOurResource(e.ResourceName) {
			continue
		}
		if pods[e.ResourceName] == nil {
			pods[e.ResourceName] = map[string]bool{}
		}
		pods[e.ResourceName][e.PodUID] = true
	}
	for r, p := range pods {
		a.Pods[r] = len(p)
	}
	return a, nil
}

func isOurResource(name string) bool { return strings.HasPrefix(name, ResourceDomain+"/") }
