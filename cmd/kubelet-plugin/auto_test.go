package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
)

func TestChooseMode(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Group: "resource.k8s.io"}, "v1")
	served := modeProbe{ResourceSlices: true, NodeName: "n1", KubeletVersion: "v1.37.2"}
	with := func(f func(p *modeProbe)) modeProbe {
		p := served
		f(&p)
		return p
	}
	tests := []struct {
		name       string
		probe      modeProbe
		want       string
		wantReason string
	}{
		{"DRA served, kubelet 1.37", served, modeDRA, "serves resource.k8s.io/v1 and node n1 runs kubelet v1.37.2"},
		{"kubelet exactly 1.34", with(func(p *modeProbe) { p.KubeletVersion = "v1.34.0" }), modeDRA, "kubelet v1.34.0"},
		{"vendor kubelet version", with(func(p *modeProbe) { p.KubeletVersion = "v1.34.3+rhcos1" }), modeDRA, ""},
		{"kubelet older than the API server", with(func(p *modeProbe) { p.KubeletVersion = "v1.33.5" }), modeDevicePlugin, "runs kubelet v1.33.5, older than 1.34"},
		{"kubelet version garbage", with(func(p *modeProbe) { p.KubeletVersion = "latest" }), modeDevicePlugin, "does not parse"},
		{"resource.k8s.io/v1 not served", modeProbe{ResourceAPIErr: notFound, NodeName: "n1"}, modeDevicePlugin, "does not serve resource.k8s.io/v1"},
		{"discovery failed", modeProbe{ResourceAPIErr: errors.New("connection refused"), NodeName: "n1"}, modeDevicePlugin, "cannot tell whether"},
		{"served without resourceslices", with(func(p *modeProbe) { p.ResourceSlices = false }), modeDevicePlugin, "without resourceslices"},
		{"no node name", with(func(p *modeProbe) { p.NodeName = "" }), modeDevicePlugin, "no node name"},
		{"node unreadable", with(func(p *modeProbe) { p.NodeErr = errors.New("forbidden") }), modeDevicePlugin, "cannot read node n1"},
		{"no API client", modeProbe{ClientErr: errors.New("not in a cluster")}, modeDevicePlugin, "no access to the API server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode, reason := chooseMode(tc.probe)
			if mode != tc.want {
				t.Errorf("mode %s (%s), want %s", mode, reason, tc.want)
			}
			if reason == "" || !strings.Contains(reason, tc.wantReason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.wantReason)
			}
		})
	}
}

// The probe against a client. The fake clientset is the one fake here: no
// API server runs in unit tests; the cluster suite runs the real one.
func TestProbeMode(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"}}}
	oldNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.31.4"}}}
	resourceV1 := &metav1.APIResourceList{GroupVersion: "resource.k8s.io/v1", APIResources: []metav1.APIResource{
		{Name: "deviceclasses"}, {Name: "resourceclaims"}, {Name: "resourceslices"},
	}}
	tests := []struct {
		name      string
		node      *corev1.Node
		resources []*metav1.APIResourceList
		nodeName  string
		want      string
	}{
		{"1.37 cluster", node, []*metav1.APIResourceList{resourceV1}, "n1", modeDRA},
		{"old kubelet", oldNode, []*metav1.APIResourceList{resourceV1}, "n1", modeDevicePlugin},
		{"no DRA API", node, []*metav1.APIResourceList{{GroupVersion: "v1", APIResources: []metav1.APIResource{{Name: "nodes"}}}}, "n1", modeDevicePlugin},
		{"node missing", node, []*metav1.APIResourceList{resourceV1}, "n2", modeDevicePlugin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.node)
			client.Discovery().(*fakediscovery.FakeDiscovery).Resources = tc.resources
			p := probeMode(context.Background(), client, tc.nodeName, 0)
			if mode, reason := chooseMode(p); mode != tc.want {
				t.Errorf("mode %s (%s), want %s; probe %+v", mode, reason, tc.want, p)
			}
		})
	}
	// A 404 from discovery is the answer, not an error to retry.
	client := fake.NewClientset(node)
	p := probeMode(context.Background(), client, "n1", 0)
	var se *apierrors.StatusError
	if !errors.As(p.ResourceAPIErr, &se) || se.Status().Code != http.StatusNotFound {
		t.Errorf("probe of a server without resource.k8s.io/v1: %+v", p)
	}
}
