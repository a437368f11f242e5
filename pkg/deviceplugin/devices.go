package deviceplugin

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// ResourceDomain is the domain of every resource this plugin serves:
// power-dev-plugin/<group>. With the default group "dev" it is the old
// plugin's power-dev-plugin/dev.
const ResourceDomain = "power-dev-plugin"

// ResourceName is the extended resource a group is served as.
func ResourceName(group string) string { return ResourceDomain + "/" + group }

const (
	// DefaultSharedIDs is how many IDs a shared device advertises when its
	// group sets no maxConsumers and is not a bundle. A node cannot run more
	// pods than its maxPods (110 by default, at most a few hundred), so this
	// is unbounded in practice; set maxConsumers for another count.
	DefaultSharedIDs = 256

	// MaxIDsPerResource bounds the IDs of one resource. The kubelet reads a
	// ListAndWatch response with gRPC's default 4 MiB message limit; 16384
	// IDs of the longest names stay well below it. When maxConsumers times
	// the devices of a group would exceed it, every device advertises
	// MaxIDsPerResource / devices IDs (at least one) and a warning is logged.
	MaxIDsPerResource = 16384

	// ShareSeparator joins a shared device's name and the number of one of
	// its IDs: sdb_0, sdb_1, ... Device names are DNS labels and never
	// contain it, so a share ID never equals a device name.
	ShareSeparator = "_"
)

// Node is one device node that an ID grants.
type Node struct {
	// Path is the node's host path as the kernel names it now; the
	// container gets the node at this path.
	Path string
	// HostPath is what the runtime opens: a /dev/disk/by-id link when the
	// device has one (discovery.Device.StableHostPath), else Path. The
	// kubelet reuses an allocation's DeviceSpecs after a reboot without
	// asking the plugin, and a kernel name may then be another device.
	HostPath string
	// MapperPaths are the device-mapper names of the node
	// (/dev/mapper/<name>): the container gets the node there too, which is
	// how LVM, multipath and Db2 name it (as in DRA mode).
	MapperPaths []string
	// Type is "b" (block) or "c" (char).
	Type         string
	Major, Minor uint32
	// InUseAllowed: listed in allowInUse, so Allocate does not check that
	// nothing holds it.
	InUseAllowed bool
}

// Unit is one device ID the kubelet sees: it allocates and counts units.
type Unit struct {
	// ID is the device ID: the discovery name of the device (or of the
	// bundle), or for shared devices <name>_<k>.
	ID string
	// Device is the discovery name of the device or bundle behind the ID.
	Device string
	// CDIDevice is the name of the unit's CDI device: Device, qualified
	// by the identity of its node when it has a stable host path (see
	// cdiDeviceName).
	CDIDevice string
	// Nodes are the device nodes an allocation of the ID grants: one, or
	// every node of a bundle.
	Nodes []Node
	// NUMANodes are the NUMA nodes of the device's hardware, when sysfs
	// knows them; empty otherwise.
	NUMANodes []int64
	// Parent groups related devices for GetPreferredAllocation: the disk
	// of a partition (and the disk itself), the devices a device-mapper or
	// md device is built on. Empty when the device has none.
	Parent string
}

// DeviceSet is what one group's device plugin serves: the units the
// kubelet may allocate, in a stable order.
type DeviceSet struct {
	Group       string
	Resource    string
	Permissions string
	// Bundle and Shared describe how the units were made.
	Bundle bool
	Shared bool
	// PerDevice is the number of IDs each device (or the bundle) got.
	PerDevice int
	// Capped is set when PerDevice was lowered to stay within
	// MaxIDsPerResource.
	Capped bool
	// Units are ordered by device name, then share number.
	Units []Unit
	// HeldBack are the group's devices that are not offered because
	// devices of other units are built on them (see BuildDeviceSets),
	// with the reason. Sorted by path.
	HeldBack []discovery.Exclusion

	byID map[string]int
	list *v1beta1.ListAndWatchResponse
	// single caches the answer to a one-ID request per device and CDI
	// name: the common request (limits: {power-dev-plugin/dev: 1}), and
	// for a bundle thousands of DeviceSpecs built once.
	single sync.Map // singleKey -> *v1beta1.ContainerAllocateResponse
}

type singleKey struct{ device, cdi string }

// NUMAFunc returns the NUMA nodes of a device, or nothing when unknown.
type NUMAFunc func(d *discovery.Device) []int64

// BuildDeviceSets turns an inventory into one DeviceSet per group, in
// configuration order. numa may be nil (no topology). The rules:
//
//   - exclusive group, one unit per device node, ID = the device's name;
//   - bundle group: the group's devices together are one device named
//     Group.BundleName; an empty bundle has no units;
//   - shared group: each device (or the bundle) advertises several IDs,
//     <name>_0 ... <name>_<n-1>, where n is maxConsumers; without
//     maxConsumers, n is the number of nodes for a bundle (the old plugin's
//     capacity: one unit per matched device) and DefaultSharedIDs else;
//   - devices that share blocks are never offered as two IDs, in any
//     group: the kubelet counts IDs and nothing else, so only the top of a
//     stack is offered (partitions rather than their disk, a multipath map
//     rather than its paths; discovery.Overlaps.HeldBack). Within one
//     bundle overlaps go to the same pod and are kept.
func BuildDeviceSets(inv *discovery.Inventory, numa NUMAFunc) []*DeviceSet {
	if inv == nil {
		return nil
	}
	held := map[*discovery.Device]string{}
	for _, h := range discovery.FindOverlaps(inv).HeldBack() {
		held[h.Device] = heldBackReason(h)
	}
	sets := make([]*DeviceSet, 0, len(inv.Groups))
	for gi := range inv.Groups {
		sets = append(sets, buildDeviceSet(&inv.Groups[gi], numa, held))
	}
	return sets
}

// EmptyDeviceSet is the set of a group without devices.
func EmptyDeviceSet(group string) *DeviceSet {
	s := &DeviceSet{Group: group, Resource: ResourceName(group), Permissions: string(v1alpha1.DefaultPermissions), PerDevice: 1}
	s.index()
	return s
}

type baseDevice struct {
	name   string
	cdi    string
	nodes  []Node
	numa   []int64
	parent string
}

func buildDeviceSet(g *discovery.Group, numa NUMAFunc, held map[*discovery.Device]string) *DeviceSet {
	s := &DeviceSet{
		Group:       g.Name,
		Resource:    ResourceName(g.Name),
		Permissions: string(g.Permissions),
		Bundle:      g.Bundle,
		Shared:      g.Sharing.Mode == v1alpha1.SharingShared,
	}
	if s.Permissions == "" {
		s.Permissions = string(v1alpha1.DefaultPermissions)
	}
	var bases []baseDevice
	served := make([]*discovery.Device, 0, len(g.Devices))
	for di := range g.Devices {
		d := &g.Devices[di]
		if r, ok := held[d]; ok {
			s.HeldBack = append(s.HeldBack, discovery.Exclusion{Path: d.Path, Reason: r})
			continue
		}
		served = append(served, d)
	}
	if g.Bundle {
		if len(served) > 0 {
			b := baseDevice{name: g.BundleName, cdi: g.BundleName}
			var numas [][]int64
			parents := map[string]bool{}
			for _, d := range served {
				b.nodes = append(b.nodes, nodeOf(d))
				if numa != nil {
					numas = append(numas, numa(d))
				}
				parents[parentOf(d)] = true
			}
			b.numa = discovery.UnionNUMA(numas...)
			if len(parents) == 1 {
				for p := range parents {
					b.parent = p
				}
			}
			bases = append(bases, b)
		}
	} else {
		for _, d := range served {
			n := nodeOf(d)
			b := baseDevice{name: d.Name, cdi: cdiDeviceName(d.Name, n), nodes: []Node{n}, parent: parentOf(d)}
			if numa != nil {
				b.numa = discovery.UnionNUMA(numa(d))
			}
			bases = append(bases, b)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i].name < bases[j].name })

	s.PerDevice = 1
	if s.Shared {
		switch {
		case g.Sharing.MaxConsumers != nil:
			s.PerDevice = int(*g.Sharing.MaxConsumers)
		case g.Bundle:
			s.PerDevice = len(served)
		default:
			s.PerDevice = DefaultSharedIDs
		}
		s.PerDevice = max(s.PerDevice, 1)
		if n := len(bases); n > 0 && s.PerDevice > MaxIDsPerResource/n {
			s.PerDevice = max(MaxIDsPerResource/n, 1)
			s.Capped = true
		}
	}
	s.Units = make([]Unit, 0, len(bases)*s.PerDevice)
	for _, b := range bases {
		for k := 0; k < s.PerDevice; k++ {
			id := b.name
			if s.Shared {
				id = ShareID(b.name, k)
			}
			s.Units = append(s.Units, Unit{ID: id, Device: b.name, CDIDevice: b.cdi, Nodes: b.nodes, NUMANodes: b.numa, Parent: b.parent})
		}
	}
	s.index()
	return s
}

// ShareID is the k-th ID of a shared device.
func ShareID(device string, k int) string { return device + ShareSeparator + strconv.Itoa(k) }

func (s *DeviceSet) index() {
	s.byID = make(map[string]int, len(s.Units))
	resp := &v1beta1.ListAndWatchResponse{Devices: make([]*v1beta1.Device, 0, len(s.Units))}
	for i := range s.Units {
		u := &s.Units[i]
		s.byID[u.ID] = i
		d := &v1beta1.Device{ID: u.ID, Health: v1beta1.Healthy}
		if len(u.NUMANodes) > 0 {
			d.Topology = &v1beta1.TopologyInfo{}
			for _, n := range u.NUMANodes {
				d.Topology.Nodes = append(d.Topology.Nodes, &v1beta1.NUMANode{ID: n})
			}
		}
		resp.Devices = append(resp.Devices, d)
	}
	s.list = resp
}

// Unit returns the unit with the given ID.
func (s *DeviceSet) Unit(id string) (*Unit, bool) {
	i, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return &s.Units[i], true
}

// IDs lists the set's device IDs in order.
func (s *DeviceSet) IDs() []string {
	ids := make([]string, len(s.Units))
	for i := range s.Units {
		ids[i] = s.Units[i].ID
	}
	return ids
}

// Devices lists the distinct devices (or bundle) behind the units, sorted.
func (s *DeviceSet) Devices() []string {
	var out []string
	for i := range s.Units {
		if n := len(out); n == 0 || out[n-1] != s.Units[i].Device {
			out = append(out, s.Units[i].Device)
		}
	}
	return out
}

// ListAndWatchResponse is the message the kubelet gets for this set. It is
// built once and shared: do not modify it.
func (s *DeviceSet) ListAndWatchResponse() *v1beta1.ListAndWatchResponse { return s.list }

// ContainerResponse is the answer to one container's allocation request:
// a DeviceSpec for every node the IDs grant (container path = the node's
// kernel path, host path = its stable host path, the group's permissions;
// device-mapper nodes also at /dev/mapper/<name>), each node once, and,
// when cdiDevice is not nil, the CDI device of every distinct device for
// which it returns a name (it is called with Unit.CDIDevice). An unknown
// ID is an error that names it and the resource. The answer may be shared:
// do not modify it.
func (s *DeviceSet) ContainerResponse(ids []string, cdiDevice func(device string) string) (*v1beta1.ContainerAllocateResponse, error) {
	if len(ids) == 1 {
		if u, ok := s.Unit(ids[0]); ok {
			key := singleKey{device: u.Device}
			if cdiDevice != nil {
				key.cdi = cdiDevice(u.CDIDevice)
			}
			if r, ok := s.single.Load(key); ok {
				return r.(*v1beta1.ContainerAllocateResponse), nil
			}
			r, err := s.containerResponse(ids, func(string) string { return key.cdi })
			if err == nil {
				s.single.Store(key, r)
			}
			return r, err
		}
	}
	return s.containerResponse(ids, cdiDevice)
}

func (s *DeviceSet) containerResponse(ids []string, cdiDevice func(device string) string) (*v1beta1.ContainerAllocateResponse, error) {
	resp := &v1beta1.ContainerAllocateResponse{}
	seenPath := map[string]bool{}
	seenDev := map[string]bool{}
	var unknown []string
	for _, id := range ids {
		u, ok := s.Unit(id)
		if !ok {
			unknown = append(unknown, strconv.Quote(id))
			continue
		}
		for _, n := range u.Nodes {
			for _, cp := range n.containerPaths() {
				if seenPath[cp] {
					continue
				}
				seenPath[cp] = true
				resp.Devices = append(resp.Devices, &v1beta1.DeviceSpec{
					ContainerPath: cp,
					HostPath:      n.HostPath,
					Permissions:   s.Permissions,
				})
			}
		}
		if cdiDevice != nil && !seenDev[u.CDIDevice] {
			seenDev[u.CDIDevice] = true
			if name := cdiDevice(u.CDIDevice); name != "" {
				resp.CdiDevices = append(resp.CdiDevices, &v1beta1.CDIDevice{Name: name})
			}
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%s: unknown device ID(s) %s: not advertised by this node's plugin (gone from the node, or the configuration changed)",
			s.Resource, strings.Join(unknown, ", "))
	}
	return resp, nil
}

func nodeOf(d *discovery.Device) Node {
	t := "c"
	if d.Type == v1alpha1.DeviceTypeBlock {
		t = "b"
	}
	n := Node{Path: d.Path, HostPath: d.StableHostPath(), Type: t, Major: d.Major, Minor: d.Minor, InUseAllowed: d.InUseAllowed}
	for _, a := range d.Aliases {
		if strings.HasPrefix(a, "/dev/mapper/") && a != d.Path {
			n.MapperPaths = append(n.MapperPaths, a)
		}
	}
	return n
}

// containerPaths are where the container gets the node: its host path, and
// its /dev/mapper names.
func (n *Node) containerPaths() []string {
	return append([]string{n.Path}, n.MapperPaths...)
}

// parentOf is the locality key of a device: what a partition shares with
// its disk and siblings, and stacked devices with those built on the same
// devices.
func parentOf(d *discovery.Device) string {
	b := d.Block
	switch {
	case b == nil:
		return ""
	case b.Parent != "":
		return b.Parent
	case len(b.Slaves) > 0:
		s := append([]string(nil), b.Slaves...)
		sort.Strings(s)
		return strings.Join(s, ",")
	case b.Kind == discovery.KindDisk:
		return b.KernelName
	}
	return ""
}
