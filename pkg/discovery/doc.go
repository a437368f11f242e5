// Package discovery finds the host device nodes the driver may hand to pods
// and sorts them into the configured groups.
//
// # Sources
//
// Everything is read under a host root (WithHostRoot, default "/"):
//
//   - Block devices come from sysfs, <root>/sys/class/block/<kname>. The host
//     path is /dev/<kname>, where a "!" in the kernel name stands for "/"
//     (cciss!c0d0 is /dev/cciss/c0d0). The device numbers are those of the
//     node <root>/dev/<kname> itself; a missing node, a node that is not a
//     block device or one whose numbers differ from sysfs's "dev" attribute
//     leaves the device out. Size, model, vendor, serial (also from SCSI VPD
//     page 0x80), WWID, rotational, removable, read-only, the disk of a
//     partition, dm name and uuid, slaves and holders come from sysfs too.
//     Partitions carry their disk's model, vendor, rotational and removable
//     values; serial and WWID stay with the disk.
//   - A block device's aliases are /dev/mapper/<dm name> (when it leads to the
//     same node) and the /dev/disk/by-id links that point at it.
//   - Character devices are looked at only when an include pattern names
//     them: globs are expanded (for groups whose types take character
//     devices) and exact paths are looked up. Links are followed. Several
//     paths of one node make one device: the node's own path, when named,
//     else the first link, with the other paths as aliases.
//   - Mounts come from <root>/proc/1/mountinfo (never the reader's own
//     /proc/self: in a container that is the container's table), swap from
//     <root>/proc/swaps, btrfs members from <root>/sys/fs/btrfs/*/devices,
//     loop devices' backing files from <root>/sys/class/block/loop*/loop/
//     backing_file, and the block devices behind SCSI generic, bsg and NVMe
//     character nodes from <root>/sys/class/{scsi_generic,bsg,nvme,
//     nvme-generic}. When the mount table or the swap list cannot be read,
//     or the mount table is plainly a container's (runtime file mounts such
//     as /etc/hostname, or an overlay "/" named "overlay"), no block device
//     is published: each is left out as "unknown whether in use" and
//     Inventory.Warnings says how to mount the host's files.
//   - What a block device carries (a file system, a storage stack's
//     signature), whether it is a multipath path and whether udev has
//     processed it come from the host's udev database,
//     <root>/run/udev/data/b<major>:<minor>. Without a usable database the
//     signatures are read from the first and last MiB of the device (see
//     WithBlockOpener), once per device number, size and diskseq.
//
// Symbolic links are resolved inside the root: an absolute target such as
// /dev/accel0 means <root>/dev/accel0.
//
// # Groups
//
// Include and exclude patterns are path.Match globs over host paths. A block
// device matches a pattern when its /dev path or any alias does. Groups are
// tried in configuration order; a node belongs to the first group that
// includes it and does not exclude it, and later groups never see it.
// Exclude always wins over include.
//
// A group's types filter (block, char) applies to glob patterns only. A
// pattern without metacharacters (* ? [ \) names one path exactly and
// takes it whatever its type: this is how the default configuration's
// block-only group "dev" also takes /dev/crypto/nx-gzip.
//
// # Safety rules
//
// After the patterns, and whatever they say, these rules keep a device
// back. Only an exact host path in AllowInUse (the device's /dev path or an
// alias; no globs) lifts them, for that device alone:
//
//   - In use: a block device that backs a mounted file system (matched by
//     mountinfo's device number and by its /dev source, which btrfs needs)
//     or active swap; whose node is bind-mounted (mountinfo shows devtmpfs,
//     or the file system at /dev, with the node's name as the mount root:
//     a pod's block-mode volume); a loop device over a block device node
//     (the kubelet's lock on a block-mode volume) and that block device; a
//     loop device over a file in /var/lib/kubelet. What it is built on
//     (slaves, recursively) is in use too, so is the disk of a used
//     partition, and so are the partitions of a wholly used disk.
//   - Character aliases: SCSI generic (/dev/sg*), bsg (/dev/bsg/*), NVMe
//     controller (/dev/nvme<n>) and NVMe generic (/dev/ng*) nodes reach the
//     media of block devices and are in use when one of those is in use or
//     held.
//   - Held: a device something is stacked on (non-empty holders/: multipath
//     paths, LVM physical volumes, md members) is published only as the top
//     of its stack. A disk with a held partition is held too.
//   - Storage stacks: a block device carrying the signature of LVM, md or
//     firmware RAID, ZFS, Ceph BlueStore, LUKS, bcache, DRBD and the like
//     is in use, with the same spread as above, even when nothing of its
//     stack is active. A file system or swap signature is not: the device
//     is published with its BlockInfo.FSType.
//   - Held for multipath and not ready: a path udev marks for multipath
//     (DM_MULTIPATH_DEVICE_PATH), even before the map exists; a device udev
//     marks not ready (SYSTEMD_READY=0); a device udev has not processed
//     yet. On a host without a usable udev database a Watcher holds every
//     block device it has not seen before (all of them at its first scan)
//     for the settle time instead; Discover alone has no history and holds
//     none. A device that can be neither looked up nor read is left out
//     ("unchecked"). A disk whose partition is held back is held back too.
//   - Kernel interfaces (/dev/mem, /dev/kmem, /dev/port, /dev/kmsg,
//     watchdogs, CPU MSR and CPUID, device-mapper and loop control,
//     /dev/snapshot, IPMI, TPM, MTD flash (also mtdblock), uinput, consoles
//     and virtual terminals, Power's papr-* and opal-prd, ...) are never
//     published, recognised by device number and by path.
//
// A block device of size 0 is no device (unbound loop device, empty drive,
// unconfigured zram) and is left out as well.
//
// # Exclusions
//
// Every node left out is listed once in Inventory.Excluded with the most
// important reason, in this order:
//
//	kernel interface: never published
//	unknown whether in use: the host's mount table <root>/proc/1/mountinfo cannot be read (...)
//	in use: mounted at /
//	in use: bind-mounted at <mount point> (the device node itself, ...)
//	in use: swap
//	in use: member of mounted btrfs file system <fsid>
//	in use: backed by block device /dev/sdc (a loop device over a block device ...)
//	in use: backed by <file>, in the kubelet's directory (a pod's volume)
//	in use: the backing device of loop device loop5
//	in use: SCSI generic node of sda; sda: in use: mounted at /
//	in use: under dm-0 (vg-root) which is mounted at /
//	in use: partition vda1 is mounted at /boot
//	in use: on disk sdb which is mounted at /srv
//	in use: carries an LVM physical volume signature (LVM2_member, from udev): ...
//	in use: partition sdc1 is a ZFS pool member (zfs_member)
//	held by dm-1 (mpatha)
//	partition sdb1 is held by dm-2 (vg-data)
//	held for multipath: udev marks it a path of a multipath map ...
//	unchecked: cannot tell whether it belongs to a storage stack ...
//	not ready: udev has not processed it yet ...
//	not ready: new device, published once it has been there for 5s ...
//	partition sdd1 is held back: not ready: ...
//	empty: size 0 (loop device with no backing file)
//	hidden by the kernel: no device node of its own
//	no block device node at /dev/x
//	device node /dev/x is 8:1 but sysfs says 8:2
//	excluded from group "disks" by pattern "/dev/sda*"
//	not included by any group
//
// so the root disk says it is in use even when no group includes it.
// "unknown whether in use" is the one reason allowInUse does not lift.
// Advice says what an admin can do about a reason.
//
// # Names
//
// Device.Name is a DNS-1123 label unique on the node and stable: the path
// without "/dev/", lower case, runs of other characters than [a-z0-9] made
// one "-", no "-" at the ends (/dev/crypto/nx-gzip is crypto-nx-gzip). A
// name longer than 63 characters is cut and ends in "-" and 6 hex digits of
// the path's SHA-256. When names meet, a bundle group's name stays, else
// the node whose path maps to the name without loss (only "/" turned into
// "-") keeps it; every other node gets the hash suffix. Names depend on the
// set of paths only, never on the order directories list them.
//
// # Watching
//
// A Watcher runs Discover again when the kernel reports a device event
// (netlink uevents), when <root>/dev, <root>/dev/mapper or
// <root>/dev/disk/by-id change, when the configuration file changes, and
// every rescan interval in any case. Events are debounced, and a new
// inventory is sent only when it differs from the last one.
package discovery
