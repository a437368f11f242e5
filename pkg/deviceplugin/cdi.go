package deviceplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
)

// CDI naming. The device plugin keeps one static spec file of kind
// power-dev-plugin.io/device in the CDI directory,
//
//	<cdi dir>/power-dev-plugin.io-device.json
//
// with one CDI device per device (or bundle) it serves, named like the
// device: power-dev-plugin.io/device=sdb, or, for a device the runtime opens
// by a stable host path, sdb.<hash of that path> (cdiDeviceName). All IDs of
// a shared device name the same CDI device. The DRA driver's per-claim specs
// are of class "claim", so the two never define the same CDI device.
const (
	CDIVendor = "power-dev-plugin.io"
	CDIClass  = "device"
	CDIKind   = CDIVendor + "/" + CDIClass
)

// CDISpecFile is the name of the spec file in the CDI directory.
var CDISpecFile = cdi.GenerateSpecName(CDIVendor, CDIClass) + ".json"

// CDIDeviceName is the fully qualified CDI name of a unit's CDI device
// (Unit.CDIDevice).
func CDIDeviceName(device string) string { return parser.QualifiedName(CDIVendor, CDIClass, device) }

// cdiDeviceName names the CDI device of a single device node. The kubelet
// keeps an allocation's CDI names with its DeviceSpecs and reuses them after
// a reboot without calling Allocate, while the spec is rewritten from the
// new inventory with the numbers the runtime then uses (containerd applies
// CDI nodes over the DeviceSpecs). So a name must not come to mean another
// device: with a stable host path the name carries a hash of it, and after
// a renumbering sdb.<hash> is either the same device again or undefined (the
// container does not start). Discovery names are DNS labels, so the dot
// keeps the two forms apart.
func cdiDeviceName(name string, n Node) string {
	if n.HostPath == "" || n.HostPath == n.Path {
		return name
	}
	sum := sha256.Sum256([]byte(n.HostPath))
	return name + "." + hex.EncodeToString(sum[:6])
}

// BuildCDISpec is the static spec for the given sets: one CDI device per
// distinct device (Unit.CDIDevice), with its nodes at their kernel paths
// (and device-mapper nodes at /dev/mapper/<name> too) and the group's
// permissions. UID, GID and mode are left to the runtime, which gives the
// node to the container's user. The host path is the kernel path: the
// spec carries the numbers, which CDI uses as they are, and it only lstats
// the host path for the file mode, which a by-id symlink would not give.
// Nil when there is no device (a spec without devices is invalid).
func BuildCDISpec(sets []*DeviceSet) (*cdispec.Spec, error) { return buildCDISpec(sets, nil) }

// buildCDISpec is BuildCDISpec that also defines a device under its plain
// name when the spec defined that name already (see cdiWriter.defined).
func buildCDISpec(sets []*DeviceSet, defined map[string]bool) (*cdispec.Spec, error) {
	spec := &cdispec.Spec{Kind: CDIKind}
	done := map[string]bool{}
	for _, s := range sets {
		for i := range s.Units {
			u := &s.Units[i]
			if done[u.CDIDevice] {
				continue
			}
			done[u.CDIDevice] = true
			d := cdispec.Device{Name: u.CDIDevice}
			d.ContainerEdits.DeviceNodes = make([]*cdispec.DeviceNode, 0, len(u.Nodes))
			for _, n := range u.Nodes {
				for _, cp := range n.containerPaths() {
					d.ContainerEdits.DeviceNodes = append(d.ContainerEdits.DeviceNodes, &cdispec.DeviceNode{
						Path:        cp,
						HostPath:    n.Path,
						Type:        n.Type,
						Major:       int64(n.Major),
						Minor:       int64(n.Minor),
						Permissions: s.Permissions,
					})
				}
			}
			spec.Devices = append(spec.Devices, d)
			if u.CDIDevice != u.Device && defined[u.Device] && !done[u.Device] {
				done[u.Device] = true
				d.Name = u.Device
				spec.Devices = append(spec.Devices, d)
			}
		}
	}
	if len(spec.Devices) == 0 {
		return nil, nil
	}
	sort.Slice(spec.Devices, func(i, j int) bool { return spec.Devices[i].Name < spec.Devices[j].Name })
	v, err := cdispec.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("CDI spec version: %w", err)
	}
	spec.Version = v
	return spec, nil
}

// cdiWriter keeps the static spec file, through atomicfile as the DRA
// driver's specs (checked by the CDI library, written under a temporary
// name of this plugin's own, synced and renamed).
type cdiWriter struct {
	dir string
	// defined are the CDI device names the spec on disk defines: read when
	// the writer is made, then those of each write. A plain name (sdb) stays
	// defined while its device is there, also once the device has a stable
	// host path: an earlier release, or this one before udev made the link,
	// handed it out, and those pods' containers name it when they restart.
	// /var/run/cdi is a tmpfs, so after a reboot, when a plain name may mean
	// another device, no plain name of a device with a link comes back.
	defined map[string]bool
}

func newCDIWriter(dir string) (*cdiWriter, error) {
	w := &cdiWriter{dir: filepath.Clean(dir), defined: map[string]bool{}}
	if b, err := os.ReadFile(w.path()); err == nil {
		var old cdispec.Spec
		if json.Unmarshal(b, &old) == nil && old.Kind == CDIKind {
			for _, d := range old.Devices {
				w.defined[d.Name] = true
			}
		}
	}
	return w, nil
}

func (w *cdiWriter) path() string { return filepath.Join(w.dir, CDISpecFile) }

// removeTemps removes the temporary files that crashed writes of the spec
// left; see atomicfile.RemoveTemps. Other writers' files are never touched.
func (w *cdiWriter) removeTemps() ([]string, error) {
	return atomicfile.RemoveTemps(w.dir, CDISpecFile)
}

// cleanCDITemps removes, at start, what writes of the spec that a crash
// interrupted left.
func (m *Manager) cleanCDITemps() {
	if m.cdi == nil {
		return
	}
	removed, err := m.cdi.removeTemps()
	for _, p := range removed {
		m.logger.Info("Removed a temporary file left by an interrupted write", "file", p)
	}
	if err != nil {
		m.logger.Error(err, "Cannot remove the temporary files that interrupted writes left in the CDI directory")
	}
}

// write makes the spec file hold spec (removes it for nil), unless it holds
// exactly that already. It returns the device names the file now defines.
func (w *cdiWriter) write(spec *cdispec.Spec) (map[string]bool, bool, error) {
	if spec == nil {
		_, statErr := os.Lstat(w.path())
		if err := atomicfile.Remove(w.path(), nil); err != nil {
			return nil, false, fmt.Errorf("remove CDI spec: %w", err)
		}
		w.defined = map[string]bool{}
		return map[string]bool{}, statErr == nil, nil
	}
	names := make(map[string]bool, len(spec.Devices))
	for _, d := range spec.Devices {
		names[d.Name] = true
	}
	wrote, _, err := atomicfile.WriteCDISpec(w.path(), spec, nil)
	if err != nil {
		return nil, false, fmt.Errorf("write CDI spec %s: %w", w.path(), err)
	}
	w.defined = names
	return names, wrote, nil
}
