package kubelettest

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// PodResources stands in for the kubelet's pod-resources API (v1) on a
// unix socket: List answers with the pods set by SetPods, as the kubelet
// answers with its running pods and the devices each container holds.
type PodResources struct {
	mu   sync.Mutex
	pods []*podresourcesv1.PodResources
}

// PodDevices is one pod whose single container holds ids of resource.
func PodDevices(name, resource string, ids ...string) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Name: name, Namespace: "default", Containers: []*podresourcesv1.ContainerResources{{
		Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: resource, DeviceIds: ids}},
	}}}
}

// ServePodResources serves a PodResources on socket until the test ends.
func ServePodResources(t testing.TB, socket string, pods ...*podresourcesv1.PodResources) *PodResources {
	t.Helper()
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	p := &PodResources{pods: pods}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &podResourcesServer{p: p})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return p
}

// SetPods replaces the pods List answers with.
func (p *PodResources) SetPods(pods ...*podresourcesv1.PodResources) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pods = pods
}

type podResourcesServer struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	p *PodResources
}

func (s *podResourcesServer) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return &podresourcesv1.ListPodResourcesResponse{PodResources: s.p.pods}, nil
}
