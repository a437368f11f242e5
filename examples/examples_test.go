// Package examples_test checks the examples under examples/: that every
// object is what the API server would accept, that the DeviceClasses they
// name are the ones deploy/ ships, that their CEL compiles, that their
// DeviceConfigs and DiscoveryConfigs are what the driver accepts, and that
// the scheduler's own allocator (k8s.io/dynamic-resource-allocation/structured)
// allocates their claims on a node whose devices the driver discovered with
// the example's DiscoveryConfig.
//
// An example is a folder with a README.md, the YAML that `kubectl apply -f
// examples/<name>/` applies, and node-config/discoveryconfig.yaml. A
// subfolder with YAML of its own (shared-device/nx-gzip) is a variant,
// applied with its own `kubectl apply -f` and using its parent's
// node-config.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/deviceclass/extendedresourcecache"
	"k8s.io/dynamic-resource-allocation/structured"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

const (
	// nodeName is the fixture node; its pool has the same name.
	nodeName = "power-node-1"
	// shippedClassesGlob is where deploy/ keeps the DeviceClasses the
	// driver ships (relative to this package's directory).
	shippedClassesGlob = "../deploy/kustomize/base/*.yaml"
	// nodeConfigFile is an example's DiscoveryConfig, relative to its folder.
	// kubectl apply -f <folder>/ does not descend into node-config/.
	nodeConfigFile = "node-config/discoveryconfig.yaml"
)

// ---------------------------------------------------------------------------
// Loading the examples.

// object is one YAML document of an example.
type object struct {
	file string // relative to examples/
	obj  runtime.Object
}

// unit is what one `kubectl apply -f examples/<dir>/` applies.
type unit struct {
	dir     string // "single-block-device", "shared-device/nx-gzip"
	example string // the top folder: "shared-device"
	objects []object
}

// example is a top folder of examples/.
type example struct {
	name   string
	units  []*unit
	config *v1alpha1.DiscoveryConfig
}

var codecs = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)

// splitYAML returns the non-empty documents of a YAML stream.
func splitYAML(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// decodeStrict decodes a Kubernetes object with the client-go scheme and a
// strict serializer: unknown and duplicate fields are errors, as they are
// for `kubectl apply` against an API server with field validation Strict.
func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
	return obj, err
}

// yamlFiles lists the .yaml/.yml/.json files directly in dir, as kubectl
// apply -f dir/ (without -R) does.
func yamlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out, nil
}

func loadUnit(dir, name string) (*unit, error) {
	u := &unit{dir: dir, example: name}
	files, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs, err := splitYAML(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		for i, doc := range docs {
			obj, err := decodeStrict(doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", f, i+1, err))
				continue
			}
			u.objects = append(u.objects, object{file: f, obj: obj})
		}
	}
	return u, errors.Join(errs...)
}

// exampleNames lists the top folders of examples/.
func exampleNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "testdata" {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		t.Fatal("no example folders under examples/")
	}
	return names
}

func loadExamples(t *testing.T) []*example {
	t.Helper()
	var out []*example
	for _, name := range exampleNames(t) {
		ex := &example{name: name}
		var dirs []string
		err := filepath.WalkDir(name, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				return nil
			}
			if d.Name() == "node-config" {
				return filepath.SkipDir
			}
			files, err := yamlFiles(p)
			if err != nil {
				return err
			}
			if p == name || len(files) > 0 {
				dirs = append(dirs, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range dirs {
			u, err := loadUnit(dir, name)
			if err != nil {
				t.Errorf("example %s: %v", dir, err)
				continue
			}
			if len(u.objects) == 0 {
				t.Errorf("example %s: no Kubernetes objects for kubectl apply -f examples/%s/", dir, dir)
			}
			ex.units = append(ex.units, u)
		}
		data, err := os.ReadFile(filepath.Join(name, nodeConfigFile))
		if err != nil {
			t.Errorf("example %s: %v (every example says which DiscoveryConfig it assumes)", name, err)
		} else {
			cfg, warns, err := v1alpha1.DecodeDiscoveryConfig(data)
			switch {
			case err != nil:
				t.Errorf("example %s: %s: %v", name, nodeConfigFile, err)
			case len(warns) > 0:
				t.Errorf("example %s: %s: warnings %q", name, nodeConfigFile, warns)
			default:
				ex.config = cfg
			}
		}
		out = append(out, ex)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// ---------------------------------------------------------------------------
// The DeviceClasses deploy/ ships.

// shippedClasses decodes every DeviceClass in deploy/kustomize/base/*.yaml.
// The examples must work with exactly these; the list is never written down
// here, so that it cannot drift from deploy/.
func shippedClasses(t *testing.T) []*resourceapi.DeviceClass {
	t.Helper()
	files, err := filepath.Glob(shippedClassesGlob)
	if err != nil {
		t.Fatal(err)
	}
	var classes []*resourceapi.DeviceClass
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitYAML(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, doc := range docs {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if tm.Kind != "DeviceClass" {
				continue
			}
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			dc, ok := obj.(*resourceapi.DeviceClass)
			if !ok {
				t.Fatalf("%s: a DeviceClass of %s decodes to %T, want resource.k8s.io/v1", f, tm.APIVersion, obj)
			}
			classes = append(classes, dc)
		}
	}
	if len(classes) == 0 {
		t.Fatalf("no DeviceClass objects in %s: the examples use the DeviceClasses the driver ships "+
			"(power-dev-plugin.io, block.power-dev-plugin.io, nx-gzip.power-dev-plugin.io), which deploy/ defines", shippedClassesGlob)
	}
	return classes
}

func classNames(classes []*resourceapi.DeviceClass) sets.Set[string] {
	s := sets.New[string]()
	for _, c := range classes {
		s.Insert(c.Name)
	}
	return s
}

// ---------------------------------------------------------------------------
// Walking the objects.

// podSpec is a pod an example creates: a Pod, or a Deployment's replica.
type podSpec struct {
	name string
	file string
	spec *corev1.PodSpec
}

// pods lists the pods a unit creates, a Deployment's replicas each.
func (u *unit) pods() []podSpec {
	var out []podSpec
	for _, o := range u.objects {
		switch x := o.obj.(type) {
		case *corev1.Pod:
			out = append(out, podSpec{name: x.Name, file: o.file, spec: &x.Spec})
		case *appsv1.Deployment:
			n := int(ptr.Deref(x.Spec.Replicas, 1))
			for i := range n {
				out = append(out, podSpec{name: fmt.Sprintf("%s-%d", x.Name, i), file: o.file, spec: &x.Spec.Template.Spec})
			}
		}
	}
	return out
}

// claimSpecs returns the claim spec of every ResourceClaimTemplate and
// ResourceClaim of a unit, keyed by a description for messages.
func (u *unit) claimSpecs() map[string]*resourceapi.ResourceClaimSpec {
	out := map[string]*resourceapi.ResourceClaimSpec{}
	for _, o := range u.objects {
		switch x := o.obj.(type) {
		case *resourceapi.ResourceClaimTemplate:
			out[o.file+": ResourceClaimTemplate "+x.Name] = &x.Spec.Spec
		case *resourceapi.ResourceClaim:
			out[o.file+": ResourceClaim "+x.Name] = &x.Spec
		}
	}
	return out
}

func (u *unit) template(name string) *resourceapi.ResourceClaimTemplate {
	for _, o := range u.objects {
		if x, ok := o.obj.(*resourceapi.ResourceClaimTemplate); ok && x.Name == name {
			return x
		}
	}
	return nil
}

func (u *unit) claim(name string) *resourceapi.ResourceClaim {
	for _, o := range u.objects {
		if x, ok := o.obj.(*resourceapi.ResourceClaim); ok && x.Name == name {
			return x
		}
	}
	return nil
}

// setClaimDefaults applies the API server's defaults to a claim spec, as
// it stores it: a request without allocationMode is ExactCount, and
// ExactCount without count is 1 (kubernetes pkg/apis/resource/v1,
// SetDefaults_ExactDeviceRequest and SetDefaults_DeviceSubRequest; the
// client-go scheme has no defaulters).
func setClaimDefaults(spec *resourceapi.ResourceClaimSpec) {
	set := func(mode *resourceapi.DeviceAllocationMode, count *int64) {
		if *mode == "" {
			*mode = resourceapi.DeviceAllocationModeExactCount
		}
		if *mode == resourceapi.DeviceAllocationModeExactCount && *count == 0 {
			*count = 1
		}
	}
	for i := range spec.Devices.Requests {
		r := &spec.Devices.Requests[i]
		if r.Exactly != nil {
			set(&r.Exactly.AllocationMode, &r.Exactly.Count)
		}
		for j := range r.FirstAvailable {
			set(&r.FirstAvailable[j].AllocationMode, &r.FirstAvailable[j].Count)
		}
	}
}

// requestClasses lists the deviceClassName of every request and subrequest.
func requestClasses(spec *resourceapi.ResourceClaimSpec) []string {
	var out []string
	for _, r := range spec.Devices.Requests {
		if r.Exactly != nil {
			out = append(out, r.Exactly.DeviceClassName)
		}
		for _, s := range r.FirstAvailable {
			out = append(out, s.DeviceClassName)
		}
	}
	return out
}

// selectorsOf lists the CEL expressions of a claim spec's requests and
// subrequests.
func selectorsOf(spec *resourceapi.ResourceClaimSpec) []string {
	var out []string
	add := func(sels []resourceapi.DeviceSelector) {
		for _, s := range sels {
			if s.CEL != nil {
				out = append(out, s.CEL.Expression)
			}
		}
	}
	for _, r := range spec.Devices.Requests {
		if r.Exactly != nil {
			add(r.Exactly.Selectors)
		}
		for _, s := range r.FirstAvailable {
			add(s.Selectors)
		}
	}
	return out
}

// requestNames lists the names a config entry may refer to: requests and
// request/subrequest.
func requestNames(spec *resourceapi.ResourceClaimSpec) sets.Set[string] {
	s := sets.New[string]()
	for _, r := range spec.Devices.Requests {
		s.Insert(r.Name)
		for _, sub := range r.FirstAvailable {
			s.Insert(r.Name + "/" + sub.Name)
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// The fixture node: a Power server with local disks, SAN multipath LUNs,
// FUSE and the NX-GZIP accelerator.

const gib = 1 << 30

func nd(major, minor uint32) discoverytest.DevNum {
	return discoverytest.DevNum{Major: major, Minor: minor}
}

// mpathName is the multipath friendly name of LUN i: mpatha ... mpathz,
// mpathaa ...
func mpathName(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return "mpath" + s
}

// layoutPowerNode lays out the fixture host:
//
//	sda             root disk: sda1 mounted at /boot, sda2 at /
//	sdb sdc         local SAS SSDs with serials and WWNs, unused
//	sdd ... sdk     SAN paths, two per LUN, held by the multipath devices
//	dm-0 ... dm-3   multipath devices mpatha ... mpathd (512 GiB each)
//	/dev/fuse, /dev/crypto/nx-gzip, and the usual /dev/null and friends
func layoutPowerNode(t *testing.T, tr *discoverytest.Tree) {
	t.Helper()
	for _, b := range []discoverytest.Block{
		{Name: "sda", Dev: nd(8, 0), Size: 300 * gib, Vendor: "IBM", Model: "ST300MM0048", Serial: "S0K2RQ7N",
			WWID: "naa.5000c500b12a9f03", ByID: []string{"wwn-0x5000c500b12a9f03"}},
		{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: 1 * gib},
		{Name: "sda2", Parent: "sda", Dev: nd(8, 2), Size: 299 * gib},
		{Name: "sdb", Dev: nd(8, 16), Size: 800 * gib, Vendor: "IBM", Model: "ST800FM0053", Serial: "Z3D1K4B0",
			WWID: "naa.5000c5003e8d1a27", ByID: []string{"wwn-0x5000c5003e8d1a27", "scsi-35000c5003e8d1a27"}},
		{Name: "sdc", Dev: nd(8, 32), Size: 800 * gib, Vendor: "IBM", Model: "ST800FM0053", Serial: "Z3D1K7QM",
			WWID: "naa.5000c5003e8d2f91", ByID: []string{"wwn-0x5000c5003e8d2f91", "scsi-35000c5003e8d2f91"}},
	} {
		tr.AddBlock(b)
	}
	tr.Mount("/dev/sda1", nd(8, 1), "/boot", "xfs")
	tr.Mount("/dev/sda2", nd(8, 2), "/", "xfs")
	addMultipath(tr, 4, 3)
	for _, c := range []struct {
		path         string
		major, minor uint32
	}{
		{"/dev/null", 1, 3}, {"/dev/zero", 1, 5}, {"/dev/mem", 1, 1}, {"/dev/kmsg", 1, 11},
		{"/dev/fuse", 10, 229}, {"/dev/crypto/nx-gzip", 243, 0}, {"/dev/mapper/control", 10, 236},
	} {
		tr.CharNode(c.path, c.major, c.minor)
	}
}

// layoutFor is the fixture host of an example: layoutPowerNode, or one with
// what the example needs on top.
func layoutFor(example string) func(*testing.T, *discoverytest.Tree) {
	if example == "same-pcie-root" {
		return layoutPCIeNode
	}
	return layoutPowerNode
}

// layoutPCIeNode is layoutPowerNode with two NVMe disks on the PCI
// functions of two root complexes, as sysfs shows them (numa_node,
// /sys/bus/pci/devices links): nvme0n1 on pci0000:00 (NUMA node 0),
// nvme1n1 on pci0000:80 (NUMA node 1). The NIC of the other driver is on
// pci0000:80 (foreignSlices).
func layoutPCIeNode(t *testing.T, tr *discoverytest.Tree) {
	layoutPowerNode(t, tr)
	for _, fn := range []struct{ root, bdf, numa string }{
		{"pci0000:00", "0000:00:04.0", "0"}, // where the fixture puts NVMe controllers
		{"pci0000:80", "0000:80:02.0", "1"},
	} {
		dir := "/sys/devices/" + fn.root + "/" + fn.bdf
		tr.File(dir+"/numa_node", fn.numa+"\n")
		tr.Symlink("/sys/bus/pci/devices/"+fn.bdf, "../../../devices/"+fn.root+"/"+fn.bdf)
	}
	tr.AddBlock(discoverytest.Block{Name: "nvme0n1", Dev: nd(259, 0), Size: 1600 * gib, Model: "PM1735", Serial: "S4WRNA0N100001"})
	tr.AddBlock(discoverytest.Block{Name: "nvme1n1", Dev: nd(259, 1), Size: 1600 * gib, Model: "PM1735", Serial: "S4WRNA0N100002",
		SysDir: "/sys/devices/pci0000:80/0000:80:02.0/nvme/nvme1/nvme1n1"})
}

// foreignDriver stands for the NIC (or GPU) driver that same-pcie-root
// pairs a disk with: its DeviceClass and its ResourceSlice on the fixture
// node, whose one NIC is on pci0000:80.
const foreignDriver = "nic.example.com"

func foreignClasses() []*resourceapi.DeviceClass {
	return []*resourceapi.DeviceClass{{
		ObjectMeta: metav1.ObjectMeta{Name: foreignDriver},
		Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
			Expression: fmt.Sprintf("device.driver == %q", foreignDriver)}}}},
	}}
}

func foreignSlices() []*resourceapi.ResourceSlice {
	root := "pci0000:80"
	return []*resourceapi.ResourceSlice{{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName + "-" + foreignDriver},
		Spec: resourceapi.ResourceSliceSpec{
			Driver:   foreignDriver,
			Pool:     resourceapi.ResourcePool{Name: nodeName, Generation: 1, ResourceSliceCount: 1},
			NodeName: ptr.To(nodeName),
			Devices: []resourceapi.Device{{
				Name:       "nic-0",
				Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{driver.AttrPCIeRoot: {StringValue: &root}},
			}},
		},
	}}
}

// addMultipath adds n LUNs of two paths each: SCSI disks from index
// firstDisk on (1 is sdb), and dm-0 ... dm-(n-1) named mpatha ... on top.
func addMultipath(tr *discoverytest.Tree, n, firstDisk int) {
	for i := range n {
		wwid := fmt.Sprintf("36005076810810261f8000000000001%02x", i)
		var paths []string
		for p := range 2 {
			disk := firstDisk + 2*i + p
			name := scsiName(disk)
			tr.AddBlock(discoverytest.Block{Name: name, Dev: scsiDev(disk), Size: 512 * gib,
				Vendor: "IBM", Model: "2145", Serial: fmt.Sprintf("0206CC%04d", i), WWID: "naa." + wwid[1:]})
			paths = append(paths, name)
		}
		mp := mpathName(i)
		tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("dm-%d", i), Dev: nd(253, uint32(i)), Size: 512 * gib,
			DMName: mp, DMUUID: "mpath-" + wwid, Slaves: paths, ByID: []string{"dm-name-" + mp, "dm-uuid-mpath-" + wwid}})
	}
}

// scsiDev is the device number of SCSI disk i: majors 8, 65-71, 128-135
// with 16 minors per disk.
func scsiDev(i int) discoverytest.DevNum {
	block := i / 16
	major := uint32(8)
	switch {
	case block >= 8:
		major = 128 + uint32(block-8)
	case block >= 1:
		major = 64 + uint32(block)
	}
	return nd(major, uint32(i%16)*16)
}

// scsiName is the kernel name of SCSI disk i: sda, ..., sdz, sdaa, ...
func scsiName(i int) string {
	return "sd" + strings.TrimPrefix(mpathName(i), "mpath")
}

// discoverOn runs the driver's discovery with cfg on a fixture host laid out
// by layout.
func discoverOn(t *testing.T, cfg *v1alpha1.DiscoveryConfig, layout func(*testing.T, *discoverytest.Tree)) *discovery.Inventory {
	t.Helper()
	tr := discoverytest.New(t)
	layout(t, tr)
	opts := []discovery.Option{discovery.WithHostRoot(tr.Root)}
	if st := tr.Stat(); st != nil {
		opts = append(opts, discovery.WithStat(st))
	}
	inv, err := discovery.Discover(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	return inv
}

// groupPaths maps each group of inv to its nodes' host paths.
func groupPaths(inv *discovery.Inventory) map[string][]string {
	out := map[string][]string{}
	for _, g := range inv.Groups {
		out[g.Name] = []string{}
		for _, d := range g.Devices {
			out[g.Name] = append(out[g.Name], d.Path)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The scheduler's allocator against what the driver publishes.

// allocFeatures are the allocator features of a Kubernetes 1.37 scheduler
// with default feature gates (GA and beta): admin access, prioritized list,
// device taints, partitionable devices, binding conditions and device
// status, consumable capacity. Alpha features stay off.
var allocFeatures = structured.Features{
	AdminAccess:            true,
	PrioritizedList:        true,
	DeviceTaints:           true,
	PartitionableDevices:   true,
	DeviceBindingAndStatus: true,
	ConsumableCapacity:     true,
}

var celCache = cel.NewCache(100, cel.Features{EnableConsumableCapacity: allocFeatures.ConsumableCapacity})

type classLister []*resourceapi.DeviceClass

func (l classLister) List() ([]*resourceapi.DeviceClass, error) { return l, nil }

func (l classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	for _, c := range l {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("deviceclass %q not found", name)
}

// node is one fixture node: its inventory, the ResourceSlices the driver
// publishes for it, and the claims allocated there so far.
type node struct {
	inv       *discovery.Inventory
	node      *corev1.Node
	slices    []*resourceapi.ResourceSlice
	classes   classLister
	allocated []*resourceapi.ResourceClaim
	uids      int
}

func newNode(t *testing.T, inv *discovery.Inventory, classes []*resourceapi.DeviceClass) *node {
	t.Helper()
	res, err := driver.BuildResources(nodeName, inv)
	if err != nil {
		t.Fatalf("BuildResources: %v", err)
	}
	if err := driver.ValidateResources(res); err != nil {
		t.Fatalf("ValidateResources: %v", err)
	}
	n := &node{
		inv:     inv,
		node:    &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}},
		classes: classes,
	}
	// As the resourceslice controller publishes them for a node-local
	// driver: one pool named after the node, names in slice order.
	for poolName, pool := range res.Pools {
		for i, s := range pool.Slices {
			n.slices = append(n.slices, &resourceapi.ResourceSlice{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%04d", nodeName, driver.DriverName, i)},
				Spec: resourceapi.ResourceSliceSpec{
					Driver:         driver.DriverName,
					Pool:           resourceapi.ResourcePool{Name: poolName, Generation: 1, ResourceSliceCount: int64(len(pool.Slices))},
					NodeName:       ptr.To(nodeName),
					Devices:        s.Devices,
					SharedCounters: s.SharedCounters,
				},
			})
		}
	}
	n.slices = append(n.slices, foreignSlices()...)
	return n
}

// devices lists every published device.
func (n *node) devices() []resourceapi.Device {
	var out []resourceapi.Device
	for _, s := range n.slices {
		if s.Spec.Driver == driver.DriverName {
			out = append(out, s.Spec.Devices...)
		}
	}
	return out
}

// newClaim is an unallocated claim with a fresh UID, defaulted as the API
// server stores it.
func (n *node) newClaim(name string, spec resourceapi.ResourceClaimSpec) *resourceapi.ResourceClaim {
	n.uids++
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(fmt.Sprintf("%08d-0000-4000-8000-%012d", n.uids, n.uids))},
		Spec:       *spec.DeepCopy(),
	}
	setClaimDefaults(&c.Spec)
	return c
}

// allocatedState is what the scheduler derives from the allocated claims.
func (n *node) allocatedState() structured.AllocatedState {
	s := structured.AllocatedState{
		AllocatedDevices:         sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	for _, c := range n.allocated {
		for _, r := range c.Status.Allocation.Devices.Results {
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID == nil {
				s.AllocatedDevices.Insert(id)
				continue
			}
			s.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
			if r.ConsumedCapacity != nil {
				s.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
			}
		}
	}
	return s
}

// allocate allocates a pod's claims together, as the scheduler does, and
// records them. It returns the allocated copies, or an error when the
// allocator refuses or finds no fit.
func (n *node) allocate(claims ...*resourceapi.ResourceClaim) ([]*resourceapi.ResourceClaim, error) {
	if len(claims) == 0 {
		return nil, nil
	}
	ctx := context.Background()
	a, err := structured.NewAllocator(ctx, allocFeatures, n.allocatedState(), n.classes, n.slices, celCache)
	if err != nil {
		return nil, err
	}
	results, err := a.Allocate(ctx, n.node, claims)
	if err != nil {
		return nil, err
	}
	if results == nil {
		return nil, errors.New("the claims do not fit on the node")
	}
	out := make([]*resourceapi.ResourceClaim, len(claims))
	for i, c := range claims {
		c = c.DeepCopy()
		c.Status.Allocation = &results[i]
		out[i] = c
	}
	n.allocated = append(n.allocated, out...)
	return out, nil
}

// extendedResourceClaim is the claim the scheduler makes for a pod's
// extended resources that a DeviceClass serves: one request per container
// and resource, named container-<i>-request-<j>, for exactly the requested
// count of devices of that class. Resources no class serves are returned.
func extendedResourceClaim(n *node, pod podSpec, cache *extendedresourcecache.ExtendedResourceCache) (*resourceapi.ResourceClaim, []string) {
	var spec resourceapi.ResourceClaimSpec
	var unserved []string
	for i, c := range pod.spec.Containers {
		list := c.Resources.Requests
		if len(list) == 0 {
			list = c.Resources.Limits
		}
		names := make([]string, 0, len(list))
		for name := range list {
			names = append(names, string(name))
		}
		sort.Strings(names)
		j := 0
		for _, name := range names {
			if name == string(corev1.ResourceCPU) || name == string(corev1.ResourceMemory) || strings.HasPrefix(name, "hugepages-") ||
				name == string(corev1.ResourceEphemeralStorage) {
				continue
			}
			class := cache.GetDeviceClass(corev1.ResourceName(name))
			if class == nil {
				unserved = append(unserved, name)
				continue
			}
			q := list[corev1.ResourceName(name)]
			spec.Devices.Requests = append(spec.Devices.Requests, resourceapi.DeviceRequest{
				Name: fmt.Sprintf("container-%d-request-%d", i, j),
				Exactly: &resourceapi.ExactDeviceRequest{
					DeviceClassName: class.Name,
					AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
					Count:           q.Value(),
				},
			})
			j++
		}
	}
	if len(spec.Devices.Requests) == 0 {
		return nil, unserved
	}
	c := n.newClaim(pod.name+"-extended-resources", spec)
	c.Annotations = map[string]string{resourceapi.ExtendedResourceClaimAnnotation: "true"}
	return c, unserved
}

// podResult is what a pod got.
type podResult struct {
	// claims by the pod's claim name ("extended-resources" for the
	// scheduler's claim).
	claims map[string]*resourceapi.ResourceClaim
	plans  map[string]*driver.ClaimPlan
}

// unitResult is what the pods of a unit got, by pod name.
type unitResult struct {
	node *node
	unit *unit
	pods map[string]*podResult
}

// allocateUnit makes the claims of every pod of u, allocates them pod by
// pod on a fresh node with inv, and plans them as the driver would on the
// node. Any failure is fatal.
func allocateUnit(t *testing.T, u *unit, inv *discovery.Inventory, classes []*resourceapi.DeviceClass) *unitResult {
	t.Helper()
	n := newNode(t, inv, classes)
	cache := extendedresourcecache.NewExtendedResourceCache(klog.Background())
	for _, c := range classes {
		cache.OnAdd(c, true)
	}
	res := &unitResult{node: n, unit: u, pods: map[string]*podResult{}}
	shared := map[string]*resourceapi.ResourceClaim{} // allocated ResourceClaims by name
	for _, pod := range u.pods() {
		pr := &podResult{claims: map[string]*resourceapi.ResourceClaim{}, plans: map[string]*driver.ClaimPlan{}}
		res.pods[pod.name] = pr
		var names []string
		var todo []*resourceapi.ResourceClaim
		for _, rc := range pod.spec.ResourceClaims {
			switch {
			case rc.ResourceClaimTemplateName != nil:
				tmpl := u.template(*rc.ResourceClaimTemplateName)
				if tmpl == nil {
					t.Fatalf("%s: pod %s: no ResourceClaimTemplate %q in examples/%s/", pod.file, pod.name, *rc.ResourceClaimTemplateName, u.dir)
				}
				names = append(names, rc.Name)
				todo = append(todo, n.newClaim(pod.name+"-"+rc.Name, tmpl.Spec.Spec))
			case rc.ResourceClaimName != nil:
				if c, ok := shared[*rc.ResourceClaimName]; ok {
					pr.claims[rc.Name] = c
					continue
				}
				c := u.claim(*rc.ResourceClaimName)
				if c == nil {
					t.Fatalf("%s: pod %s: no ResourceClaim %q in examples/%s/", pod.file, pod.name, *rc.ResourceClaimName, u.dir)
				}
				names = append(names, rc.Name)
				todo = append(todo, n.newClaim(c.Name, c.Spec))
			default:
				t.Fatalf("%s: pod %s: claim %s names neither a claim nor a template", pod.file, pod.name, rc.Name)
			}
		}
		ext, unserved := extendedResourceClaim(n, pod, cache)
		if len(unserved) > 0 {
			t.Fatalf("%s: pod %s: no shipped DeviceClass serves the extended resources %v", pod.file, pod.name, unserved)
		}
		if ext != nil {
			names = append(names, "extended-resources")
			todo = append(todo, ext)
		}
		got, err := n.allocate(todo...)
		if err != nil {
			t.Fatalf("%s: pod %s: allocating its claims on %s: %v\n%s", pod.file, pod.name, nodeName, err, describeNode(n))
		}
		for i, c := range got {
			pr.claims[names[i]] = c
			for _, rc := range pod.spec.ResourceClaims {
				if rc.Name == names[i] && rc.ResourceClaimName != nil {
					shared[*rc.ResourceClaimName] = c
				}
			}
		}
		for name, c := range pr.claims {
			plan, err := driver.PlanClaim(c, nodeName, inv)
			if err != nil {
				t.Fatalf("%s: pod %s: the driver cannot prepare claim %s: %v", pod.file, pod.name, name, err)
			}
			pr.plans[name] = plan
		}
	}
	return res
}

// describeNode lists a node's published devices, for failure messages.
func describeNode(n *node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices published on %s:\n", nodeName)
	for _, d := range n.devices() {
		group, path := "", ""
		if a, ok := d.Attributes["group"]; ok && a.StringValue != nil {
			group = *a.StringValue
		}
		if a, ok := d.Attributes["path"]; ok && a.StringValue != nil {
			path = *a.StringValue
		}
		fmt.Fprintf(&b, "  %-20s group %-14s %s\n", d.Name, group, path)
	}
	return b.String()
}

// hostPaths lists the host paths a claim's plan gives the container.
// hostPaths lists the distinct host device nodes a plan hands over (a
// device-mapper node also appears under its /dev/mapper name: one host node).
func hostPaths(p *driver.ClaimPlan) []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range p.Devices {
		for _, n := range d.Nodes {
			if !seen[n.HostPath] {
				seen[n.HostPath] = true
				out = append(out, n.HostPath)
			}
		}
	}
	return out
}

// containerPaths lists every path a plan creates in the container.
func containerPaths(p *driver.ClaimPlan) []string {
	var out []string
	for _, d := range p.Devices {
		for _, n := range d.Nodes {
			out = append(out, n.ContainerPath)
		}
	}
	return out
}

func deviceNames(c *resourceapi.ResourceClaim) []string {
	var out []string
	for _, r := range c.Status.Allocation.Devices.Results {
		out = append(out, r.Device)
	}
	return out
}

// ---------------------------------------------------------------------------
// Tests.

// TestObjectsDecodeStrictly loads every example: each YAML document decodes
// with the client-go scheme and a strict serializer, is of a kind an
// example is expected to have, names no namespace (examples go to the
// current one), and no two examples create the same object, so that they
// can all be applied to one namespace.
func TestObjectsDecodeStrictly(t *testing.T) {
	seen := map[string]string{}
	for _, ex := range loadExamples(t) {
		for _, u := range ex.units {
			for _, o := range u.objects {
				m, err := metaOf(o.obj)
				if err != nil {
					t.Errorf("%s: %v", o.file, err)
					continue
				}
				kind := fmt.Sprintf("%T", o.obj)
				switch o.obj.(type) {
				case *resourceapi.ResourceClaimTemplate, *resourceapi.ResourceClaim, *corev1.Pod, *appsv1.Deployment:
				default:
					t.Errorf("%s: unexpected %s %s", o.file, kind, m.GetName())
				}
				if m.GetNamespace() != "" {
					t.Errorf("%s: %s %s sets namespace %q; examples go to the current namespace", o.file, kind, m.GetName(), m.GetNamespace())
				}
				key := kind + " " + m.GetName()
				if prev, dup := seen[key]; dup {
					t.Errorf("%s: %s is also created by %s", o.file, key, prev)
				}
				seen[key] = o.file
			}
		}
	}
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	if m.GetName() == "" {
		return nil, fmt.Errorf("%T without a name", obj)
	}
	return m, nil
}

// TestStrictDecodingCatchesMistakes makes sure the decoder used above is
// strict: a misspelt field fails.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	doc := []byte(`
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata:
  name: x
spec:
  spec:
    devices:
      requests:
      - name: disk
        exactly:
          deviceClass: block.power-dev-plugin.io
`)
	if _, err := decodeStrict(doc); err == nil || !strings.Contains(err.Error(), "deviceClass") {
		t.Errorf("an unknown field decoded without error: %v", err)
	}
}

// TestDeviceClassesExist checks that every deviceClassName in the examples
// and every extended resource their pods ask for is served by a DeviceClass
// that deploy/kustomize/base ships.
func TestDeviceClassesExist(t *testing.T) {
	classes := shippedClasses(t)
	names := classNames(classes)
	known := names.Union(classNames(foreignClasses()))
	cache := extendedresourcecache.NewExtendedResourceCache(klog.Background())
	for _, c := range classes {
		cache.OnAdd(c, true)
	}
	used := sets.New[string]()
	for _, ex := range loadExamples(t) {
		for _, u := range ex.units {
			for what, spec := range u.claimSpecs() {
				if len(spec.Devices.Requests) == 0 {
					t.Errorf("%s: no device requests", what)
				}
				for _, cn := range requestClasses(spec) {
					used.Insert(cn)
					if !known.Has(cn) {
						t.Errorf("%s: deviceClassName %q is not one of the DeviceClasses deploy/ ships %v", what, cn, sets.List(names))
					}
				}
			}
			n := &node{}
			for _, pod := range u.pods() {
				c, unserved := extendedResourceClaim(n, pod, cache)
				if len(unserved) > 0 {
					t.Errorf("%s: pod %s: no shipped DeviceClass serves %v", pod.file, pod.name, unserved)
				}
				if c != nil {
					used.Insert(requestClasses(&c.Spec)...)
				}
			}
		}
	}
	if unused := names.Difference(used); unused.Len() > 0 {
		t.Errorf("no example uses the shipped DeviceClasses %v", sets.List(unused))
	}
}

// celExpressions returns every CEL expression of the shipped classes and of
// the examples' claims, with where it comes from.
func celExpressions(t *testing.T, examples []*example, classes []*resourceapi.DeviceClass) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range classes {
		for i, s := range c.Spec.Selectors {
			if s.CEL == nil {
				t.Errorf("DeviceClass %s: selector %d is not CEL", c.Name, i)
				continue
			}
			out[fmt.Sprintf("DeviceClass %s selector %d", c.Name, i)] = s.CEL.Expression
		}
	}
	for _, ex := range examples {
		for _, u := range ex.units {
			for what, spec := range u.claimSpecs() {
				for i, expr := range selectorsOf(spec) {
					out[fmt.Sprintf("%s selector %d", what, i)] = expr
				}
			}
		}
	}
	return out
}

// TestCELCompiles compiles every CEL expression of the examples and of the
// shipped DeviceClasses the way the API server validates a new object
// (NewExpressions environment, cost estimate within the API limit), with
// the features of a Kubernetes 1.34 API server (none) and of 1.37
// (consumable capacity).
func TestCELCompiles(t *testing.T) {
	exprs := celExpressions(t, loadExamples(t), shippedClasses(t))
	if len(exprs) == 0 {
		t.Fatal("no CEL expressions found")
	}
	envType := environment.NewExpressions
	for _, features := range []cel.Features{{}, {EnableConsumableCapacity: true}} {
		compiler := cel.GetCompiler(features)
		for where, expr := range exprs {
			res := compiler.CompileCELExpression(expr, cel.Options{EnvType: &envType})
			if res.Error != nil {
				t.Errorf("%s (features %+v): %q: %v", where, features, expr, res.Error)
				continue
			}
			if res.MaxCost > resourceapi.CELSelectorExpressionMaxCost {
				t.Errorf("%s: %q: estimated cost %d is above the API's limit %d", where, expr, res.MaxCost, resourceapi.CELSelectorExpressionMaxCost)
			}
		}
	}
	// The check above must be able to fail.
	if res := cel.GetCompiler(cel.Features{}).CompileCELExpression(`device.attributes["power-dev-plugin.io"].group = "x"`, cel.Options{EnvType: &envType}); res.Error == nil {
		t.Error("an invalid expression compiled")
	}
}

// TestCELNeverFailsOnAnyDevice evaluates every expression against every
// device that any example's configuration publishes on the fixture node:
// single nodes of every kind, bundles, shared devices. A CEL runtime error
// (such as reading an attribute a bundle does not carry) fails the
// scheduling of every pod with that selector on the node, so none is
// allowed, whether or not the device would match.
func TestCELNeverFailsOnAnyDevice(t *testing.T) {
	examples := loadExamples(t)
	classes := shippedClasses(t)
	exprs := celExpressions(t, examples, classes)
	compiled := map[string]cel.CompilationResult{}
	for where, expr := range exprs {
		res := celCache.GetOrCompile(expr)
		if res.Error != nil {
			t.Fatalf("%s: %v", where, res.Error)
		}
		compiled[where] = res
	}
	var devices []resourceapi.Device
	for _, ex := range examples {
		devices = append(devices, newNode(t, discoverOn(t, ex.config, layoutFor(ex.name)), classes).devices()...)
	}
	if len(devices) == 0 {
		t.Fatal("no devices published")
	}
	for where, res := range compiled {
		for _, d := range devices {
			_, _, err := res.DeviceMatches(context.Background(), cel.Device{
				Driver: driver.DriverName, AllowMultipleAllocations: d.AllowMultipleAllocations,
				Attributes: d.Attributes, Capacity: d.Capacity,
			})
			if err != nil {
				t.Errorf("%s: %q fails on device %s (attributes %v): %v", where, exprs[where], d.Name, attrNames(d), err)
			}
		}
	}
}

func attrNames(d resourceapi.Device) []string {
	var out []string
	for k := range d.Attributes {
		out = append(out, string(k))
	}
	sort.Strings(out)
	return out
}

// TestDeviceConfigsDecode decodes the opaque parameters of every config
// entry of the examples with the driver's own decoder, and checks that the
// entries name requests that exist (the API server refuses others).
func TestDeviceConfigsDecode(t *testing.T) {
	count := 0
	for _, ex := range loadExamples(t) {
		for _, u := range ex.units {
			for what, spec := range u.claimSpecs() {
				reqs := requestNames(spec)
				for i, c := range spec.Devices.Config {
					if c.Opaque == nil || c.Opaque.Driver != driver.DriverName {
						t.Errorf("%s: config %d is not for the driver %s", what, i, driver.DriverName)
						continue
					}
					if _, err := v1alpha1.DecodeDeviceConfig(c.Opaque.Parameters.Raw); err != nil {
						t.Errorf("%s: config %d: %v", what, i, err)
					}
					count++
					for _, r := range c.Requests {
						if !reqs.Has(r) {
							t.Errorf("%s: config %d names request %q, which the claim does not have", what, i, r)
						}
					}
				}
			}
		}
	}
	if count == 0 {
		t.Error("no example has a DeviceConfig")
	}
}

// TestPodsAreUnprivileged checks that every pod of the examples would pass
// the "restricted" Pod Security Standard in the ways that matter here, and
// that its claims are wired: every claim of the pod is used by a container
// and every container's claim exists.
func TestPodsAreUnprivileged(t *testing.T) {
	for _, ex := range loadExamples(t) {
		for _, u := range ex.units {
			for _, pod := range u.pods() {
				where := pod.file + ": pod " + pod.name
				s := pod.spec
				if s.HostNetwork || s.HostPID || s.HostIPC {
					t.Errorf("%s: uses host namespaces", where)
				}
				psc := s.SecurityContext
				if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
					t.Errorf("%s: want runAsNonRoot and a non-root runAsUser", where)
				}
				if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: want seccompProfile RuntimeDefault", where)
				}
				for _, v := range s.Volumes {
					if v.HostPath != nil {
						t.Errorf("%s: hostPath volume %s", where, v.Name)
					}
				}
				podClaims := sets.New[string]()
				for _, rc := range s.ResourceClaims {
					podClaims.Insert(rc.Name)
				}
				usedClaims := sets.New[string]()
				for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
					cw := where + " container " + c.Name
					sc := c.SecurityContext
					switch {
					case sc == nil:
						t.Errorf("%s: no securityContext", cw)
					case ptr.Deref(sc.Privileged, false):
						t.Errorf("%s: privileged", cw)
					case !isFalse(sc.AllowPrivilegeEscalation):
						t.Errorf("%s: want allowPrivilegeEscalation: false", cw)
					case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
						t.Errorf("%s: want capabilities {drop: [ALL]}", cw)
					case sc.RunAsUser != nil && *sc.RunAsUser == 0:
						t.Errorf("%s: runs as root", cw)
					}
					if !strings.HasPrefix(c.Image, "docker.io/library/busybox:") {
						t.Errorf("%s: image %q, want docker.io/library/busybox", cw, c.Image)
					}
					for _, rc := range c.Resources.Claims {
						usedClaims.Insert(rc.Name)
						if !podClaims.Has(rc.Name) {
							t.Errorf("%s: uses claim %q, which the pod does not have", cw, rc.Name)
						}
					}
				}
				if unused := podClaims.Difference(usedClaims); unused.Len() > 0 {
					t.Errorf("%s: no container uses the claims %v: their devices would go nowhere", where, sets.List(unused))
				}
			}
		}
	}
}

func isFalse(b *bool) bool { return b != nil && !*b }

// TestDiscoveryConfigsPublish checks that each example's DiscoveryConfig
// publishes on the fixture node what the example needs.
func TestDiscoveryConfigsPublish(t *testing.T) {
	for _, ex := range loadExamples(t) {
		inv := discoverOn(t, ex.config, layoutFor(ex.name))
		for g, paths := range groupPaths(inv) {
			if len(paths) == 0 {
				t.Errorf("example %s: group %q publishes nothing on the fixture node", ex.name, g)
			}
		}
	}
}

// expectations are what each unit's pods must get on the fixture node,
// beyond being allocated and preparable at all. Every unit must have one.
var expectations = map[string]func(t *testing.T, r *unitResult){
	"single-block-device": func(t *testing.T, r *unitResult) {
		wantPaths(t, r, "single-block-device", "disk", "/dev/sdb")
	},
	"select-by-serial": func(t *testing.T, r *unitResult) {
		wantPaths(t, r, "select-by-serial", "by-serial", "/dev/sdb") // serial Z3D1K4B0
		wantPaths(t, r, "select-by-serial", "by-wwn", "/dev/sdc")    // naa.5000c5003e8d2f91
	},
	"all-devices-of-group": func(t *testing.T, r *unitResult) {
		wantPaths(t, r, "all-devices-of-group", "devices", "/dev/sdb", "/dev/sdc")
		wantPaths(t, r, "bundle-of-group", "devices", "/dev/dm-0", "/dev/dm-1", "/dev/dm-2", "/dev/dm-3")
		if got := deviceNames(r.pods["bundle-of-group"].claims["devices"]); !slices.Equal(got, []string{"mpath-bundle"}) {
			t.Errorf("bundle-of-group got devices %v, want the one bundle device", got)
		}
	},
	"non-root-uid-gid": func(t *testing.T, r *unitResult) {
		for _, n := range planNodes(t, r, "non-root-uid-gid", "disk") {
			if ptr.Deref(n.UID, 0) != 1000 || ptr.Deref(n.GID, 0) != 3000 || ptr.Deref(n.FileMode, 0) != 0o660 || n.Permissions != "rw" {
				t.Errorf("%s: uid %v gid %v mode %#o permissions %s, want 1000 3000 0660 rw",
					n.HostPath, ptr.Deref(n.UID, 0), ptr.Deref(n.GID, 0), ptr.Deref(n.FileMode, 0), n.Permissions)
			}
		}
	},
	"read-only": func(t *testing.T, r *unitResult) {
		for _, n := range planNodes(t, r, "read-only", "disk") {
			if n.Permissions != "r" {
				t.Errorf("%s: permissions %q, want r", n.HostPath, n.Permissions)
			}
		}
	},
	"shared-device": func(t *testing.T, r *unitResult) {
		wantShared(t, r, "fuse", "/dev/fuse", "shared-fuse-a", "shared-fuse-b")
		// maxConsumers: 2. A third claim does not fit while the two hold it.
		tmpl := r.unit.template("fuse-shared")
		if _, err := r.node.allocate(r.node.newClaim("third", tmpl.Spec.Spec)); err == nil {
			t.Error("a third claim got /dev/fuse, beyond maxConsumers 2")
		}
	},
	"shared-device/nx-gzip": func(t *testing.T, r *unitResult) {
		wantShared(t, r, "nx-gzip", "/dev/crypto/nx-gzip", "shared-nx-gzip-a", "shared-nx-gzip-b")
	},
	"legacy-limit": func(t *testing.T, r *unitResult) {
		pr := r.pods["legacy-limit"]
		c := pr.claims["extended-resources"]
		if c == nil || len(pr.claims) != 1 {
			t.Fatalf("legacy-limit: claims %v, want only the scheduler's extended-resource claim", pr.claims)
		}
		if got := requestClasses(&c.Spec); !slices.Equal(got, []string{driver.DriverName}) {
			t.Errorf("the extended-resource claim uses classes %v, want [%s]", got, driver.DriverName)
		}
		plan := pr.plans["extended-resources"]
		if len(plan.Devices) != 1 || len(hostPaths(plan)) != 1 || plan.Devices[0].Group != "dev" {
			t.Errorf("power-dev-plugin/dev: 1 gave %v, want one device node of group dev", hostPaths(plan))
		}
	},
	"same-pcie-root": func(t *testing.T, r *unitResult) {
		// nvme0n1 comes first; only the constraint picks nvme1n1, on the
		// NIC's root complex.
		wantPaths(t, r, "same-pcie-root", "devices", "/dev/nvme1n1")
		c := r.pods["same-pcie-root"].claims["devices"]
		var nic []string
		for _, res := range c.Status.Allocation.Devices.Results {
			if res.Driver == foreignDriver {
				nic = append(nic, res.Device)
			}
		}
		if !slices.Equal(nic, []string{"nic-0"}) {
			t.Errorf("NICs %v, want [nic-0]", nic)
		}
		unconstrained := r.unit.template("same-pcie-root").Spec.Spec.DeepCopy()
		unconstrained.Devices.Constraints = nil
		fresh := newNode(t, r.node.inv, r.node.classes) // the first pod holds the only NIC
		got, err := fresh.allocate(fresh.newClaim("unconstrained", *unconstrained))
		if err != nil {
			t.Fatal(err)
		}
		plan, err := driver.PlanClaim(got[0], nodeName, r.node.inv)
		if err != nil {
			t.Fatal(err)
		}
		if p := hostPaths(plan); !slices.Equal(p, []string{"/dev/nvme0n1"}) {
			t.Errorf("without the constraint the claim got %v; want /dev/nvme0n1, so that the test shows the constraint at work", p)
		}
	},
	"db2-warehouse": func(t *testing.T, r *unitResult) {
		var mpaths []string
		for i := range 4 {
			mpaths = append(mpaths, fmt.Sprintf("/dev/dm-%d", i))
		}
		pods := sets.List(sets.KeySet(r.pods))
		if len(pods) != 3 {
			t.Fatalf("pods %v, want the Deployment's 3 replicas", pods)
		}
		wantShared(t, r, "mpath", "", pods...)
		for _, p := range pods {
			wantPaths(t, r, p, "mpath", mpaths...)
			// Db2 opens the LUNs by their multipath names.
			if got := containerPaths(r.pods[p].plans["mpath"]); !slices.Contains(got, "/dev/mapper/mpatha") {
				t.Errorf("pod %s: container paths %v lack /dev/mapper/mpatha", p, got)
			}
		}
		// No maxConsumers: scaling up keeps working.
		tmpl := r.unit.template("db2-mpath")
		for i := range 20 {
			if _, err := r.node.allocate(r.node.newClaim(fmt.Sprintf("db2wh-extra-%d", i), tmpl.Spec.Spec)); err != nil {
				t.Fatalf("replica %d: %v", 4+i, err)
			}
		}
	},
}

// wantPaths checks the host paths a pod's claim gives its containers.
func wantPaths(t *testing.T, r *unitResult, pod, claim string, want ...string) {
	t.Helper()
	pr, ok := r.pods[pod]
	if !ok {
		t.Fatalf("no pod %s", pod)
	}
	plan, ok := pr.plans[claim]
	if !ok {
		t.Fatalf("pod %s: no claim %s", pod, claim)
	}
	got := hostPaths(plan)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("pod %s claim %s: device nodes %v, want %v", pod, claim, got, want)
	}
}

// planNodes returns the device nodes of a pod's claim.
func planNodes(t *testing.T, r *unitResult, pod, claim string) []driver.PlannedNode {
	t.Helper()
	plan := r.pods[pod].plans[claim]
	if plan == nil || len(plan.Devices) == 0 {
		t.Fatalf("pod %s claim %s: no devices", pod, claim)
	}
	var out []driver.PlannedNode
	for _, d := range plan.Devices {
		out = append(out, d.Nodes...)
	}
	return out
}

// wantShared checks that each pod's claim got the same one device, each
// with a share of its own, and (when path is set) that the device is path.
func wantShared(t *testing.T, r *unitResult, claim, path string, pods ...string) {
	t.Helper()
	device := ""
	shares := sets.New[types.UID]()
	for _, p := range pods {
		pr := r.pods[p]
		if pr == nil || pr.claims[claim] == nil {
			t.Fatalf("pod %s has no claim %s", p, claim)
		}
		results := pr.claims[claim].Status.Allocation.Devices.Results
		if len(results) != 1 {
			t.Fatalf("pod %s claim %s: %d devices, want 1", p, claim, len(results))
		}
		res := results[0]
		if device == "" {
			device = res.Device
		} else if res.Device != device {
			t.Errorf("pod %s got device %s, the others %s: not shared", p, res.Device, device)
		}
		if res.ShareID == nil {
			t.Errorf("pod %s: device %s allocated without a share ID: not a shared allocation", p, res.Device)
		} else {
			shares.Insert(*res.ShareID)
		}
		if path != "" {
			if got := hostPaths(pr.plans[claim]); !slices.Equal(got, []string{path}) {
				t.Errorf("pod %s: device nodes %v, want [%s]", p, got, path)
			}
		}
	}
	if shares.Len() != len(pods) {
		t.Errorf("%d pods hold %d distinct shares of %s", len(pods), shares.Len(), device)
	}
}

// TestClaimsAllocate runs every unit: its DiscoveryConfig on the fixture
// node, the driver's ResourceSlices, the scheduler's allocator for each
// pod's claims (templates, claims, extended resources), the driver's plan
// for each allocated claim, then the unit's expectations.
func TestClaimsAllocate(t *testing.T) {
	classes := append(shippedClasses(t), foreignClasses()...)
	seen := sets.New[string]()
	for _, ex := range loadExamples(t) {
		inv := discoverOn(t, ex.config, layoutFor(ex.name))
		for _, u := range ex.units {
			seen.Insert(u.dir)
			t.Run(u.dir, func(t *testing.T) {
				if len(u.pods()) == 0 {
					t.Fatalf("examples/%s/ creates no pod", u.dir)
				}
				r := allocateUnit(t, u, inv, classes)
				check, ok := expectations[u.dir]
				if !ok {
					t.Fatalf("no expectations for examples/%s/: add them to the expectations map", u.dir)
				}
				check(t, r)
			})
		}
	}
	for dir := range expectations {
		if !seen.Has(dir) {
			t.Errorf("expectations for examples/%s/, which does not exist", dir)
		}
	}
}

// TestAllocationModeAllStopsAt32 shows what all-devices-of-group's README
// says: on a node whose "scratch" group has 40 disks, allocationMode All
// cannot be allocated (a claim holds at most 32 devices), while the bundle
// of 40 multipath devices is one device and allocates.
func TestAllocationModeAllStopsAt32(t *testing.T) {
	classes := shippedClasses(t)
	var ex *example
	for _, e := range loadExamples(t) {
		if e.name == "all-devices-of-group" {
			ex = e
		}
	}
	if ex == nil {
		t.Fatal("no example all-devices-of-group")
	}
	const disks = 40
	inv := discoverOn(t, ex.config, func(t *testing.T, tr *discoverytest.Tree) {
		tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: 100 * gib})
		tr.Mount("/dev/sda", nd(8, 0), "/", "xfs")
		for i := range disks {
			tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("loop%d", i), Dev: nd(7, uint32(i)), Size: gib})
		}
		addMultipath(tr, disks, 1)
	})
	if g := groupPaths(inv); len(g["scratch"]) != disks || len(g["mpath-bundle"]) != disks {
		t.Fatalf("fixture: scratch has %d nodes and mpath-bundle %d, want %d each", len(g["scratch"]), len(g["mpath-bundle"]), disks)
	}
	u := ex.units[0]
	n := newNode(t, inv, classes)
	all := n.newClaim("all", u.template("scratch-all").Spec.Spec)
	if got, err := n.allocate(all); err == nil {
		t.Errorf("allocationMode All over %d devices was allocated %d devices; a claim holds at most %d",
			disks, len(deviceNames(got[0])), resourceapi.AllocationResultsMaxSize)
	} else {
		t.Logf("as expected: %v", err)
	}
	got, err := n.allocate(n.newClaim("bundle", u.template("mpath-bundle").Spec.Spec))
	if err != nil {
		t.Fatalf("the bundle of %d nodes: %v", disks, err)
	}
	plan, err := driver.PlanClaim(got[0], nodeName, inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(hostPaths(plan)) != disks {
		t.Errorf("the bundle gives %d device nodes, want %d", len(hostPaths(plan)), disks)
	}
}

// TestReadmes checks the documentation: every example folder has a
// README.md with the command that runs it and the one that cleans up, a
// variant's commands are in its example's README, the DiscoveryConfig the
// README shows is the one in node-config/, and examples/README.md links
// every example.
func TestReadmes(t *testing.T) {
	index, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatalf("examples/README.md: %v", err)
	}
	for _, ex := range loadExamples(t) {
		readme, err := os.ReadFile(filepath.Join(ex.name, "README.md"))
		if err != nil {
			t.Errorf("example %s: %v", ex.name, err)
			continue
		}
		for _, u := range ex.units {
			for _, cmd := range []string{"kubectl apply -f examples/" + u.dir + "/", "kubectl delete -f examples/" + u.dir + "/"} {
				if !bytes.Contains(readme, []byte(cmd)) {
					t.Errorf("%s/README.md does not show `%s`", ex.name, cmd)
				}
			}
		}
		if !bytes.Contains(readme, []byte(nodeConfigFile)) {
			t.Errorf("%s/README.md does not mention %s", ex.name, nodeConfigFile)
		}
		if !readmeShowsConfig(t, readme, ex.config) {
			t.Errorf("%s/README.md shows no DiscoveryConfig equal to %s/%s", ex.name, ex.name, nodeConfigFile)
		}
		if !bytes.Contains(index, []byte("("+ex.name+"/)")) {
			t.Errorf("examples/README.md does not link %s/", ex.name)
		}
	}
}

// readmeShowsConfig reports whether one of the README's yaml code blocks is
// a DiscoveryConfig equal to cfg.
func readmeShowsConfig(t *testing.T, readme []byte, cfg *v1alpha1.DiscoveryConfig) bool {
	t.Helper()
	for _, block := range codeBlocks(string(readme), "yaml") {
		if !strings.Contains(block, "kind: DiscoveryConfig") {
			continue
		}
		got, _, err := v1alpha1.DecodeDiscoveryConfig([]byte(block))
		if err != nil {
			t.Errorf("a DiscoveryConfig in a README does not decode: %v", err)
			continue
		}
		if cfg != nil && equalJSON(t, got, cfg) {
			return true
		}
	}
	return false
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// codeBlocks returns the fenced code blocks of a Markdown text in language
// lang.
func codeBlocks(md, lang string) []string {
	var out []string
	var cur *strings.Builder
	for _, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}
