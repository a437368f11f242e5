// Package driver is the DRA kubelet plugin of power-dev-plugin (driver name
// power-dev-plugin.io): it publishes a node's host devices as ResourceSlices
// and prepares allocated ResourceClaims for the containers that use them.
//
// # What is published
//
// Discovery (package discovery) produces an Inventory: configured groups in
// configuration order, each with the device nodes it matched. BuildResources
// turns it into one resource pool named after the node:
//
//   - every device node of a group becomes one DRA device, named by
//     discovery (a DNS label unique on the node), with the attributes and
//     capacity of attributes.go: group, path, type, major, minor and, for
//     block devices, kind, model, vendor, serial, wwn, dmName, dmUUID,
//     parent, fsType, rotational, removable, readOnly and the capacity size;
//     and identity, which says which device it is whatever its name (a
//     claim's nodes are pinned by it: restore.go);
//   - a bundle group becomes a single device (Group.BundleName) that stands
//     for all of its nodes, with attributes bundle, nodes and the summed size.
//     A claim holds at most 32 devices (AllocationResultsMaxSize), so a
//     bundle is how one request gets hundreds of disks;
//   - a shared group marks its devices allowMultipleAllocations; its
//     maxConsumers becomes the consumable capacity "consumers", of which each
//     allocation takes exactly one;
//   - devices that share blocks (a disk and its partitions;
//     discovery.Overlaps) consume shared counters, so that the scheduler
//     never allocates two of them at once (counters.go).
//
// Devices are split into ResourceSlices of at most 128 devices (64 for
// devices with taints, counters or list attributes; of these only counters
// are published), and the counter sets into slices of their own.
// ValidateResources checks the result against the API's rules before it is
// handed to the kubeletplugin helper.
//
// # Selecting devices
//
// Attributes and capacities live in the driver's domain:
//
//	device.attributes["power-dev-plugin.io"].path == "/dev/sdb"
//	device.capacity["power-dev-plugin.io"].size.compareTo(quantity("100Gi")) >= 0
//
// Every device carries every attribute and the size capacity: a char device
// has kind "", serial "" and size 0, a disk without a serial has serial "".
// A selector that read a missing key would be a CEL runtime error that fails
// the pod's scheduling instead of skipping the device; with uniform
// attributes a selector such as serial == "X" is just false elsewhere.
package driver
