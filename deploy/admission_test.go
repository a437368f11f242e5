package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

const (
	slicePolicyName    = "resourceslices.power-dev-plugin.io"
	deviceConfigPolicy = "deviceconfig.power-dev-plugin.io"
	// nodeNameExtra is the user-info key the API server sets from a
	// pod-bound ServiceAccount token (k8s.io/apiserver
	// pkg/authentication/serviceaccount.NodeNameKey).
	nodeNameExtra = "authentication.kubernetes.io/node-name"
)

// policy returns the named ValidatingAdmissionPolicy of m, strictly decoded.
func policy(t testing.TB, m *manifest, name string) *admissionregistrationv1.ValidatingAdmissionPolicy {
	t.Helper()
	p, ok := m.get(t, "ValidatingAdmissionPolicy/"+name).typed(t).(*admissionregistrationv1.ValidatingAdmissionPolicy)
	if !ok {
		t.Fatalf("%s: not a ValidatingAdmissionPolicy", name)
	}
	return p
}

// mustCompile compiles p for evaluation the way a 1.37 API server runs it.
func mustCompile(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy) *compiledPolicy {
	t.Helper()
	cp, errs := compilePolicy(p, currentEnv, environment.StoredExpressions)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", p.Name, errors.Join(errs...))
	}
	return cp
}

// Every policy, in every rendering, compiles as a new policy on the oldest
// supported API server and as a stored one on a current one; each has a
// binding that denies.
func TestAdmissionPoliciesCompile(t *testing.T) {
	for _, m := range renderings(t) {
		policies := m.byKind("ValidatingAdmissionPolicy")
		if isLegacy(m) {
			if len(policies) > 0 {
				t.Errorf("%s: device-plugin mode has no use for admission policies, got %d", m.what, len(policies))
			}
			continue
		}
		if len(policies) != 2 {
			t.Errorf("%s: want 2 ValidatingAdmissionPolicies, got %d", m.what, len(policies))
		}
		for _, o := range policies {
			p := o.typed(t).(*admissionregistrationv1.ValidatingAdmissionPolicy)
			for _, env := range []struct {
				name string
				set  *environment.EnvSet
				mode environment.Type
			}{
				{"new policy on a 1.34 API server", oldestServerEnv, environment.NewExpressions},
				{"stored policy on a 1.37 API server", currentEnv, environment.StoredExpressions},
			} {
				if _, errs := compilePolicy(p, env.set, env.mode); len(errs) > 0 {
					t.Errorf("%s: %s: %s: %v", m.what, p.Name, env.name, errors.Join(errs...))
				}
			}
			if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
				t.Errorf("%s: %s: failurePolicy must be Fail", m.what, p.Name)
			}
			b := m.get(t, "ValidatingAdmissionPolicyBinding/"+p.Name).typed(t).(*admissionregistrationv1.ValidatingAdmissionPolicyBinding)
			if b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) ||
				b.Spec.ParamRef != nil || b.Spec.MatchResources != nil {
				t.Errorf("%s: binding %s: want policyName %s, validationActions [Deny], no params or extra match rules; got %+v", m.what, b.Name, p.Name, b.Spec)
			}
		}
	}
}

func pluginUser(ns string, nodeName ...string) user.Info {
	u := &user.DefaultInfo{
		Name:   "system:serviceaccount:" + ns + ":" + serviceAccount,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	if len(nodeName) > 0 {
		u.Extra = map[string][]string{nodeNameExtra: nodeName}
	}
	return u
}

func slice(node, driver string) *resourceapi.ResourceSlice {
	return &resourceapi.ResourceSlice{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceSlice"},
		ObjectMeta: metav1.ObjectMeta{Name: node + "-" + driver + "-x7k2p"},
		Spec: resourceapi.ResourceSliceSpec{
			Driver:   driver,
			NodeName: &node,
			Pool:     resourceapi.ResourcePool{Name: node, ResourceSliceCount: 1},
			Devices:  []resourceapi.Device{{Name: "sdb"}},
		},
	}
}

func sliceRequest(op admission.Operation, u user.Info, obj, old *resourceapi.ResourceSlice) request {
	r := request{
		operation: op,
		gvk:       resourceapi.SchemeGroupVersion.WithKind("ResourceSlice"),
		gvr:       resourceapi.SchemeGroupVersion.WithResource("resourceslices"),
		user:      u,
	}
	if obj != nil {
		r.object, r.name = obj, obj.Name
	}
	if old != nil {
		r.oldObject, r.name = old, old.Name
	}
	return r
}

func TestResourceSlicePolicy(t *testing.T) {
	m := kustomize(t, "dra")
	p := policy(t, m, slicePolicyName)
	for _, op := range []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete} {
		if !matchesRules(t, p, "resource.k8s.io", "v1", "resourceslices", op) || !matchesRules(t, p, "resource.k8s.io", "v1beta2", "resourceslices", op) {
			t.Errorf("%s does not see %s of resourceslices in every API version", p.Name, op)
		}
	}
	if matchesRules(t, p, "resource.k8s.io", "v1", "resourceclaims", admissionregistrationv1.Create) {
		t.Errorf("%s matches more than resourceslices", p.Name)
	}
	cp := mustCompile(t, p)

	plugin := pluginUser(namespace, "node-a")
	for _, tc := range []struct {
		name    string
		req     request
		matched bool
		denied  bool
		message string
	}{
		{"create own node's slice", sliceRequest(admission.Create, plugin, slice("node-a", driverName), nil), true, false, ""},
		{"update own node's slice", sliceRequest(admission.Update, plugin, slice("node-a", driverName), slice("node-a", driverName)), true, false, ""},
		{"delete own node's slice", sliceRequest(admission.Delete, plugin, nil, slice("node-a", driverName)), true, false, ""},
		{"create another node's slice", sliceRequest(admission.Create, plugin, slice("node-b", driverName), nil), true, true,
			"the power-dev-plugin on node node-a may only write ResourceSlices with spec.nodeName node-a, not node-b"},
		{"move another node's slice to own node", sliceRequest(admission.Update, plugin, slice("node-a", driverName), slice("node-b", driverName)), true, true,
			"the power-dev-plugin on node node-a may only write ResourceSlices with spec.nodeName node-a, not node-b"},
		{"delete another node's slice", sliceRequest(admission.Delete, plugin, nil, slice("node-b", driverName)), true, true,
			"the power-dev-plugin on node node-a may only write ResourceSlices with spec.nodeName node-a, not node-b"},
		{"create a slice without a node", sliceRequest(admission.Create, plugin, func() *resourceapi.ResourceSlice {
			s := slice("node-a", driverName)
			s.Spec.NodeName, s.Spec.AllNodes = nil, ptr(true)
			return s
		}(), nil), true, true, "the power-dev-plugin on node node-a may only write ResourceSlices with spec.nodeName node-a, not an empty one"},
		{"create another driver's slice", sliceRequest(admission.Create, plugin, slice("node-a", "gpu.example.com"), nil), true, true,
			"the power-dev-plugin ServiceAccount may only write ResourceSlices of the driver power-dev-plugin.io"},
		{"token not bound to a node", sliceRequest(admission.Create, pluginUser(namespace), slice("node-a", driverName), nil), true, true,
			"the power-dev-plugin ServiceAccount may write ResourceSlices only with a token bound to a pod on a node (no authentication.kubernetes.io/node-name in the request's user info)"},
		{"token bound to two nodes", sliceRequest(admission.Create, pluginUser(namespace, "node-a", "node-b"), slice("node-a", driverName), nil), true, true,
			"the power-dev-plugin ServiceAccount may write ResourceSlices only with a token bound to a pod on a node (no authentication.kubernetes.io/node-name in the request's user info)"},
		{"other users are left to RBAC", sliceRequest(admission.Create, &user.DefaultInfo{Name: "system:kube-scheduler"}, slice("node-b", "gpu.example.com"), nil), false, false, ""},
		{"the same ServiceAccount name in another namespace is someone else", sliceRequest(admission.Create, pluginUser("other", "node-a"), slice("node-b", driverName), nil), false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cp.evaluate(t, tc.req)
			if d.matched != tc.matched || d.denied != tc.denied || d.message != tc.message {
				t.Errorf("got matched=%v denied=%v message %q\nwant matched=%v denied=%v message %q", d.matched, d.denied, d.message, tc.matched, tc.denied, tc.message)
			}
		})
	}

	// Helm puts the release namespace into the user name.
	hp := policy(t, helmTemplate(t, "--namespace", "devices"), slicePolicyName)
	d := mustCompile(t, hp).evaluate(t, sliceRequest(admission.Create, pluginUser("devices", "node-a"), slice("node-b", driverName), nil))
	if !d.denied {
		t.Errorf("helm --namespace devices: the policy does not restrict system:serviceaccount:devices:%s", serviceAccount)
	}
}

func ptr[T any](v T) *T { return &v }

// Objects that carry DeviceConfig parameters.

func claimWith(configs ...resourceapi.DeviceClaimConfiguration) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "db2"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{
			Requests: []resourceapi.DeviceRequest{{Name: "disk", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "block.power-dev-plugin.io"}}},
			Config:   configs,
		}},
	}
}

func opaque(driver, params string) resourceapi.DeviceConfiguration {
	return resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{Driver: driver, Parameters: runtime.RawExtension{Raw: []byte(params)}}}
}

func claimConfig(driver, params string) resourceapi.DeviceClaimConfiguration {
	return resourceapi.DeviceClaimConfiguration{Requests: []string{"disk"}, DeviceConfiguration: opaque(driver, params)}
}

func claimRequest(obj runtime.Object) request {
	r := request{operation: admission.Create, user: &user.DefaultInfo{Name: "alice"}, object: obj}
	switch o := obj.(type) {
	case *resourceapi.ResourceClaim:
		r.gvk, r.gvr, r.namespace, r.name = resourceapi.SchemeGroupVersion.WithKind("ResourceClaim"), resourceapi.SchemeGroupVersion.WithResource("resourceclaims"), o.Namespace, o.Name
	case *resourceapi.ResourceClaimTemplate:
		r.gvk, r.gvr, r.namespace, r.name = resourceapi.SchemeGroupVersion.WithKind("ResourceClaimTemplate"), resourceapi.SchemeGroupVersion.WithResource("resourceclaimtemplates"), o.Namespace, o.Name
	case *resourceapi.DeviceClass:
		r.gvk, r.gvr, r.name = resourceapi.SchemeGroupVersion.WithKind("DeviceClass"), resourceapi.SchemeGroupVersion.WithResource("deviceclasses"), o.Name
	default:
		panic(fmt.Sprintf("%T", obj))
	}
	return r
}

var lineSuffix = regexp.MustCompile(` \(line \d+\)$`)

// driverProblems is what the driver says about params: each problem as
// api/v1alpha1 prints it, without the " (line N)" the policy cannot know.
func driverProblems(params string) []string {
	_, err := v1alpha1.DecodeDeviceConfig([]byte(params))
	if err == nil {
		return nil
	}
	var ce *v1alpha1.ConfigError
	if !errors.As(err, &ce) {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range ce.Errs {
		out = append(out, lineSuffix.ReplaceAllString(e.Error(), ""))
	}
	return out
}

func prefixed(prefix string, problems []string) string {
	out := make([]string, len(problems))
	for i, p := range problems {
		out[i] = prefix + p
	}
	return strings.Join(out, "; ")
}

const okParams = `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig"}`

// withFields returns a DeviceConfig JSON object with the given extra members.
func withFields(members string) string {
	return `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig",` + members + `}`
}

// The policy accepts what the driver accepts and rejects what it rejects,
// with the driver's words.
func TestDeviceConfigPolicyMatchesDriver(t *testing.T) {
	cp := mustCompile(t, policy(t, kustomize(t, "dra"), deviceConfigPolicy))
	const prefix = "spec.devices.config[0].opaque.parameters: "
	for _, tc := range []struct {
		name   string
		params string
		// want overrides the driver's words where the policy cannot know
		// them (see admission-deviceconfig.yaml); empty: the driver's.
		want string
	}{
		{name: "minimal", params: okParams},
		{name: "every field", params: withFields(`"permissions":"rw","containerPath":"/dev/disk0","uid":1000,"gid":6,"fileMode":432`)},
		{name: "permissions r", params: withFields(`"permissions":"r"`)},
		{name: "permissions mwr", params: withFields(`"permissions":"mwr"`)},
		{name: "uid and gid at the limits", params: withFields(`"uid":0,"gid":4294967294`)},
		{name: "fileMode 0777", params: withFields(`"fileMode":511`)},
		{name: "fileMode 0", params: withFields(`"fileMode":0`)},
		{name: "nulls leave fields unset", params: withFields(`"permissions":null,"containerPath":null,"uid":null,"gid":null,"fileMode":null`)},
		{name: "empty containerPath is unset", params: withFields(`"containerPath":""`)},
		{name: "nested containerPath", params: withFields(`"containerPath":"/dev/mapper/db2-data"`)},
		{name: "quote in containerPath", params: withFields(`"containerPath":"/dev/a\"b"`)},

		{name: "empty object", params: `{}`},
		{name: "wrong apiVersion and kind", params: `{"apiVersion":"v1","kind":"ConfigMap"}`},
		{name: "older apiVersion", params: `{"apiVersion":"power-dev-plugin.io/v1beta1","kind":"DeviceConfig","permissions":"rx"}`},
		{name: "apiVersion not a string, kind null", params: `{"apiVersion":1,"kind":null}`},
		{name: "kind of the node config", params: `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DiscoveryConfig"}`},
		{name: "unknown field", params: withFields(`"metadata":{}`)},
		{name: "misspelt field", params: withFields(`"permission":"rw"`)},
		{name: "unknown fields are sorted, odd names quoted", params: withFields(`"zz":1,"a.b":2,"":3`),
			want: prefix + `"": unknown field; ` + prefix + `"a.b": unknown field; ` + prefix + `zz: unknown field`},
		{name: "wrong types", params: withFields(`"permissions":5,"containerPath":true,"uid":"0","gid":[1],"fileMode":{"a":1}`)},
		{name: "non-integer uid", params: withFields(`"uid":1.5`)},
		{name: "negative fileMode", params: withFields(`"fileMode":-1`)},
		{name: "fileMode beyond uint32", params: withFields(`"fileMode":4294967296`)},
		{name: "gid beyond int64", params: withFields(`"gid":10000000000000000000`)},
		{name: "permissions rx", params: withFields(`"permissions":"rx"`)},
		{name: "permissions empty", params: withFields(`"permissions":""`)},
		{name: "permissions rr", params: withFields(`"permissions":"rr"`)},
		{name: "permissions RW", params: withFields(`"permissions":"RW"`)},
		{name: "permissions rwmr", params: withFields(`"permissions":"rwmr"`)},
		{name: "containerPath /dev", params: withFields(`"containerPath":"/dev"`)},
		{name: "containerPath /dev/", params: withFields(`"containerPath":"/dev/"`)},
		{name: "containerPath relative", params: withFields(`"containerPath":"dev/sdb"`)},
		{name: "containerPath outside /dev", params: withFields(`"containerPath":"/etc/passwd"`)},
		{name: "containerPath with ..", params: withFields(`"containerPath":"/dev/../etc/shadow"`)},
		{name: "containerPath climbing into /dev", params: withFields(`"containerPath":"/tmp/../dev/sdb"`)},
		{name: "containerPath double slash", params: withFields(`"containerPath":"/dev//sdb"`)},
		{name: "containerPath trailing slash", params: withFields(`"containerPath":"/dev/sdb/"`)},
		{name: "containerPath dot element", params: withFields(`"containerPath":"/dev/./sdb"`)},
		{name: "negative uid", params: withFields(`"uid":-1`)},
		{name: "gid (uid_t)-1", params: withFields(`"gid":4294967295`)},
		{name: "fileMode setuid", params: withFields(`"fileMode":2541`)},
		{name: "fileMode 01000", params: withFields(`"fileMode":512`)},
		{name: "containerPath /dev/null", params: withFields(`"containerPath":"/dev/null"`)},
		{name: "containerPath below /dev/pts", params: withFields(`"containerPath":"/dev/pts/0"`)},
		{name: "containerPath /dev/termination-log", params: withFields(`"containerPath":"/dev/termination-log"`)},
		{name: "containerPath next to a reserved name", params: withFields(`"containerPath":"/dev/nullable"`)},
		{name: "containerPath reserved and not clean", params: withFields(`"containerPath":"/dev/shm/"`)},
		{name: "containerPath reserved with ..", params: withFields(`"containerPath":"/dev/shm/../null"`)},
		{name: "every validation problem at once", params: withFields(`"permissions":"x","containerPath":"/tmp/../x/","uid":-5,"gid":-6,"fileMode":4095`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = prefixed(prefix, driverProblems(tc.params))
			}
			d := cp.evaluate(t, claimRequest(claimWith(claimConfig(driverName, tc.params))))
			if !d.matched {
				t.Fatalf("not evaluated")
			}
			if got := map[bool]string{true: d.message}[d.denied]; got != want {
				t.Errorf("params %s\n got: %q\nwant: %q", tc.params, got, want)
			}
		})
	}
}

// The policy's copy of the reserved container paths is the driver's list,
// in both renderings, and each entry (and a path below it) is refused with
// the driver's words.
func TestDeviceConfigPolicyReservedPaths(t *testing.T) {
	want := v1alpha1.ReservedContainerPaths()
	for _, m := range []*manifest{kustomize(t, "dra"), helmTemplate(t)} {
		p := policy(t, m, deviceConfigPolicy)
		var got []string
		for _, v := range p.Spec.Variables {
			if v.Name == "reservedPaths" {
				if err := json.Unmarshal([]byte(v.Expression), &got); err != nil {
					t.Fatalf("%s: variable reservedPaths is not a list of strings: %v", m.what, err)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: the policy's reservedPaths differ from api/v1alpha1's:\n got %q\nwant %q", m.what, got, want)
		}
		cp := mustCompile(t, p)
		for _, r := range want {
			for _, path := range []string{r, r + "/x"} {
				params := withFields(`"containerPath":` + strconv.Quote(path))
				wantMsg := prefixed("spec.devices.config[0].opaque.parameters: ", driverProblems(params))
				d := cp.evaluate(t, claimRequest(claimWith(claimConfig(driverName, params))))
				if !d.denied || d.message != wantMsg || wantMsg == "" {
					t.Errorf("%s: containerPath %s: denied=%v %q\nwant %q", m.what, path, d.denied, d.message, wantMsg)
				}
			}
		}
	}
}

// Which objects the policy looks at, and the path it names.
func TestDeviceConfigPolicyScope(t *testing.T) {
	p := policy(t, kustomize(t, "dra"), deviceConfigPolicy)
	for _, tc := range []struct {
		resource string
		op       admissionregistrationv1.OperationType
		want     bool
	}{
		{"resourceclaims", admissionregistrationv1.Create, true},
		{"resourceclaimtemplates", admissionregistrationv1.Create, true},
		{"deviceclasses", admissionregistrationv1.Create, true},
		{"deviceclasses", admissionregistrationv1.Update, true},
		// Claims and templates are immutable: an update is a metadata or
		// status change, which must never be blocked by old parameters.
		{"resourceclaims", admissionregistrationv1.Update, false},
		{"resourceclaimtemplates", admissionregistrationv1.Update, false},
		{"resourceclaims", admissionregistrationv1.Delete, false},
		{"resourceslices", admissionregistrationv1.Create, false},
	} {
		if got := matchesRules(t, p, "resource.k8s.io", "v1", tc.resource, tc.op); got != tc.want {
			t.Errorf("%s %s: matched %v, want %v", tc.op, tc.resource, got, tc.want)
		}
	}
	cp := mustCompile(t, p)
	bad := withFields(`"permissions":"rx"`)
	badMsg := `: permissions: Invalid value: "rx": must be a combination of r, w and m (e.g. "rw"), each at most once`

	template := &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "db2"},
		Spec:       resourceapi.ResourceClaimTemplateSpec{Spec: claimWith(claimConfig("gpu.example.com", `{"any":"thing"}`), claimConfig(driverName, bad)).Spec},
	}
	class := &resourceapi.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: "db2.power-dev-plugin.io"},
		Spec: resourceapi.DeviceClassSpec{Config: []resourceapi.DeviceClassConfiguration{
			{DeviceConfiguration: opaque(driverName, okParams)},
			{DeviceConfiguration: opaque(driverName, bad)},
		}},
	}
	fixedClass := class.DeepCopy()
	fixedClass.Spec.Config[1] = resourceapi.DeviceClassConfiguration{DeviceConfiguration: opaque(driverName, withFields(`"permissions":"r"`))}
	relabelled := class.DeepCopy()
	relabelled.Labels = map[string]string{"team": "db2"}

	for _, tc := range []struct {
		name    string
		req     request
		matched bool
		message string
	}{
		{"claim without parameters for this driver", claimRequest(claimWith(claimConfig("gpu.example.com", `{"kind":"GpuConfig"}`))), false, ""},
		{"claim without config", claimRequest(claimWith()), false, ""},
		{"claim: several entries, each checked", claimRequest(claimWith(claimConfig(driverName, okParams), claimConfig("gpu.example.com", "{}"), claimConfig(driverName, bad), claimConfig(driverName, `{}`))), true,
			"spec.devices.config[2].opaque.parameters" + badMsg + "; " +
				`spec.devices.config[3].opaque.parameters: apiVersion: Required value: must be "power-dev-plugin.io/v1alpha1"; ` +
				`spec.devices.config[3].opaque.parameters: kind: Required value: must be "DeviceConfig"`},
		{"template", claimRequest(template), true, "spec.spec.devices.config[1].opaque.parameters" + badMsg},
		{"device class", claimRequest(class), true, "spec.config[1].opaque.parameters" + badMsg},
		{"device class fixed", func() request {
			r := claimRequest(fixedClass)
			r.operation, r.oldObject = admission.Update, class
			return r
		}(), true, ""},
		{"device class broken by an update", func() request {
			r := claimRequest(class)
			r.operation, r.oldObject = admission.Update, fixedClass
			return r
		}(), true,
			"spec.config[1].opaque.parameters" + badMsg},
		{"device class relabelled: old parameters are not held against it", func() request {
			r := claimRequest(relabelled)
			r.operation, r.oldObject = admission.Update, class
			return r
		}(), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cp.evaluate(t, tc.req)
			if d.matched != tc.matched || d.denied != (tc.message != "") || d.message != tc.message {
				t.Errorf("got matched=%v denied=%v %q\nwant matched=%v %q", d.matched, d.denied, d.message, tc.matched, tc.message)
			}
		})
	}
}

// A large claim (the API's maximum of 32 config entries, each near the
// 10 KiB parameter limit) is evaluated within the API server's CEL budgets.
func TestDeviceConfigPolicyCost(t *testing.T) {
	cp := mustCompile(t, policy(t, kustomize(t, "dra"), deviceConfigPolicy))
	var configs []resourceapi.DeviceClaimConfiguration
	var fields []string
	for i := 0; len(strings.Join(fields, ",")) < resourceapi.OpaqueParametersMaxLength-200; i++ {
		fields = append(fields, fmt.Sprintf(`"unknown%04d":%d`, i, i))
	}
	big := withFields(strings.Join(fields, ","))
	for range resourceapi.DeviceConfigMaxSize {
		configs = append(configs, claimConfig(driverName, withFields(`"permissions":"rw","containerPath":"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4","uid":1000,"gid":1000,"fileMode":432`)))
	}
	d := cp.evaluate(t, claimRequest(claimWith(configs...)))
	if d.denied {
		t.Errorf("32 valid entries: denied: %s", d.message)
	}
	// Hundreds of unknown fields: evaluated within the budget, denied with
	// the policy's fixed message (the full one is over 5 KiB).
	d = cp.evaluate(t, claimRequest(claimWith(claimConfig(driverName, big))))
	p := policy(t, kustomize(t, "dra"), deviceConfigPolicy)
	if !d.denied || d.message != p.Spec.Validations[0].Message {
		t.Errorf("%d unknown fields: denied=%v %q", len(fields), d.denied, d.message)
	}
	// A few dozen are still listed in full and in order.
	d = cp.evaluate(t, claimRequest(claimWith(claimConfig(driverName, withFields(strings.Join(fields[:40], ","))))))
	if want := prefixed("spec.devices.config[0].opaque.parameters: ", driverProblems(withFields(strings.Join(fields[:40], ",")))); d.message != want {
		t.Errorf("40 unknown fields:\n got %q\nwant %q", d.message, want)
	}
}
