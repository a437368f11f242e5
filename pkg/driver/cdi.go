package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
)

// CDI naming. Every prepared claim gets one transient spec file of kind
// power-dev-plugin.io/claim, named after the claim UID:
//
//	<cdi dir>/power-dev-plugin.io-claim_<claim UID>.json
//
// and one CDI device per allocated DRA device, named
//
//	<claim UID>_<device>            (or <claim UID>_<device>_<share ID>)
//
// so a CDI device name is never reused by another claim, and the claim and
// DRA device can be read back from a spec file alone (see
// recoverFromSpecs). Claim UIDs, share IDs and DRA device names (DNS
// labels) never contain "_".
const (
	CDIVendor = DriverName
	CDIClass  = "claim"
	CDIKind   = CDIVendor + "/" + CDIClass

	cdiSpecExt = ".json"
)

// cdiSpecPrefix starts the file name of every spec this driver writes.
var cdiSpecPrefix = cdi.GenerateTransientSpecName(CDIVendor, CDIClass, "")

// CDISpecName is the spec file name (with extension) of a claim.
func CDISpecName(claimUID types.UID) string {
	return cdi.GenerateTransientSpecName(CDIVendor, CDIClass, string(claimUID)) + cdiSpecExt
}

// CDIDeviceName is the CDI device name of a DRA device in a claim.
func CDIDeviceName(claimUID types.UID, device string, shareID *types.UID) string {
	name := string(claimUID) + "_" + device
	if shareID != nil && *shareID != "" {
		name += "_" + string(*shareID)
	}
	return name
}

// CDIDeviceID is the fully qualified CDI device ID the runtime resolves.
func CDIDeviceID(name string) string {
	return parser.QualifiedName(CDIVendor, CDIClass, name)
}

// claimUIDFromSpecName returns the claim UID of one of this driver's spec
// file names, or false when the name is not one of them.
func claimUIDFromSpecName(name string) (types.UID, bool) {
	ext := filepath.Ext(name)
	if ext != ".json" && ext != ".yaml" {
		return "", false
	}
	rest, ok := strings.CutPrefix(strings.TrimSuffix(name, ext), cdiSpecPrefix)
	if !ok || rest == "" || strings.ContainsAny(rest, "_/") {
		return "", false
	}
	return types.UID(rest), true
}

// PreparedClaim is a claim as prepared on this node: the plan plus the CDI
// names given to it. It is what the checkpoint stores.
type PreparedClaim struct {
	Namespace  string    `json:"namespace"`
	Name       string    `json:"name"`
	UID        types.UID `json:"uid"`
	Allocation string    `json:"allocation,omitempty"`
	// SpecName is the CDI spec file name; empty when no device of the
	// claim is on this node.
	SpecName string `json:"specName,omitempty"`
	// Recovered marks an entry rebuilt from its CDI spec file after the
	// checkpoint was lost: requests, groups and the allocation
	// fingerprint are unknown.
	Recovered bool `json:"recovered,omitempty"`
	// BootID is the boot in which the nodes' numbers were last found to
	// belong to their identities (prepared, or checked again); empty when
	// unknown. Numbers of another boot mean nothing until checked again.
	BootID  string           `json:"bootID,omitempty"`
	Devices []PreparedDevice `json:"devices"`
}

// PreparedDevice is a PlannedDevice with its CDI device ID.
type PreparedDevice struct {
	PlannedDevice
	CDIDeviceID string `json:"cdiDeviceID"`
}

// NewPreparedClaim names the CDI spec and devices of a plan.
func NewPreparedClaim(plan *ClaimPlan) *PreparedClaim {
	pc := &PreparedClaim{
		Namespace:  plan.Namespace,
		Name:       plan.Name,
		UID:        plan.UID,
		Allocation: plan.Allocation,
		Devices:    make([]PreparedDevice, 0, len(plan.Devices)),
	}
	used := map[string]bool{}
	for i, d := range plan.Devices {
		name := CDIDeviceName(plan.UID, d.Device, d.ShareID)
		if used[name] {
			// The same device twice in one claim without share IDs;
			// not expected from the allocator, but keep names unique.
			name = fmt.Sprintf("%s_%d", name, i)
		}
		used[name] = true
		pc.Devices = append(pc.Devices, PreparedDevice{PlannedDevice: d, CDIDeviceID: CDIDeviceID(name)})
	}
	if len(pc.Devices) > 0 {
		pc.SpecName = CDISpecName(plan.UID)
	}
	return pc
}

// PrepareResult is the answer for the kubelet.
func (pc *PreparedClaim) PrepareResult() kubeletplugin.PrepareResult {
	res := kubeletplugin.PrepareResult{Devices: make([]kubeletplugin.Device, 0, len(pc.Devices))}
	for _, d := range pc.Devices {
		kd := kubeletplugin.Device{
			PoolName:     d.Pool,
			DeviceName:   d.Device,
			CDIDeviceIDs: []string{d.CDIDeviceID},
		}
		if d.Request != "" {
			kd.Requests = []string{d.Request}
		}
		if d.ShareID != nil {
			id := *d.ShareID
			kd.ShareID = &id
		}
		res.Devices = append(res.Devices, kd)
	}
	return res
}

// CDISpec builds the claim's CDI spec, at the oldest spec version that can
// express it so that older runtimes read it too.
func (pc *PreparedClaim) CDISpec() (*cdispec.Spec, error) {
	spec := &cdispec.Spec{Kind: CDIKind, Devices: make([]cdispec.Device, 0, len(pc.Devices))}
	for _, d := range pc.Devices {
		_, _, name, err := parser.ParseQualifiedName(d.CDIDeviceID)
		if err != nil {
			return nil, fmt.Errorf("claim %s/%s: CDI device %q: %w", pc.Namespace, pc.Name, d.CDIDeviceID, err)
		}
		cd := cdispec.Device{Name: name}
		cd.ContainerEdits.DeviceNodes = make([]*cdispec.DeviceNode, 0, len(d.Nodes))
		for _, n := range d.Nodes {
			cd.ContainerEdits.DeviceNodes = append(cd.ContainerEdits.DeviceNodes, cdiDeviceNode(n))
		}
		spec.Devices = append(spec.Devices, cd)
	}
	v, err := cdispec.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("CDI spec version for claim %s/%s: %w", pc.Namespace, pc.Name, err)
	}
	spec.Version = v
	return spec, nil
}

func cdiDeviceNode(n PlannedNode) *cdispec.DeviceNode {
	dn := &cdispec.DeviceNode{
		Path:        n.ContainerPath,
		HostPath:    n.HostPath,
		Type:        n.Type,
		Major:       int64(n.Major),
		Minor:       int64(n.Minor),
		Permissions: n.Permissions,
	}
	if n.UID != nil {
		v := *n.UID
		dn.UID = &v
	}
	if n.GID != nil {
		v := *n.GID
		dn.GID = &v
	}
	if n.FileMode != nil {
		m := os.FileMode(*n.FileMode) & os.ModePerm
		dn.FileMode = &m
	}
	return dn
}

// CDIWriter writes and removes this driver's spec files in one directory,
// through atomicfile: checked by the CDI library, written under a temporary
// name of this plugin's own, synced and renamed.
type CDIWriter struct {
	dir string
	// hook is State's fault hook (tests), called at atomicfile's points.
	hook func(point string) error
}

// NewCDIWriter returns a writer for dir. The directory need not exist yet.
func NewCDIWriter(dir string) (*CDIWriter, error) {
	if dir == "" {
		return nil, errors.New("CDI directory is empty")
	}
	return &CDIWriter{dir: filepath.Clean(dir)}, nil
}

// Dir is the CDI directory.
func (w *CDIWriter) Dir() string { return w.dir }

// Path is the full path of a spec file name.
func (w *CDIWriter) Path(specName string) string { return filepath.Join(w.dir, specName) }

// WriteSpec writes the claim's spec unless the file already holds exactly
// that content. It reports whether it wrote. A claim without devices has
// no spec.
func (w *CDIWriter) WriteSpec(pc *PreparedClaim) (bool, error) {
	written, _, err := w.writeSpec(pc)
	return written, err
}

// writeSpec is WriteSpec that also returns what the file held before (nil
// when nothing), to undo the write (rollback.go).
func (w *CDIWriter) writeSpec(pc *PreparedClaim) (bool, []byte, error) {
	if pc.SpecName == "" {
		return false, nil, nil
	}
	spec, err := pc.CDISpec()
	if err != nil {
		return false, nil, err
	}
	path := w.Path(pc.SpecName)
	written, prev, err := atomicfile.WriteCDISpec(path, spec, w.hit)
	if err != nil {
		return false, nil, fmt.Errorf("write CDI spec %s for claim %s/%s: %w", path, pc.Namespace, pc.Name, err)
	}
	return written, prev, nil
}

func (w *CDIWriter) hit(point string) error {
	if w.hook == nil {
		return nil
	}
	return w.hook("cdi:" + point)
}

// putBack makes a spec file hold prev again (rollback.go).
func (w *CDIWriter) putBack(name string, prev []byte) error {
	err := atomicfile.Write(w.Path(name), prev, atomicfile.Options{Perm: 0o600, Hook: w.hit})
	var nd *atomicfile.NotDurableError
	if err != nil && !errors.As(err, &nd) {
		return fmt.Errorf("put back the CDI spec %s as it was: %w", w.Path(name), err)
	}
	return nil
}

// RemoveSpec removes the spec file(s) of a claim; a missing file is fine.
func (w *CDIWriter) RemoveSpec(claimUID types.UID) error {
	base := strings.TrimSuffix(CDISpecName(claimUID), cdiSpecExt)
	var errs []error
	for _, ext := range []string{".json", ".yaml"} {
		if err := w.removeFile(base + ext); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (w *CDIWriter) removeFile(name string) error {
	if err := atomicfile.Remove(w.Path(name), w.hit); err != nil {
		return fmt.Errorf("remove CDI spec: %w", err)
	}
	return nil
}

// specFile is one of this driver's spec files found in the directory.
type specFile struct {
	Name     string
	ClaimUID types.UID
}

// listSpecs returns this driver's spec files (by name), sorted. Files of
// other vendors, classes, and non-transient specs are not returned. A
// missing directory has none.
func (w *CDIWriter) listSpecs() ([]specFile, error) {
	entries, err := os.ReadDir(w.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list CDI directory %s: %w", w.dir, err)
	}
	var out []specFile
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if uid, ok := claimUIDFromSpecName(e.Name()); ok {
			out = append(out, specFile{Name: e.Name(), ClaimUID: uid})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// removeTemps removes the temporary files that crashed writes of this
// driver's specs left; see atomicfile.RemoveTemps. Other writers' files,
// the CDI library's spec.<digits>.tmp among them, are never touched.
func (w *CDIWriter) removeTemps() ([]string, error) {
	return atomicfile.RemoveTemps(w.dir, cdiSpecPrefix)
}

// readSpec parses one of this driver's spec files.
func (w *CDIWriter) readSpec(name string) (*cdispec.Spec, error) {
	s, err := cdi.ReadSpec(w.Path(name), 0)
	if err != nil {
		return nil, err
	}
	if s.Kind != CDIKind {
		return nil, fmt.Errorf("CDI spec %s has kind %q, want %q", w.Path(name), s.Kind, CDIKind)
	}
	return s.Spec, nil
}

// preparedClaimFromSpec rebuilds what a spec file says about a claim:
// its CDI devices with their nodes. Namespace, name, requests, groups and
// the allocation fingerprint are not in the file.
func preparedClaimFromSpec(f specFile, spec *cdispec.Spec, pool string) *PreparedClaim {
	pc := &PreparedClaim{UID: f.ClaimUID, SpecName: f.Name, Recovered: true, Devices: []PreparedDevice{}}
	for _, cd := range spec.Devices {
		d := PreparedDevice{CDIDeviceID: CDIDeviceID(cd.Name)}
		d.Pool = pool
		parts := strings.Split(cd.Name, "_")
		if len(parts) >= 2 {
			d.Device = parts[1]
		}
		if len(parts) >= 3 && len(parts[2]) == 36 {
			id := types.UID(parts[2])
			d.ShareID = &id
		}
		d.Nodes = []PlannedNode{}
		for _, dn := range cd.ContainerEdits.DeviceNodes {
			if dn == nil {
				continue
			}
			n := PlannedNode{
				ContainerPath: dn.Path,
				HostPath:      dn.HostPath,
				Type:          dn.Type,
				Major:         uint32(dn.Major),
				Minor:         uint32(dn.Minor),
				Permissions:   dn.Permissions,
				UID:           dn.UID,
				GID:           dn.GID,
			}
			if n.HostPath == "" {
				n.HostPath = n.ContainerPath
			}
			if dn.FileMode != nil {
				m := uint32(dn.FileMode.Perm())
				n.FileMode = &m
			}
			d.Nodes = append(d.Nodes, n)
		}
		pc.Devices = append(pc.Devices, d)
	}
	return pc
}
