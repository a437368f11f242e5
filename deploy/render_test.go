// Package deploy_test renders the manifests under deploy/ (the kustomize
// overlays and the Helm chart) and checks what a cluster would get: every
// object decodes strictly with the Kubernetes API types, the RBAC and the
// DaemonSet grant no more than the plugin needs, the Helm chart renders the
// same objects as the kustomize overlays, and the CEL in the DeviceClasses
// and the admission policies compiles and behaves as documented.
//
// Rendering uses the kustomize and helm binaries that `make tools` builds into
// bin/tools (from the Go module proxy). They are not Go libraries of this
// module on purpose: importing helm.sh/helm/v4 or sigs.k8s.io/kustomize/api
// would raise shared dependencies of the plugin itself (grpc, protobuf,
// golang.org/x/net, OpenTelemetry) in go.mod.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	namespace      = "power-dev-plugin"
	serviceAccount = "power-dev-plugin"
	driverName     = "power-dev-plugin.io"
	releaseName    = "power-dev-plugin"
	chartDir       = "helm/power-dev-plugin"
	// minKubeVersion is the oldest Kubernetes the manifests support; Helm
	// renders for it so that the chart's kubeVersion constraint is checked.
	minKubeVersion = "v1.34.0"
)

// repoRoot is the directory holding go.mod (the tests run in deploy/).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// tool returns the path of bin/tools/<name>, or fails the test saying how
// to get it.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "tools", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found at %s: run `make tools` first (it builds helm and kustomize from the Go module proxy into bin/tools)", name, p)
	}
	return p
}

// object is one rendered document: its raw YAML and its generic form.
type object struct {
	raw []byte
	u   *unstructured.Unstructured
}

func (o object) key() string { return objKey(o.u) }

func objKey(u *unstructured.Unstructured) string {
	k := u.GetKind() + "/"
	if ns := u.GetNamespace(); ns != "" {
		k += ns + "/"
	}
	return k + u.GetName()
}

// manifest is the output of one render.
type manifest struct {
	what string
	objs []object
}

func (m *manifest) keys() []string {
	var ks []string
	for _, o := range m.objs {
		ks = append(ks, o.key())
	}
	sort.Strings(ks)
	return ks
}

// get returns the object kind/[namespace/]name, or fails.
func (m *manifest) get(t testing.TB, key string) object {
	t.Helper()
	for _, o := range m.objs {
		if o.key() == key {
			return o
		}
	}
	t.Fatalf("%s: no %s; have %v", m.what, key, m.keys())
	return object{}
}

func (m *manifest) byKind(kind string) []object {
	var out []object
	for _, o := range m.objs {
		if o.u.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// typed decodes o strictly into its Kubernetes API type.
func (o object) typed(t testing.TB) runtime.Object {
	t.Helper()
	obj, err := decodeStrict(o.raw)
	if err != nil {
		t.Fatalf("%s: %v", o.key(), err)
	}
	return obj
}

var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeStrict decodes one YAML document with client-go's scheme; unknown
// and duplicate fields are errors.
func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, _, err := strictDecoder.Decode(doc, nil, nil)
	return obj, err
}

// parseManifest splits a YAML stream into objects.
func parseManifest(what string, data []byte) (*manifest, error) {
	m := &manifest{what: what}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	seen := map[string]bool{}
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		var content map[string]any
		if err := yaml.Unmarshal(doc, &content); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", what, err, doc)
		}
		if len(content) == 0 {
			continue
		}
		o := object{raw: bytes.TrimSpace(doc), u: &unstructured.Unstructured{Object: content}}
		if seen[o.key()] {
			return nil, fmt.Errorf("%s: %s appears twice", what, o.key())
		}
		seen[o.key()] = true
		m.objs = append(m.objs, o)
	}
	return m, nil
}

var (
	renderMu    sync.Mutex
	renderCache = map[string]*manifest{}
	renderErr   = map[string]error{}
)

// run executes a tool once per distinct command line and caches the result.
func run(t testing.TB, what string, name string, args ...string) (*manifest, error) {
	t.Helper()
	bin := tool(t, name)
	key := name + " " + strings.Join(args, " ")
	renderMu.Lock()
	defer renderMu.Unlock()
	if m, ok := renderCache[key]; ok {
		return m, renderErr[key]
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Join(repoRoot(t), "deploy")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var m *manifest
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	} else {
		m, err = parseManifest(what, stdout.Bytes())
	}
	renderCache[key], renderErr[key] = m, err
	return m, err
}

// kustomize renders deploy/kustomize/overlays/<overlay>.
func kustomize(t testing.TB, overlay string) *manifest {
	t.Helper()
	m, err := run(t, "kustomize overlay "+overlay, "kustomize", "build", filepath.Join("kustomize", "overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// helmTemplate renders the chart in the namespace power-dev-plugin with the
// given --set style values (and whatever other flags are passed).
func helmTemplate(t testing.TB, args ...string) *manifest {
	t.Helper()
	m, err := helmTemplateErr(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func helmTemplateErr(t testing.TB, args ...string) (*manifest, error) {
	t.Helper()
	full := append([]string{"template", releaseName, chartDir, "--namespace", namespace, "--kube-version", minKubeVersion}, args...)
	return run(t, "helm template "+strings.Join(args, " "), "helm", full...)
}

// renderings are every rendered variant the generic checks run over.
func renderings(t *testing.T) []*manifest {
	t.Helper()
	return []*manifest{
		kustomize(t, "dra"),
		kustomize(t, "legacy"),
		kustomize(t, "openshift"),
		helmTemplate(t),
		helmTemplate(t, "--set", "namespace.create=true"),
		helmTemplate(t, "--set", "openshift.enabled=true,namespace.create=true"),
		helmTemplate(t, "--set", "mode=device-plugin,namespace.create=true"),
	}
}

// isLegacy reports whether m is a device-plugin mode rendering.
func isLegacy(m *manifest) bool {
	return strings.Contains(m.what, "legacy") || strings.Contains(m.what, "mode=device-plugin")
}

// isOpenShift reports whether m is an OpenShift rendering.
func isOpenShift(m *manifest) bool {
	return strings.Contains(m.what, "openshift")
}
