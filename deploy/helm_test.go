package deploy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// helmOnlyLabels are the labels the chart adds to every object's metadata
// (not to the pod template or any selector, so that upgrading the chart
// alone rolls no pod): they say which release owns the object.
var helmOnlyLabels = []string{
	"app.kubernetes.io/instance",
	"app.kubernetes.io/managed-by",
	"app.kubernetes.io/version",
	"helm.sh/chart",
}

// normalize returns o in a form where the kustomize and the Helm rendering
// of the same object compare equal, and says why each difference is allowed:
//   - the Helm-only labels above are dropped from metadata.labels;
//   - the DaemonSet's env, volumes and volumeMounts are sorted by name (their
//     order means nothing; kustomize's patches and the chart's conditionals
//     put them in different orders);
//   - the ConfigMap's config.yaml is compared as the DiscoveryConfig it
//     decodes to: the kustomize file is written by hand, the chart's is
//     rendered by toYaml from the values.
//
// Everything else, including the whole CEL of every policy and DeviceClass,
// must be identical.
func normalize(t testing.TB, o object) map[string]any {
	t.Helper()
	var u map[string]any
	if o.u.GetKind() == "SecurityContextConstraints" {
		u = o.u.DeepCopy().Object
	} else {
		obj := o.typed(t)
		switch v := obj.(type) {
		case *appsv1.DaemonSet:
			spec := &v.Spec.Template.Spec
			sort.Slice(spec.Volumes, func(i, j int) bool { return spec.Volumes[i].Name < spec.Volumes[j].Name })
			for i := range spec.Containers {
				c := &spec.Containers[i]
				sort.Slice(c.Env, func(i, j int) bool { return c.Env[i].Name < c.Env[j].Name })
				sort.Slice(c.VolumeMounts, func(i, j int) bool { return c.VolumeMounts[i].MountPath < c.VolumeMounts[j].MountPath })
			}
		case *corev1.ConfigMap:
			cfg, _, err := v1alpha1.DecodeDiscoveryConfig([]byte(v.Data["config.yaml"]))
			if err != nil {
				t.Fatalf("%s: %v", o.key(), err)
			}
			v.Data["config.yaml"] = normalizeConfig(cfg)
		}
		var err error
		if u, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err != nil {
			t.Fatal(err)
		}
	}
	if md, ok := u["metadata"].(map[string]any); ok {
		if labels, ok := md["labels"].(map[string]any); ok {
			for _, l := range helmOnlyLabels {
				delete(labels, l)
			}
		}
	}
	return u
}

// assertSameObjects fails unless got and want hold the same objects, equal
// after normalize.
func assertSameObjects(t *testing.T, got, want *manifest) {
	t.Helper()
	if !slices.Equal(got.keys(), want.keys()) {
		t.Errorf("%s has %v\n%s has %v", got.what, got.keys(), want.what, want.keys())
	}
	for _, w := range want.objs {
		var g *object
		for i := range got.objs {
			if got.objs[i].key() == w.key() {
				g = &got.objs[i]
			}
		}
		if g == nil {
			continue
		}
		gn, wn := normalize(t, *g), normalize(t, w)
		if !reflect.DeepEqual(gn, wn) {
			gy, _ := yaml.Marshal(gn)
			wy, _ := yaml.Marshal(wn)
			t.Errorf("%s differs:\n--- %s\n%s\n--- %s\n%s\n--- first difference: %s", w.key(), got.what, gy, want.what, wy, firstDiff(string(gy), string(wy)))
		}
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "line " + al[i] + " <> " + bl[i]
		}
	}
	return "length"
}

// The chart with default values renders the objects of the dra overlay.
// The one allowed difference in the object set: the Namespace. `helm install
// --create-namespace` makes it (without the Pod Security labels), and a
// chart that also rendered it would fail on it; namespace.create=true renders
// it, with the labels, for installs without --create-namespace.
func TestHelmMatchesKustomize(t *testing.T) {
	dra := kustomize(t, "dra")
	withoutNS := &manifest{what: dra.what + " without its Namespace"}
	for _, o := range dra.objs {
		if o.u.GetKind() != "Namespace" {
			withoutNS.objs = append(withoutNS.objs, o)
		}
	}
	for _, tc := range []struct {
		name string
		helm *manifest
		want *manifest
	}{
		{"defaults", helmTemplate(t), withoutNS},
		{"namespace.create", helmTemplate(t, "--set", "namespace.create=true"), dra},
		{"openshift", helmTemplate(t, "--set", "openshift.enabled=true,namespace.create=true"), kustomize(t, "openshift")},
		{"device-plugin mode", helmTemplate(t, "--set", "mode=device-plugin,namespace.create=true"), kustomize(t, "legacy")},
	} {
		t.Run(tc.name, func(t *testing.T) { assertSameObjects(t, tc.helm, tc.want) })
	}
}

// values.schema.json is strict: a misspelt or unknown value fails the
// render instead of being ignored.
func TestHelmValuesSchema(t *testing.T) {
	for _, set := range []string{
		"imag.tag=v1",                       // unknown top-level key
		"image.digest=sha256:0",             // unknown nested key
		"mode=legacy",                       // not a mode
		"config.groups[0].inclde[0]=/dev/x", // misspelt group field
		"config.groups[0].permissions=rx",
		"config.groups[0].unhealthyTaintEffect=Evict",
		"config.groups[0].name=Disks",
		"config.allowInUse[0]=/dev/sd*",
		"tolerations[0].operator=Maybe",
		"kubeletDir=var/lib/kubelet",
		"deviceClasses.extendedResourceName=dev",
		"openshift.enabled=yes",
		"metrics.port=0",
		"logFormat=xml",
		"logVerbosity=-1",
		"metrics.serviceMonitor.interval=often",
		"metrics.podMonitor.enabld=true",
	} {
		if _, err := helmTemplateErr(t, "--set", set); err == nil {
			t.Errorf("--set %s: rendered; the schema should refuse it", set)
		}
	}
}

// The config value renders to a DiscoveryConfig the driver accepts, field for
// field.
func TestHelmConfigValue(t *testing.T) {
	values := `
config:
  groups:
  - name: db2
    include: ["/dev/mapper/mpath*"]
    exclude: ["/dev/mapper/mpathz"]
    types: [block]
    permissions: rw
    bundle: true
    sharing: {mode: shared, maxConsumers: 64}
  - name: nx-gzip
    include: ["/dev/crypto/nx-gzip"]
    sharing: {mode: shared}
  - name: fuse
    include: ["/dev/fuse"]
    permissions: rwm
    unhealthyTaintEffect: NoExecute
  allowInUse: ["/dev/sdb"]
`
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	m := helmTemplate(t, "-f", f)
	cm := m.get(t, "ConfigMap/"+namespace+"/power-dev-plugin-config").typed(t).(*corev1.ConfigMap)
	got, warnings, err := v1alpha1.DecodeDiscoveryConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("config.yaml:\n%s\n%v", cm.Data["config.yaml"], err)
	}
	var v struct {
		Config map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal([]byte(values), &v); err != nil {
		t.Fatal(err)
	}
	v.Config["apiVersion"], v.Config["kind"] = v1alpha1.APIVersion, v1alpha1.DiscoveryConfigKind
	doc, err := yaml.Marshal(v.Config)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := v1alpha1.DecodeDiscoveryConfig(doc)
	if err != nil {
		t.Fatal(err)
	}
	if normalizeConfig(got) != normalizeConfig(want) {
		t.Errorf("config.yaml:\n%s\nwant the same as the values:\n%s", cm.Data["config.yaml"], values)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
}

// Each switch of values.yaml does what it says and nothing else.
func TestHelmSwitches(t *testing.T) {
	count := func(m *manifest, kind string) int { return len(m.byKind(kind)) }

	m := helmTemplate(t, "--set", "deviceClasses.enabled=false")
	if n := count(m, "DeviceClass"); n != 0 {
		t.Errorf("deviceClasses.enabled=false: %d DeviceClasses", n)
	}
	m = helmTemplate(t, "--set", "deviceClasses.extendedResourceName=")
	for _, o := range m.byKind("DeviceClass") {
		if dc := o.typed(t).(*resourceapi.DeviceClass); dc.Spec.ExtendedResourceName != nil {
			t.Errorf("extendedResourceName empty: %s still has %s", dc.Name, *dc.Spec.ExtendedResourceName)
		}
	}
	m = helmTemplate(t, "--set", "admissionPolicies.restrictResourceSlices=false")
	if got := m.keys(); slices.Contains(got, "ValidatingAdmissionPolicy/resourceslices.power-dev-plugin.io") ||
		slices.Contains(got, "ValidatingAdmissionPolicyBinding/resourceslices.power-dev-plugin.io") ||
		!slices.Contains(got, "ValidatingAdmissionPolicy/deviceconfig.power-dev-plugin.io") {
		t.Errorf("restrictResourceSlices=false: %v", got)
	}
	m = helmTemplate(t, "--set", "admissionPolicies.validateDeviceConfig=false")
	if got := m.keys(); slices.Contains(got, "ValidatingAdmissionPolicy/deviceconfig.power-dev-plugin.io") ||
		!slices.Contains(got, "ValidatingAdmissionPolicy/resourceslices.power-dev-plugin.io") {
		t.Errorf("validateDeviceConfig=false: %v", got)
	}
	m = helmTemplate(t, "--set", "mode=auto")
	if count(m, "DeviceClass") != 3 || count(m, "ClusterRole") != 1 || count(m, "ValidatingAdmissionPolicy") != 2 {
		t.Errorf("mode=auto needs everything DRA needs: %v", m.keys())
	}

	m = helmTemplate(t, "--set", "image.repository=registry.example.com/pdp,image.tag=v9,image.pullPolicy=Always",
		"--set", "nodeSelector.storage=db2", "--set", "tolerations=null", "--set", "resources.limits.memory=256Mi")
	ds := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet)
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "registry.example.com/pdp:v9" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	if !reflect.DeepEqual(pod.NodeSelector, map[string]string{"storage": "db2"}) || len(pod.Tolerations) != 0 {
		t.Errorf("nodeSelector %v, tolerations %v", pod.NodeSelector, pod.Tolerations)
	}
	if got := c.Resources.Limits.Memory().String(); got != "256Mi" {
		t.Errorf("memory limit %s", got)
	}

	// Another namespace: every namespaced object and every reference to the
	// ServiceAccount follows.
	m = helmTemplate(t, "--namespace", "devices", "--set", "namespace.create=true,openshift.enabled=true")
	for _, o := range m.objs {
		if ns := o.u.GetNamespace(); ns != "" && ns != "devices" {
			t.Errorf("--namespace devices: %s", o.key())
		}
		switch b := o.u.GetKind(); b {
		case "ClusterRoleBinding":
			crb := o.typed(t).(*rbacv1.ClusterRoleBinding)
			if crb.Subjects[0].Namespace != "devices" {
				t.Errorf("--namespace devices: %s binds %+v", o.key(), crb.Subjects)
			}
		case "RoleBinding":
			rb := o.typed(t).(*rbacv1.RoleBinding)
			if rb.Subjects[0].Namespace != "devices" {
				t.Errorf("--namespace devices: %s binds %+v", o.key(), rb.Subjects)
			}
		}
	}
	if !slices.Contains(m.keys(), "Namespace/devices") {
		t.Errorf("--namespace devices, namespace.create: %v", m.keys())
	}
}
