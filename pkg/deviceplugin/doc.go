// Package deviceplugin is the legacy mode of power-dev-plugin: a kubelet
// device plugin (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1) for clusters
// without DRA. It consumes the same discovery inventories as the DRA driver
// (package driver) and serves one extended resource per configured group.
//
// # Resources and device IDs
//
// Group <g> is served as power-dev-plugin/<g>; the default group "dev" is
// the old power-device-plugin's power-dev-plugin/dev. Each group has its own
// gRPC server on a unix socket in the kubelet's device-plugin directory,
//
//	<dir>/power-dev-plugin-<group>-<instance>-<n>.sock
//
// (a hash of the group name when the path would pass the 107-byte limit),
// and registers it with the kubelet's Registration service on
// <dir>/kubelet.sock. The instance part (from the pod UID) keeps a new
// plugin pod of a rolling update off the old pod's sockets; n counts the
// registration attempts (see below). Sockets of earlier instances that
// nobody listens on are removed at start.
//
// Device IDs are discovery names, stable across restarts and rescans, never
// list positions (see BuildDeviceSets):
//
//   - exclusive group: one ID per device node, its name (sdb, mapper-mpatha,
//     crypto-nx-gzip);
//   - bundle group: one ID, the bundle's name, granting every node of the
//     group (an empty bundle has none);
//   - shared group: n IDs per device (or per bundle), <name>_0 ...
//     <name>_<n-1>, where n is maxConsumers; without maxConsumers n is the
//     number of the bundle's nodes for a bundle and DefaultSharedIDs (256)
//     otherwise, and n is lowered so a resource never has more than
//     MaxIDsPerResource (16384) IDs. Device names are DNS labels, so the "_"
//     of a share ID never meets a device name.
//
// The old plugin's config.json becomes one group "dev", bundle and shared
// (api/v1alpha1.MigrateLegacy): without upper-limit the resource has one ID
// per matched device, which is the node capacity the old plugin advertised,
// and each allocated ID grants every matched device as before; with
// upper-limit N it has N IDs, so at most N containers hold the devices at
// once.
//
// # Allocate
//
// Allocate grants exactly the IDs the kubelet asks for and fails, naming the
// resource and the IDs, when one is not advertised. For an exclusive group it
// also asks the kernel that nothing holds the block devices it grants
// (discovery.CheckNotHeld) and fails with the reason when something does.
// Each container gets:
//
//   - a DeviceSpec per node (container path = the node's kernel path, the
//     group's permissions), each node once even when two share IDs of one
//     device are asked for; a device-mapper node also at its
//     /dev/mapper/<name>, which is how LVM, multipath and Db2 name it (the
//     DRA driver does the same). The host path is the device's most specific
//     /dev/disk/by-id link (discovery.Device.StableHostPath), else the
//     kernel path (loop and character devices, hosts without udev): the
//     kubelet reuses an allocation after a reboot without calling Allocate,
//     and the runtime resolves the link then, so a renumbered disk is found
//     again and a vanished one fails the container rather than handing it
//     whatever now has the old kernel name. DeviceSpecs work with every
//     kubelet and runtime;
//   - the same devices as CDI device names, power-dev-plugin.io/device=<name>
//     (<name>.<hash of the by-id link> for a device that has one, so that a
//     reused name never means another device: see cdiDeviceName),
//     from a static spec the plugin keeps in the CDI directory
//     (power-dev-plugin.io-device.json, one CDI device per device or bundle,
//     rewritten on every inventory change and put back when removed). A
//     kubelet with DevicePluginCDIDevices (GA since 1.31) passes them to the
//     runtime; older kubelets ignore the field. The node is in the
//     container once: the CDI library and the runtimes' spec generators
//     replace a device at the same container path. containerd applies CDI
//     edits after the CRI device list, so the CDI version wins there: owned
//     by the container's uid and gid, so non-root containers can open it
//     (DeviceSpecs alone give the host's owner and mode, root:disk 0660 for
//     most disks, unless the runtime's device_ownership_from_security_context
//     is on). A device is named only once
//     the spec on disk defines it; when the spec cannot be written, Allocate
//     answers with DeviceSpecs alone. WithCDIDevices(false) turns CDI names
//     off for runtimes with CDI explicitly disabled (containerd 2 refuses a
//     container that names CDI devices then).
//
// The CDI spec is not removed when the plugin stops: running containers
// that restart while the plugin is down (an update, a crash) still resolve
// their CDI devices. /var/run/cdi is a tmpfs, so a reboot clears it.
//
// GetPreferredAllocation prefers distinct devices, then devices on a NUMA
// node already chosen, then devices with the same parent (partitions of one
// disk, volumes on the same physical volumes); see DeviceSet.Preferred.
// ListAndWatch reports the NUMA nodes sysfs knows (SysfsNUMA) in each
// device's TopologyInfo.
//
// # Changes and health
//
// Every ListAndWatch stream gets the full list at once and again after
// each change; a stream ends with its context or when its server stops. A
// device that disappears, or that discovery leaves out (unbound loop
// device, now mounted on the host), is removed from the list rather than
// reported Unhealthy: the node's capacity and allocatable follow discovery,
// a pod that holds the device keeps running, and a vanished ID cannot be
// allocated. Groups added to the configuration start a plugin; groups
// removed send an empty list and stop.
//
// # Kubelet restarts and re-registration
//
// A starting kubelet removes every socket in the directory and creates a
// new kubelet.sock. The plugin watches the directory (inotify, and a check
// every 5 s without it): when its socket is gone or replaced, or
// kubelet.sock is new, it registers again at once; failures are retried
// with backoff (0.5 s doubling to 5 s, cut short when kubelet.sock
// appears). A registered plugin with which the kubelet keeps no
// ListAndWatch stream for 5 s registers again too. The process never needs
// a restart, and it needs no API server access at all.
//
// Every registration attempt serves on a new socket path. The kubelet's
// device manager (1.37) keys a resource's endpoints by socket path: it
// refuses a path it still holds ("device plugin already connected"), and
// that refusal also drops its record of the first connection, so the path
// would stay dead. A new path is a new endpoint; the kubelet allocates
// through the newest and forgets an old one when its stream ends. This is
// also what a rolling update relies on: a 1.37 kubelet takes the new pod's
// endpoint next to the old one, an older kubelet refuses it until the old
// pod's stream ends, and the new pod's retries get it in. A Register call
// that fails after the kubelet has connected (a timeout) counts as
// registered once the kubelet's stream is open, rather than registering
// the same path again.
package deviceplugin
