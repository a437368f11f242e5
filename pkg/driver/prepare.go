package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// This file turns an allocated ResourceClaim into a ClaimPlan: which host
// device nodes the claim's containers get, where, and with which cgroup
// permissions and ownership. It does no I/O and is deterministic: the same
// claim and inventory always give the same plan.

// ClaimPlan is everything one claim needs on this node.
type ClaimPlan struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
	// Allocation fingerprints the parts of the claim's allocation the plan
	// was computed from (this driver's results on this node and this
	// driver's configs). Prepare uses it to tell a repeated call from a
	// claim that was allocated anew under the same UID.
	Allocation string `json:"allocation"`
	// Devices are in the order of the allocation results.
	Devices []PlannedDevice `json:"devices"`
}

// PlannedDevice is one allocated DRA device: a single node, or a bundle
// standing for all nodes of its group.
type PlannedDevice struct {
	// Request is the request (or "request/subrequest") the device was
	// allocated for.
	Request string `json:"request"`
	Pool    string `json:"pool"`
	// Device is the published DRA device name.
	Device      string     `json:"device"`
	ShareID     *types.UID `json:"shareID,omitempty"`
	AdminAccess bool       `json:"adminAccess,omitempty"`
	// Group is the discovery group the device belongs to.
	Group string `json:"group"`
	// Exclusive is true when the group does not allow sharing.
	Exclusive bool `json:"exclusive,omitempty"`
	// Nodes are the device nodes the device carries, sorted by host path.
	Nodes []PlannedNode `json:"nodes"`
}

// PlannedNode is one device node as the container sees it.
type PlannedNode struct {
	// ContainerPath is where the node appears in the container.
	ContainerPath string `json:"containerPath"`
	// HostPath is the node on the host.
	HostPath string `json:"hostPath"`
	// Type is "b" (block) or "c" (char).
	Type  string `json:"type"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	// Identity is the device's discovery.Device.Identity when the claim
	// got it: HostPath, Major and Minor are where that device is now, and
	// follow it when it moves (restore.go). Empty in checkpoints of v1.
	Identity string `json:"identity,omitempty"`
	// Permissions is the device cgroup access: a combination of r, w, m.
	Permissions string `json:"permissions"`
	// UID, GID and FileMode are left unset unless configured: the runtime
	// then gives the node to the container's own user, with the host
	// node's mode.
	UID      *uint32 `json:"uid,omitempty"`
	GID      *uint32 `json:"gid,omitempty"`
	FileMode *uint32 `json:"fileMode,omitempty"`
}

// nodeKey identifies a device node by what the device cgroup sees.
func (n *PlannedNode) nodeKey() string {
	return fmt.Sprintf("%s %d:%d", n.Type, n.Major, n.Minor)
}

// describe names the node in error messages: "/dev/loop0 (b 7:0)".
func (n *PlannedNode) describe() string {
	return fmt.Sprintf("%s (%s)", n.HostPath, n.nodeKey())
}

// PlanClaim computes the plan for this driver's devices of claim that were
// allocated on nodeName (the pool name), resolving device names through inv.
// All problems of the claim are returned together, each naming the claim.
func PlanClaim(claim *resourceapi.ResourceClaim, nodeName string, inv *discovery.Inventory) (*ClaimPlan, error) {
	return planClaim(claim, nodeName, newInventoryIndex(inv))
}

// inventoryIndex maps published device names to what they stand for.
type inventoryIndex struct {
	inv    *discovery.Inventory
	byName map[string]indexEntry
	// overlaps maps a block node's key to the keys of the published nodes
	// that share its blocks: a disk and its partitions, a device-mapper
	// device and what it is built on.
	overlaps map[string][]overlap
	// seenIdx is built by seen (identity.go) when first needed.
	seenIdx *seenIndex
}

// overlap is a published node that shares blocks with another.
type overlap struct {
	key  string
	path string
}

type indexEntry struct {
	group *discovery.Group
	// dev is nil for a bundle: the entry stands for every node of group.
	dev *discovery.Device
}

func newInventoryIndex(inv *discovery.Inventory) *inventoryIndex {
	idx := &inventoryIndex{inv: inv, byName: map[string]indexEntry{}, overlaps: map[string][]overlap{}}
	if inv == nil {
		return idx
	}
	idx.indexOverlaps(inv)
	for gi := range inv.Groups {
		g := &inv.Groups[gi]
		if g.Bundle {
			// A bundle without nodes is not published (BuildResources);
			// a claim that still names it finds it gone.
			if _, dup := idx.byName[g.BundleName]; !dup && g.BundleName != "" && len(g.Devices) > 0 {
				idx.byName[g.BundleName] = indexEntry{group: g}
			}
			continue
		}
		for di := range g.Devices {
			d := &g.Devices[di]
			if _, dup := idx.byName[d.Name]; !dup {
				idx.byName[d.Name] = indexEntry{group: g, dev: d}
			}
		}
	}
	return idx
}

// indexOverlaps records, for every published block device, the published
// devices that share blocks with it (discovery.Overlaps, the rule slices
// use for their counters).
func (idx *inventoryIndex) indexOverlaps(inv *discovery.Inventory) {
	o := discovery.FindOverlaps(inv)
	key := func(d *discovery.Device) string {
		return fmt.Sprintf("%s %d:%d", cdiType(d.Type), d.Major, d.Minor)
	}
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			d := &inv.Groups[gi].Devices[di]
			for _, x := range o.Of(d) {
				idx.overlaps[key(d)] = append(idx.overlaps[key(d)], overlap{key: key(x), path: x.Path})
			}
		}
	}
}

// planError collects a claim's problems into one error.
type planError struct {
	claim string
	errs  []string
}

func (p *planError) add(format string, args ...any) {
	p.errs = append(p.errs, fmt.Sprintf(format, args...))
}

func (p *planError) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = errors.New(e)
	}
	return errors.Join(errs...)
}

func claimRef(claim *resourceapi.ResourceClaim) string {
	return claim.Namespace + "/" + claim.Name
}

func planClaim(claim *resourceapi.ResourceClaim, nodeName string, idx *inventoryIndex) (*ClaimPlan, error) {
	if claim == nil {
		return nil, errors.New("nil ResourceClaim")
	}
	ref := claimRef(claim)
	if claim.Status.Allocation == nil {
		return nil, fmt.Errorf("claim %s is not allocated", ref)
	}
	alloc := &claim.Status.Allocation.Devices
	perr := &planError{claim: ref}

	// This driver's results on this node, in allocation order.
	var results []*resourceapi.DeviceRequestAllocationResult
	for i := range alloc.Results {
		r := &alloc.Results[i]
		if r.Driver == DriverName && r.Pool == nodeName {
			results = append(results, r)
		}
	}

	// This driver's configs: class entries before claim entries, each in
	// the order given, so that merging lets the later entry win.
	var classCfgs, claimCfgs []*ourConfig
	for i := range alloc.Config {
		c := &alloc.Config[i]
		if c.Opaque == nil || c.Opaque.Driver != DriverName {
			continue
		}
		oc := &ourConfig{index: i, fromClass: c.Source == resourceapi.AllocationConfigSourceClass, requests: c.Requests, raw: c.Opaque.Parameters.Raw}
		switch c.Source {
		case resourceapi.AllocationConfigSourceClass:
			classCfgs = append(classCfgs, oc)
		case resourceapi.AllocationConfigSourceClaim:
			claimCfgs = append(claimCfgs, oc)
		default:
			perr.add("claim %s: %s", ref, oc.fieldError(field.NotSupported(field.NewPath("source"), c.Source,
				[]resourceapi.AllocationConfigSource{resourceapi.AllocationConfigSourceClass, resourceapi.AllocationConfigSourceClaim})))
		}
	}
	configs := append(classCfgs, claimCfgs...)

	// The effective config of each request.
	type requestConfig struct {
		cfg *v1alpha1.DeviceConfig
		// pathFrom is the entry that set ContainerPath.
		pathFrom *ourConfig
		// entries are the valid entries that apply, class ones first.
		entries []*ourConfig
	}
	reqCfgs := map[string]*requestConfig{}
	for _, r := range results {
		if _, done := reqCfgs[r.Request]; done {
			continue
		}
		var apply []*v1alpha1.DeviceConfig
		rc := &requestConfig{}
		for _, c := range configs {
			if !c.appliesTo(r.Request) {
				continue
			}
			c.decode()
			if len(c.errs) > 0 {
				if !c.blamed {
					c.blamed = true
					for _, e := range c.errs {
						perr.add("claim %s: request %q: %s", ref, r.Request, e)
					}
				}
				continue
			}
			apply = append(apply, c.cfg)
			rc.entries = append(rc.entries, c)
			if c.cfg.ContainerPath != "" {
				rc.pathFrom = c
			}
		}
		if len(apply) > 0 {
			rc.cfg = v1alpha1.MergeDeviceConfigs(apply...)
		}
		reqCfgs[r.Request] = rc
	}

	plan := &ClaimPlan{Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID, Devices: []PlannedDevice{}}
	permProblems := map[string]bool{} // reported once per claim
	nodesPerRequest := map[string]int{}
	bundlesPerRequest := map[string][]string{}
	for _, r := range results {
		entry, ok := idx.byName[r.Device]
		if !ok {
			perr.add("device %q allocated to claim %s is no longer on this node", r.Device, ref)
			continue
		}
		g := entry.group
		pd := PlannedDevice{
			Request:     r.Request,
			Pool:        r.Pool,
			Device:      r.Device,
			ShareID:     r.ShareID,
			AdminAccess: r.AdminAccess != nil && *r.AdminAccess,
			Group:       g.Name,
			Exclusive:   g.Sharing.Mode != v1alpha1.SharingShared,
		}
		devs := g.Devices
		if entry.dev != nil {
			devs = []discovery.Device{*entry.dev}
		} else {
			bundlesPerRequest[r.Request] = append(bundlesPerRequest[r.Request],
				fmt.Sprintf("bundle %q of group %q has %d", r.Device, g.Name, len(g.Devices)))
		}
		cfg := reqCfgs[r.Request].cfg
		perms, problems := permissionsFor(reqCfgs[r.Request].entries, g)
		for _, p := range problems {
			if msg := fmt.Sprintf("claim %s: request %q: %s", ref, r.Request, p); !permProblems[msg] {
				permProblems[msg] = true
				perr.add("%s", msg)
			}
		}
		pd.Nodes = make([]PlannedNode, 0, len(devs))
		for di := range devs {
			n := planNode(&devs[di], perms, cfg)
			pd.Nodes = append(pd.Nodes, n)
			// A device-mapper device also appears under its
			// /dev/mapper name, which is how LVM, multipath and Db2
			// name it, unless the claim put the node elsewhere.
			if cfg == nil || cfg.ContainerPath == "" {
				for _, alias := range devs[di].Aliases {
					if strings.HasPrefix(alias, "/dev/mapper/") && alias != devs[di].Path {
						an := n
						an.ContainerPath = alias
						pd.Nodes = append(pd.Nodes, an)
					}
				}
			}
		}
		nodesPerRequest[r.Request] += len(devs)
		plan.Devices = append(plan.Devices, pd)
	}

	// A container path names one node: the request must resolve to one.
	seenReq := map[string]bool{}
	badPath := map[string]bool{}
	for _, r := range results {
		if seenReq[r.Request] {
			continue
		}
		seenReq[r.Request] = true
		rc := reqCfgs[r.Request]
		if rc.pathFrom == nil || rc.cfg == nil || rc.cfg.ContainerPath == "" {
			continue
		}
		if n := nodesPerRequest[r.Request]; n != 1 {
			detail := fmt.Sprintf("only valid when the request resolves to exactly one device node, but it resolves to %d", n)
			if b := bundlesPerRequest[r.Request]; len(b) > 0 {
				detail += " (" + strings.Join(b, ", ") + ")"
			}
			perr.add("claim %s: request %q: %s", ref, r.Request,
				rc.pathFrom.fieldError(field.Invalid(field.NewPath("containerPath"), rc.cfg.ContainerPath, detail)))
			badPath[r.Request] = true
		}
	}

	// Two different nodes, or one node with different settings, must not
	// land on the same container path: the runtime would keep only one.
	// (Requests whose container path is already refused are left out.)
	type placed struct {
		request string
		node    *PlannedNode
	}
	byPath := map[string]placed{}
	for di := range plan.Devices {
		d := &plan.Devices[di]
		if badPath[d.Request] {
			continue
		}
		for ni := range d.Nodes {
			n := &d.Nodes[ni]
			prev, ok := byPath[n.ContainerPath]
			if !ok {
				byPath[n.ContainerPath] = placed{request: d.Request, node: n}
				continue
			}
			if prev.node.nodeKey() != n.nodeKey() {
				perr.add("claim %s: container path %s: request %q puts device node %s there and request %q puts %s there",
					ref, n.ContainerPath, prev.request, prev.node.describe(), d.Request, n.describe())
			} else if !sameSettings(prev.node, n) {
				perr.add("claim %s: container path %s: requests %q and %q give device node %s different permissions, owner or mode (%s vs %s)",
					ref, n.ContainerPath, prev.request, d.Request, n.describe(), settings(prev.node), settings(n))
			}
		}
	}

	if err := perr.err(); err != nil {
		return nil, err
	}
	plan.Allocation = allocationFingerprint(claim, nodeName)
	return plan, nil
}

func planNode(d *discovery.Device, perms v1alpha1.Permissions, cfg *v1alpha1.DeviceConfig) PlannedNode {
	n := PlannedNode{
		ContainerPath: d.Path,
		HostPath:      d.Path,
		Type:          cdiType(d.Type),
		Major:         d.Major,
		Minor:         d.Minor,
		Identity:      d.Identity,
		Permissions:   string(perms),
	}
	if cfg == nil {
		return n
	}
	if cfg.ContainerPath != "" {
		n.ContainerPath = cfg.ContainerPath
	}
	if cfg.UID != nil {
		v := uint32(*cfg.UID)
		n.UID = &v
	}
	if cfg.GID != nil {
		v := uint32(*cfg.GID)
		n.GID = &v
	}
	if cfg.FileMode != nil {
		v := *cfg.FileMode
		n.FileMode = &v
	}
	return n
}

func cdiType(t v1alpha1.DeviceType) string {
	if t == v1alpha1.DeviceTypeBlock {
		return "b"
	}
	return "c"
}

func sameSettings(a, b *PlannedNode) bool {
	return settings(a) == settings(b)
}

func settings(n *PlannedNode) string {
	s := "permissions " + n.Permissions
	if n.UID != nil {
		s += fmt.Sprintf(" uid %d", *n.UID)
	}
	if n.GID != nil {
		s += fmt.Sprintf(" gid %d", *n.GID)
	}
	if n.FileMode != nil {
		s += fmt.Sprintf(" mode %#o", *n.FileMode)
	}
	return s
}

// allocationFingerprint hashes what a plan depends on in the claim: this
// driver's results on this node and this driver's config entries.
func allocationFingerprint(claim *resourceapi.ResourceClaim, nodeName string) string {
	type res struct {
		Request, Pool, Device string
		ShareID               *types.UID
		AdminAccess           bool
	}
	type cfg struct {
		Index    int
		Source   string
		Requests []string
		Raw      []byte
	}
	var fp struct {
		Results []res
		Configs []cfg
	}
	if claim.Status.Allocation != nil {
		alloc := &claim.Status.Allocation.Devices
		for _, r := range alloc.Results {
			if r.Driver == DriverName && r.Pool == nodeName {
				fp.Results = append(fp.Results, res{r.Request, r.Pool, r.Device, r.ShareID, r.AdminAccess != nil && *r.AdminAccess})
			}
		}
		for i, c := range alloc.Config {
			if c.Opaque != nil && c.Opaque.Driver == DriverName {
				fp.Configs = append(fp.Configs, cfg{i, string(c.Source), c.Requests, c.Opaque.Parameters.Raw})
			}
		}
	}
	b, _ := json.Marshal(fp) // cannot fail: plain data
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
