package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Every object of every rendering decodes strictly, and the set of objects
// is the expected one.
func TestObjectsDecodeStrictly(t *testing.T) {
	dra := []string{
		"ClusterRole/power-dev-plugin",
		"ClusterRoleBinding/power-dev-plugin",
		"ConfigMap/power-dev-plugin/power-dev-plugin-config",
		"DaemonSet/power-dev-plugin/power-dev-plugin",
		"DeviceClass/block.power-dev-plugin.io",
		"DeviceClass/nx-gzip.power-dev-plugin.io",
		"DeviceClass/power-dev-plugin.io",
		"Namespace/power-dev-plugin",
		"Service/power-dev-plugin/power-dev-plugin-metrics",
		"ServiceAccount/power-dev-plugin/power-dev-plugin",
		"ValidatingAdmissionPolicy/deviceconfig.power-dev-plugin.io",
		"ValidatingAdmissionPolicy/resourceslices.power-dev-plugin.io",
		"ValidatingAdmissionPolicyBinding/deviceconfig.power-dev-plugin.io",
		"ValidatingAdmissionPolicyBinding/resourceslices.power-dev-plugin.io",
	}
	openshift := append(slices.Clone(dra),
		"Role/power-dev-plugin/power-dev-plugin-scc",
		"RoleBinding/power-dev-plugin/power-dev-plugin-scc",
		"SecurityContextConstraints/power-dev-plugin")
	legacy := []string{
		"ConfigMap/power-dev-plugin/power-dev-plugin-config",
		"DaemonSet/power-dev-plugin/power-dev-plugin",
		"Namespace/power-dev-plugin",
		"Service/power-dev-plugin/power-dev-plugin-metrics",
		"ServiceAccount/power-dev-plugin/power-dev-plugin",
	}
	without := func(keys []string, drop string) []string {
		return slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == drop })
	}
	for _, tc := range []struct {
		m    *manifest
		want []string
	}{
		{kustomize(t, "dra"), dra},
		{kustomize(t, "openshift"), openshift},
		{kustomize(t, "legacy"), legacy},
		{helmTemplate(t), without(dra, "Namespace/power-dev-plugin")},
		{helmTemplate(t, "--set", "namespace.create=true"), dra},
		{helmTemplate(t, "--set", "openshift.enabled=true,namespace.create=true"), openshift},
		{helmTemplate(t, "--set", "mode=device-plugin,namespace.create=true"), legacy},
	} {
		want := slices.Clone(tc.want)
		sort.Strings(want)
		if got := tc.m.keys(); !slices.Equal(got, want) {
			t.Errorf("%s: objects\n got %v\nwant %v", tc.m.what, got, want)
		}
		for _, o := range tc.m.objs {
			if o.u.GetKind() == "SecurityContextConstraints" {
				decodeSCC(t, o)
				continue
			}
			o.typed(t)
			if ns := o.u.GetNamespace(); ns != "" && ns != namespace {
				t.Errorf("%s: %s is in namespace %s", tc.m.what, o.key(), ns)
			}
			for _, msg := range validation.IsDNS1123Subdomain(o.u.GetName()) {
				t.Errorf("%s: %s: name: %s", tc.m.what, o.key(), msg)
			}
			if o.u.GetLabels()["app.kubernetes.io/name"] != "power-dev-plugin" {
				t.Errorf("%s: %s: no label app.kubernetes.io/name=power-dev-plugin", tc.m.what, o.key())
			}
		}
	}
}

// grant is one permission: a verb on a resource (and maybe one name) of an
// API group, through a ClusterRole (cluster-wide) or a Role (its namespace).
type grant struct {
	scope, group, resource, name, verb string
}

func (g grant) String() string {
	s := fmt.Sprintf("%s %s on %s/%s", g.scope, g.verb, g.group, g.resource)
	if g.name != "" {
		s += "/" + g.name
	}
	return s
}

func grants(scope string, rules []rbacv1.PolicyRule) []grant {
	var out []grant
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						out = append(out, grant{scope, g, res, n, v})
					}
				}
			}
		}
	}
	return out
}

// The RBAC grants exactly what the plugin calls, nothing more: any extra verb,
// resource, wildcard or binding fails.
func TestRBACAllowList(t *testing.T) {
	dra := []grant{
		{"cluster", "resource.k8s.io", "resourceslices", "", "list"},
		{"cluster", "resource.k8s.io", "resourceslices", "", "watch"},
		{"cluster", "resource.k8s.io", "resourceslices", "", "create"},
		{"cluster", "resource.k8s.io", "resourceslices", "", "update"},
		{"cluster", "resource.k8s.io", "resourceslices", "", "delete"},
		{"cluster", "resource.k8s.io", "resourceclaims", "", "get"},
		{"cluster", "resource.k8s.io", "resourceclaims/status", "", "patch"},
		{"cluster", "resource.k8s.io", "resourceclaims/driver", "power-dev-plugin.io", "associated-node:patch"},
		{"cluster", "", "nodes", "", "get"},
		{"cluster", "", "pods", "", "list"},
	}
	scc := grant{"namespace " + namespace, "security.openshift.io", "securitycontextconstraints", "power-dev-plugin", "use"}
	for _, m := range renderings(t) {
		var allowed []grant
		if !isLegacy(m) {
			allowed = append(allowed, dra...)
		}
		if isOpenShift(m) {
			allowed = append(allowed, scc)
		}
		roles := map[string]bool{}
		var got []grant
		for _, o := range m.objs {
			if o.u.GetKind() == "SecurityContextConstraints" {
				continue // not an RBAC object; see TestOpenShiftSCC
			}
			switch r := o.typed(t).(type) {
			case *rbacv1.ClusterRole:
				if r.AggregationRule != nil {
					t.Errorf("%s: %s aggregates other roles", m.what, o.key())
				}
				got = append(got, grants("cluster", r.Rules)...)
				roles["ClusterRole/"+r.Name] = true
			case *rbacv1.Role:
				got = append(got, grants("namespace "+r.Namespace, r.Rules)...)
				roles["Role/"+r.Namespace+"/"+r.Name] = true
			}
		}
		for _, o := range m.objs {
			if o.u.GetKind() == "SecurityContextConstraints" {
				continue
			}
			var ref rbacv1.RoleRef
			var subjects []rbacv1.Subject
			var roleKey string
			switch b := o.typed(t).(type) {
			case *rbacv1.ClusterRoleBinding:
				ref, subjects, roleKey = b.RoleRef, b.Subjects, b.RoleRef.Kind+"/"+b.RoleRef.Name
			case *rbacv1.RoleBinding:
				ref, subjects, roleKey = b.RoleRef, b.Subjects, b.RoleRef.Kind+"/"+b.Namespace+"/"+b.RoleRef.Name
				if ref.Kind != "Role" {
					t.Errorf("%s: %s binds a ClusterRole", m.what, o.key())
				}
			default:
				continue
			}
			if !roles[roleKey] {
				t.Errorf("%s: %s binds %s, which this install does not define (e.g. a built-in role)", m.what, o.key(), roleKey)
			}
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: namespace}}
			if !reflect.DeepEqual(subjects, want) {
				t.Errorf("%s: %s binds %+v, want only the plugin's ServiceAccount", m.what, o.key(), subjects)
			}
		}
		for _, g := range got {
			if !slices.Contains(allowed, g) {
				t.Errorf("%s: grants %s, which the plugin does not need", m.what, g)
			}
		}
		for _, g := range allowed {
			if !slices.Contains(got, g) {
				t.Errorf("%s: does not grant %s, which the plugin needs", m.what, g)
			}
		}
	}
}

func TestNamespace(t *testing.T) {
	for _, m := range renderings(t) {
		nss := m.byKind("Namespace")
		if len(nss) == 0 {
			continue // helm install --create-namespace
		}
		ns := nss[0].typed(t).(*corev1.Namespace)
		want := map[string]string{
			"pod-security.kubernetes.io/enforce": "privileged",
			"pod-security.kubernetes.io/audit":   "privileged",
			"pod-security.kubernetes.io/warn":    "privileged",
		}
		if isOpenShift(m) {
			want["security.openshift.io/scc.podSecurityLabelSync"] = "false"
			if v, ok := ns.Annotations["openshift.io/node-selector"]; !ok || v != "" {
				t.Errorf("%s: the namespace needs an empty openshift.io/node-selector to reach every node", m.what)
			}
		}
		for k, v := range want {
			if ns.Labels[k] != v {
				t.Errorf("%s: namespace label %s=%q, want %q", m.what, k, ns.Labels[k], v)
			}
		}
		for k := range ns.Labels {
			if _, ok := want[k]; !ok && !strings.HasPrefix(k, "app.kubernetes.io/") && !strings.HasPrefix(k, "helm.sh/") {
				t.Errorf("%s: unexpected namespace label %s", m.what, k)
			}
		}
	}
}

// The ConfigMap holds a configuration the driver accepts, mounted where
// CONFIG_FILE points.
func TestConfigMap(t *testing.T) {
	for _, m := range renderings(t) {
		cm := m.get(t, "ConfigMap/"+namespace+"/power-dev-plugin-config").typed(t).(*corev1.ConfigMap)
		cfg, warnings, err := v1alpha1.DecodeDiscoveryConfig([]byte(cm.Data["config.yaml"]))
		if err != nil {
			t.Fatalf("%s: config.yaml: %v", m.what, err)
		}
		if len(warnings) > 0 {
			t.Errorf("%s: config.yaml: warnings %v", m.what, warnings)
		}
		// The default configuration is the driver's built-in default.
		if normalizeConfig(cfg) != normalizeConfig(v1alpha1.DefaultDiscoveryConfig()) {
			t.Errorf("%s: config.yaml differs from the driver's default:\n%s", m.what, cm.Data["config.yaml"])
		}
	}
}

func normalizeConfig(c *v1alpha1.DiscoveryConfig) string {
	cp := *c
	if len(cp.AllowInUse) == 0 {
		cp.AllowInUse = nil
	}
	b, _ := json.Marshal(cp)
	return string(b)
}

// expectedMounts describes the DaemonSet's volumes: mount path in the
// container -> the volume behind it.
type mountSpec struct {
	hostPath string // "" for a ConfigMap
	hostType corev1.HostPathType
	readOnly bool
	// configMap names the ConfigMap when hostPath is ""; optional says it
	// need not exist.
	configMap string
	optional  bool
}

func expectedMounts(kubelet string, dra, devicePlugin bool) map[string]mountSpec {
	host := func(path string, t corev1.HostPathType, readOnly bool) mountSpec {
		return mountSpec{hostPath: path, hostType: t, readOnly: readOnly}
	}
	m := map[string]mountSpec{
		"/host/dev":              host("/dev", corev1.HostPathDirectory, true),
		"/host/sys":              host("/sys", corev1.HostPathDirectory, true),
		"/host/proc/1/mountinfo": host("/proc/1/mountinfo", corev1.HostPathFile, true),
		"/host/proc/swaps":       host("/proc/swaps", corev1.HostPathFile, true),
		// DirectoryOrCreate: nodes without udev must still run the plugin.
		"/host/run/udev":        host("/run/udev", corev1.HostPathDirectoryOrCreate, true),
		"/var/run/cdi":          host("/var/run/cdi", corev1.HostPathDirectoryOrCreate, false),
		"/etc/power-dev-plugin": {readOnly: true, configMap: "power-dev-plugin-config"},
	}
	if dra {
		m[kubelet+"/plugins_registry"] = host(kubelet+"/plugins_registry", corev1.HostPathDirectoryOrCreate, false)
		m[kubelet+"/plugins/power-dev-plugin.io"] = host(kubelet+"/plugins/power-dev-plugin.io", corev1.HostPathDirectoryOrCreate, false)
	}
	if dra && devicePlugin {
		// auto: the kubelet's pod-resources API tells whether pods hold
		// device-plugin devices (cmd/kubelet-plugin/autostate.go).
		m[kubelet+"/pod-resources"] = host(kubelet+"/pod-resources", corev1.HostPathDirectory, true)
	}
	if devicePlugin {
		m[kubelet+"/device-plugins"] = host(kubelet+"/device-plugins", corev1.HostPathDirectory, false)
		// The old plugin's ConfigMap at its old path, when the namespace has it.
		m["/etc/power-device-plugin"] = mountSpec{readOnly: true, configMap: "power-device-config", optional: true}
	}
	return m
}

func TestDaemonSet(t *testing.T) {
	for _, m := range renderings(t) {
		mode := "dra"
		if isLegacy(m) {
			mode = "device-plugin"
		}
		checkDaemonSet(t, m, mode, "/var/lib/kubelet")
	}
	checkDaemonSet(t, helmTemplate(t, "--set", "mode=auto"), "auto", "/var/lib/kubelet")
	checkDaemonSet(t, helmTemplate(t, "--set", "kubeletDir=/var/lib/k0s/kubelet"), "dra", "/var/lib/k0s/kubelet")
	checkDaemonSet(t, helmTemplate(t, "--set", "kubeletDir=/var/lib/k0s/kubelet,mode=device-plugin"), "device-plugin", "/var/lib/k0s/kubelet")
}

func checkDaemonSet(t *testing.T, m *manifest, mode, kubelet string) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: DaemonSet: %s", m.what, fmt.Sprintf(format, args...))
	}
	ds := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet)
	pod := ds.Spec.Template.Spec

	// Rolling update with surge: the new pod registers before the old one goes.
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || *ru.MaxSurge != intstr.FromInt32(1) || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(0) {
		errorf("updateStrategy must be RollingUpdate with maxSurge 1, maxUnavailable 0: %+v", ds.Spec.UpdateStrategy)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			errorf("the selector's %s=%s is not on the pod template", k, v)
		}
	}

	// No host namespaces, no user namespace (uevents, root-owned host dirs).
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		errorf("hostNetwork/hostPID/hostIPC must be false")
	}
	if pod.HostUsers != nil && !*pod.HostUsers {
		errorf("hostUsers: false cuts the plugin off kernel uevents and the root-owned kubelet directories")
	}
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		errorf("shareProcessNamespace")
	}
	if pod.ServiceAccountName != serviceAccount || (pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken) {
		errorf("must run as ServiceAccount %s with its token", serviceAccount)
	}
	if pod.PriorityClassName != "system-node-critical" {
		errorf("priorityClassName %q", pod.PriorityClassName)
	}
	if len(pod.InitContainers)+len(pod.EphemeralContainers) > 0 || len(pod.Containers) != 1 {
		errorf("want exactly one container")
	}
	if !reflect.DeepEqual(pod.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}) {
		errorf("tolerations %+v", pod.Tolerations)
	}
	if aff := pod.Affinity; aff == nil || aff.NodeAffinity == nil || aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil ||
		!reflect.DeepEqual(aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms, []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpIn, Values: []string{"linux"}},
				{Key: "kubernetes.io/arch", Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64", "ppc64le", "s390x"}},
			}}}) {
		errorf("node affinity must require linux on amd64, ppc64le or s390x: %+v", aff)
	}

	// The least security context that works.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 0 || psc.RunAsNonRoot == nil || *psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errorf("pod securityContext must be runAsUser 0 with seccomp RuntimeDefault: %+v", psc)
	} else {
		var wantSELinux *corev1.SELinuxOptions
		if isOpenShift(m) {
			wantSELinux = &corev1.SELinuxOptions{Type: "spc_t"}
		}
		if !reflect.DeepEqual(psc.SELinuxOptions, wantSELinux) {
			errorf("seLinuxOptions %+v, want %+v", psc.SELinuxOptions, wantSELinux)
		}
		if len(psc.Sysctls) > 0 || psc.FSGroup != nil || len(psc.SupplementalGroups) > 0 {
			errorf("unexpected sysctls, fsGroup or supplemental groups")
		}
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	// Privileged only to open host block devices for the in-use check at
	// Prepare/Allocate (deploy/README.md). The API refuses privileged with
	// allowPrivilegeEscalation false; runtimes ignore capabilities then, so
	// listing any would only mislead.
	if sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.AllowPrivilegeEscalation != nil ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities != nil ||
		sc.ProcMount != nil || sc.RunAsUser != nil || sc.SELinuxOptions != nil || sc.SeccompProfile != nil {
		errorf("container securityContext must be privileged true, readOnlyRootFilesystem true and nothing else: %+v", sc)
	}
	// One port: the metrics. The health endpoint stays on loopback, probed by exec.
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 8080 ||
		c.Ports[0].Protocol != corev1.ProtocolTCP || c.Ports[0].HostPort != 0 {
		errorf("ports %+v, want only metrics 8080/TCP (no host port)", c.Ports)
	}
	if len(c.Command) > 0 || len(c.Args) > 0 {
		errorf("the image's entrypoint takes its settings from the environment; command/args %v %v", c.Command, c.Args)
	}
	if !strings.HasPrefix(c.Image, "ghcr.io/power-dev-plugin/power-dev-plugin:") {
		errorf("image %s", c.Image)
	}

	// Resources: the documented requests and a memory limit, no CPU limit.
	wantRes := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("192Mi")},
	}
	if !reflect.DeepEqual(canonicalResources(c.Resources), canonicalResources(wantRes)) {
		errorf("resources %v", c.Resources)
	}

	// Exec probes with the healthcheck subcommand.
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		want := []string{"/usr/bin/power-dev-plugin", "healthcheck"}
		if name == "readiness" {
			want = append(want, "--ready")
		}
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, want) || p.HTTPGet != nil || p.TCPSocket != nil || p.GRPC != nil {
			errorf("%s probe must exec %v: %+v", name, want, p)
		} else if p.TimeoutSeconds <= 5 {
			errorf("%s probe timeout %ds: the healthcheck itself waits up to 5 s", name, p.TimeoutSeconds)
		}
	}
	// Liveness fails on a stuck plugin only; a gRPC socket replaced between
	// two probes (device-plugin mode after a kubelet restart) must not
	// restart it.
	if p := c.LivenessProbe; p != nil && (p.FailureThreshold < 3 || p.PeriodSeconds*p.FailureThreshold < 30) {
		errorf("liveness probe: %d failures %ds apart restart a plugin that is not stuck", p.FailureThreshold, p.PeriodSeconds)
	}

	// Environment: the downward API for the node and pod, fixed values else.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			errorf("env %s twice", e.Name)
		}
		env[e.Name] = e
	}
	for name, field := range map[string]string{"NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid"} {
		e := env[name]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			errorf("%s must come from the downward API field %s: %+v", name, field, e)
		}
	}
	for name, e := range env {
		if e.ValueFrom != nil && name != "NODE_NAME" && name != "POD_UID" {
			errorf("env %s reads from %+v", name, e.ValueFrom)
		}
	}
	wantEnv := map[string]string{
		"MODE": mode, "HOST_ROOT": "/host", "CONFIG_FILE": "/etc/power-dev-plugin/config.yaml",
		"CDI_DIR": "/var/run/cdi", "HEALTH_ADDRESS": "127.0.0.1:51515", "METRICS_ADDRESS": ":8080",
		"LOG_VERBOSITY": "0", "LOG_FORMAT": "text",
	}
	dra, devicePlugin := mode != "device-plugin", mode != "dra"
	if dra {
		wantEnv["KUBELET_REGISTRAR_DIR"] = kubelet + "/plugins_registry"
		wantEnv["KUBELET_PLUGINS_DIR"] = kubelet + "/plugins"
	}
	if devicePlugin {
		wantEnv["DEVICE_PLUGIN_DIR"] = kubelet + "/device-plugins"
		wantEnv["LEGACY_CONFIG_FILE"] = "/etc/power-device-plugin/config.json"
	}
	if dra && devicePlugin {
		wantEnv["POD_RESOURCES_SOCKET"] = kubelet + "/pod-resources/kubelet.sock"
	}
	for name, e := range env {
		if e.ValueFrom == nil && wantEnv[name] != e.Value {
			errorf("env %s=%q, want %q", name, e.Value, wantEnv[name])
		}
	}
	for name := range wantEnv {
		if _, ok := env[name]; !ok {
			errorf("env %s missing", name)
		}
	}
	if !strings.HasPrefix(env["HEALTH_ADDRESS"].Value, "127.0.0.1:") {
		errorf("the health endpoint must stay on loopback")
	}

	// Volumes: exactly the expected mounts, read-only where reading is all.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	want := expectedMounts(kubelet, dra, devicePlugin)
	if len(c.VolumeMounts) != len(want) || len(pod.Volumes) != len(want) {
		errorf("%d mounts and %d volumes, want %d of each", len(c.VolumeMounts), len(pod.Volumes), len(want))
	}
	for _, vm := range c.VolumeMounts {
		w, ok := want[vm.MountPath]
		if !ok {
			errorf("unexpected mount %s", vm.MountPath)
			continue
		}
		v := volumes[vm.Name]
		if vm.ReadOnly != w.readOnly || vm.SubPath != "" || vm.SubPathExpr != "" ||
			(vm.MountPropagation != nil && *vm.MountPropagation != corev1.MountPropagationNone) {
			errorf("mount %s: readOnly %v (want %v), subPath %q, propagation %v", vm.MountPath, vm.ReadOnly, w.readOnly, vm.SubPath, vm.MountPropagation)
		}
		if w.readOnly && w.hostType == corev1.HostPathDirectory &&
			(vm.RecursiveReadOnly == nil || *vm.RecursiveReadOnly != corev1.RecursiveReadOnlyIfPossible) {
			errorf("mount %s: read-only host directories should be recursively read-only where the runtime can", vm.MountPath)
		}
		switch {
		case w.hostPath == "":
			if v.ConfigMap == nil || v.ConfigMap.Name != w.configMap || (v.ConfigMap.Optional != nil && *v.ConfigMap.Optional) != w.optional {
				errorf("mount %s: want the ConfigMap %s (optional %v), got %+v", vm.MountPath, w.configMap, w.optional, v.VolumeSource)
			}
		case v.HostPath == nil || v.HostPath.Path != w.hostPath || v.HostPath.Type == nil || *v.HostPath.Type != w.hostType:
			errorf("mount %s: want hostPath %s (%s), got %+v", vm.MountPath, w.hostPath, w.hostType, v.VolumeSource)
		}
	}
	// Where the binary looks is where the mounts are.
	for _, p := range []string{"/dev", "/sys", "/proc/1/mountinfo", "/proc/swaps", "/run/udev"} {
		if want[env["HOST_ROOT"].Value+p].hostPath != p {
			errorf("HOST_ROOT%s is not the host's %s", p, p)
		}
	}
	if dir := path.Dir(env["CONFIG_FILE"].Value); want[dir].hostPath != "" || !want[dir].readOnly {
		errorf("CONFIG_FILE %s is not in the ConfigMap mount", env["CONFIG_FILE"].Value)
	}
	if want[env["CDI_DIR"].Value].hostPath != "/var/run/cdi" {
		errorf("CDI_DIR is not the host's /var/run/cdi")
	}
	if devicePlugin {
		// The kubelet dials <its device-plugins dir>/<registered socket
		// name>: the plugin's directory must be that host directory.
		if d := env["DEVICE_PLUGIN_DIR"].Value; want[d].hostPath != d {
			errorf("DEVICE_PLUGIN_DIR %s is not the host's %s mounted at the same path", d, d)
		}
		if d := path.Dir(env["LEGACY_CONFIG_FILE"].Value); want[d].configMap != "power-device-config" {
			errorf("LEGACY_CONFIG_FILE %s is not in the mount of the old ConfigMap", env["LEGACY_CONFIG_FILE"].Value)
		}
	}
	if dra {
		// The kubelet dials the socket path the plugin registers: the data
		// directory must have the same path inside and outside.
		dataDir := env["KUBELET_PLUGINS_DIR"].Value + "/" + driverName
		if want[dataDir].hostPath != dataDir || want[env["KUBELET_REGISTRAR_DIR"].Value].hostPath != env["KUBELET_REGISTRAR_DIR"].Value {
			errorf("the plugin and registration directories must be mounted at their host paths")
		}
	}
}

func canonicalResources(r corev1.ResourceRequirements) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// sccT is the part of OpenShift's SecurityContextConstraints
// (security.openshift.io/v1) this project writes; decoding refuses any other
// field, so a misspelt one fails.
type sccT struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Priority                 *int32   `json:"priority"`
	AllowPrivilegedContainer bool     `json:"allowPrivilegedContainer"`
	AllowPrivilegeEscalation *bool    `json:"allowPrivilegeEscalation"`
	DefaultAddCapabilities   []string `json:"defaultAddCapabilities"`
	RequiredDropCapabilities []string `json:"requiredDropCapabilities"`
	AllowedCapabilities      []string `json:"allowedCapabilities"`
	AllowHostDirVolumePlugin bool     `json:"allowHostDirVolumePlugin"`
	Volumes                  []string `json:"volumes"`
	AllowHostNetwork         bool     `json:"allowHostNetwork"`
	AllowHostPorts           bool     `json:"allowHostPorts"`
	AllowHostPID             bool     `json:"allowHostPID"`
	AllowHostIPC             bool     `json:"allowHostIPC"`
	ReadOnlyRootFilesystem   bool     `json:"readOnlyRootFilesystem"`
	RunAsUser                struct {
		Type string `json:"type"`
		UID  *int64 `json:"uid"`
	} `json:"runAsUser"`
	SELinuxContext struct {
		Type           string                 `json:"type"`
		SELinuxOptions *corev1.SELinuxOptions `json:"seLinuxOptions"`
	} `json:"seLinuxContext"`
	FSGroup struct {
		Type string `json:"type"`
	} `json:"fsGroup"`
	SupplementalGroups struct {
		Type string `json:"type"`
	} `json:"supplementalGroups"`
	SeccompProfiles  []string `json:"seccompProfiles"`
	ForbiddenSysctls []string `json:"forbiddenSysctls"`
	Users            []string `json:"users"`
	Groups           []string `json:"groups"`
}

func decodeSCC(t testing.TB, o object) *sccT {
	t.Helper()
	b, err := json.Marshal(o.u.Object)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s sccT
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("%s: %v", o.key(), err)
	}
	if s.APIVersion != "security.openshift.io/v1" {
		t.Errorf("%s: apiVersion %s", o.key(), s.APIVersion)
	}
	return &s
}

// The SCC admits the DaemonSet's pod and allows nothing it does not use.
func TestOpenShiftSCC(t *testing.T) {
	for _, m := range renderings(t) {
		sccs := m.byKind("SecurityContextConstraints")
		if !isOpenShift(m) {
			if len(sccs) > 0 {
				t.Errorf("%s: an SCC outside OpenShift", m.what)
			}
			continue
		}
		s := decodeSCC(t, sccs[0])
		ds := m.get(t, "DaemonSet/"+namespace+"/power-dev-plugin").typed(t).(*appsv1.DaemonSet)
		pod := ds.Spec.Template.Spec
		errorf := func(format string, args ...any) {
			t.Helper()
			t.Errorf("%s: SCC %s: %s", m.what, s.Metadata.Name, fmt.Sprintf(format, args...))
		}
		if ds.Spec.Template.Annotations["openshift.io/required-scc"] != s.Metadata.Name {
			errorf("the pod must require it (openshift.io/required-scc)")
		}
		// The pod's container is privileged (to open host block devices);
		// nothing else of the host is shared.
		if !s.AllowPrivilegedContainer || s.AllowHostNetwork || s.AllowHostPID || s.AllowHostIPC || s.AllowHostPorts {
			errorf("must allow the privileged container and no host namespaces/ports")
		}
		if s.AllowPrivilegeEscalation == nil || !*s.AllowPrivilegeEscalation {
			errorf("allowPrivilegeEscalation must be true: a privileged container cannot run without it")
		}
		if len(s.AllowedCapabilities) > 0 || len(s.DefaultAddCapabilities) > 0 || len(s.RequiredDropCapabilities) > 0 {
			errorf("capabilities: a privileged container gets all of them; the lists must stay empty, not pretend otherwise")
		}
		if !s.ReadOnlyRootFilesystem || !s.AllowHostDirVolumePlugin {
			errorf("readOnlyRootFilesystem and allowHostDirVolumePlugin must be true")
		}
		if len(s.Users) > 0 || len(s.Groups) > 0 || s.Priority != nil {
			errorf("granted to users/groups %v %v or prioritised: use RBAC `use` only", s.Users, s.Groups)
		}
		if !slices.Equal(s.ForbiddenSysctls, []string{"*"}) || !slices.Equal(s.SeccompProfiles, []string{"runtime/default"}) {
			errorf("sysctls %v, seccomp profiles %v", s.ForbiddenSysctls, s.SeccompProfiles)
		}
		// The pod as the SCC admission plugin would judge it.
		used := map[string]bool{}
		for _, v := range pod.Volumes {
			switch {
			case v.HostPath != nil:
				used["hostPath"] = true
			case v.ConfigMap != nil:
				used["configMap"] = true
			default:
				errorf("volume %s of a kind this test does not know", v.Name)
			}
		}
		used["projected"] = true // the ServiceAccount token
		var usedList []string
		for k := range used {
			usedList = append(usedList, k)
		}
		sort.Strings(usedList)
		got := slices.Clone(s.Volumes)
		sort.Strings(got)
		if !slices.Equal(got, usedList) {
			errorf("volumes %v, the pod uses %v", got, usedList)
		}
		if s.RunAsUser.Type != "MustRunAs" || s.RunAsUser.UID == nil || *s.RunAsUser.UID != *pod.SecurityContext.RunAsUser {
			errorf("runAsUser must be MustRunAs the pod's uid")
		}
		if s.SELinuxContext.Type != "MustRunAs" || !reflect.DeepEqual(s.SELinuxContext.SELinuxOptions, pod.SecurityContext.SELinuxOptions) {
			errorf("seLinuxContext must be MustRunAs exactly the pod's options %+v", pod.SecurityContext.SELinuxOptions)
		}
	}
}
