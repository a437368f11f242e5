package deploy_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// The metrics Service of every rendering selects exactly the plugin pods
// and targets their named metrics port.
func TestMetricsService(t *testing.T) {
	for _, m := range renderings(t) {
		ds := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet)
		svc := m.get(t, "Service/"+namespace+"/power-dev-plugin-metrics").typed(t).(*corev1.Service)
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
			t.Errorf("%s: Service selector %v does not match the pod labels %v", m.what, svc.Spec.Selector, ds.Spec.Template.Labels)
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.Ports) != 1 ||
			svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
			t.Errorf("%s: Service %+v, want headless with one port metrics -> metrics", m.what, svc.Spec)
		}
		if slices.ContainsFunc(m.objs, func(o object) bool {
			k := o.u.GetKind()
			return k == "ServiceMonitor" || k == "PodMonitor"
		}) {
			t.Errorf("%s: a ServiceMonitor or PodMonitor by default", m.what)
		}
	}
}

// Helm's metrics values: off, another port, and the optional monitors.
func TestHelmMetrics(t *testing.T) {
	m := helmTemplate(t, "--set", "metrics.enabled=false")
	c := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 0 || slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "METRICS_ADDRESS" }) {
		t.Errorf("metrics.enabled=false: ports %v, env %v", c.Ports, c.Env)
	}
	if slices.Contains(m.keys(), "Service/"+namespace+"/power-dev-plugin-metrics") {
		t.Error("metrics.enabled=false: the metrics Service is rendered")
	}

	m = helmTemplate(t, "--set", "logVerbosity=4,logFormat=json")
	c = m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["LOG_VERBOSITY"] != "4" || env["LOG_FORMAT"] != "json" {
		t.Errorf("logVerbosity=4,logFormat=json: env %v", env)
	}

	m = helmTemplate(t, "--set", "metrics.port=9100,metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true",
		"--set", "metrics.serviceMonitor.labels.release=prom,metrics.serviceMonitor.interval=15s")
	ds := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet)
	c = ds.Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9100 {
		t.Errorf("metrics.port=9100: ports %v", c.Ports)
	}
	for _, e := range c.Env {
		if e.Name == "METRICS_ADDRESS" && e.Value != ":9100" {
			t.Errorf("metrics.port=9100: METRICS_ADDRESS=%q", e.Value)
		}
	}
	svc := m.get(t, "Service/"+namespace+"/power-dev-plugin-metrics").typed(t).(*corev1.Service)
	if svc.Spec.Ports[0].Port != 9100 {
		t.Errorf("metrics.port=9100: Service port %d", svc.Spec.Ports[0].Port)
	}

	sm := m.get(t, "ServiceMonitor/"+namespace+"/power-dev-plugin").u
	if sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v, want release=prom", sm.GetLabels())
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not match the Service labels %v", sel, svc.Labels)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["interval"] != "15s" {
		t.Errorf("ServiceMonitor endpoints %v", eps)
	}

	// The dashboard's node label.
	for _, o := range []*unstructured.Unstructured{sm, m.get(t, "PodMonitor/"+namespace+"/power-dev-plugin").u} {
		field := "endpoints"
		if o.GetKind() == "PodMonitor" {
			field = "podMetricsEndpoints"
		}
		eps, _, _ := unstructured.NestedSlice(o.Object, "spec", field)
		rl, _ := eps[0].(map[string]any)["relabelings"].([]any)
		if len(rl) != 1 || rl[0].(map[string]any)["targetLabel"] != "node" {
			t.Errorf("%s: relabelings %v, want the node label", o.GetKind(), rl)
		}
	}

	pm := m.get(t, "PodMonitor/"+namespace+"/power-dev-plugin").u
	sel, _, _ = unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if !labels.SelectorFromSet(sel).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %v does not match the pod labels %v", sel, ds.Spec.Template.Labels)
	}
	eps, _, _ = unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("PodMonitor endpoints %v", eps)
	}

	if _, err := helmTemplateErr(t, "--set", "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true"); err == nil {
		t.Error("a ServiceMonitor without the Service it selects rendered")
	}
}
