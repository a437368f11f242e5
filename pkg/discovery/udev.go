package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The host's udev database: /run/udev/data/b<major>:<minor> holds what udev
// found out about a block device once it has processed the device's event,
// one "E:KEY=value" line per property (the format of systemd's
// sd-device/device-private.c, also written by eudev).
const (
	udevRun     = "/run/udev"
	udevData    = udevRun + "/data"
	udevControl = udevRun + "/control"
)

// udevView is how a scan sees the host's udev.
type udevView struct {
	// usable: the host runs udev and its database can be read. Only then
	// does "no entry yet" mean "not processed yet".
	usable bool
	// warning says why the database is not used on a host that seems to
	// run udev.
	warning string
}

// readUdev decides whether the host runs udev. An empty <root>/run/udev, as
// a hostPath volume of type DirectoryOrCreate leaves on a host without
// udev, does not count: the control socket (kept by systemd even while
// udevd restarts) or at least one database entry must be there.
func (h *hostFS) readUdev() udevView {
	dataDir := h.real(udevData)
	_, errCtl := os.Lstat(h.real(udevControl))
	names, errData := readDirN(dataDir, 1)
	present := errCtl == nil || len(names) > 0
	switch {
	case present && errData != nil:
		return udevView{warning: fmt.Sprintf("the host runs udev but its database %s cannot be read (%v): "+
			"new block devices wait a fixed settle time and storage stacks are looked for on the devices "+
			"themselves; make it readable (mount the host's /run/udev read-only at %s)", dataDir, errData, h.real(udevRun))}
	case present:
		return udevView{usable: true}
	case h.exists("/dev/disk/by-id"):
		// udev makes /dev/disk; the kernel's devtmpfs does not.
		return udevView{warning: fmt.Sprintf("the host seems to run udev (it has /dev/disk/by-id) but its database "+
			"is not visible at %s: new block devices wait a fixed settle time instead of udev's word, and storage "+
			"stacks are looked for on the devices themselves; mount the host's /run/udev read-only there",
			h.real(udevRun))}
	}
	return udevView{}
}

// readDirN lists at most n names of a real directory.
func readDirN(dir string, n int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(n)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return names, nil
}

// udevEntry is the part of a database entry that discovery uses.
type udevEntry struct {
	fsType, fsUsage string
	// multipath is DM_MULTIPATH_DEVICE_PATH: "1" a path of a multipath
	// map, "2" maybe one (find_multipaths smart is still waiting).
	multipath string
	// notReady is SYSTEMD_READY=0: the device is not to be used yet.
	notReady bool
	// ids are what udev knows of the device's identity.
	ids udevIDs
}

// udevLookup reads the entry of block device major:minor. found is false
// when there is none (udev has not processed the device).
func (h *hostFS) udevLookup(major, minor uint32) (e udevEntry, found bool, err error) {
	p := h.real(udevData + "/b" + strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10))
	// Most entries fit the shared buffer; a larger one is read whole.
	data, ok := h.readRawAt(unix.AT_FDCWD, p)
	if !ok || len(data) == len(h.buf) {
		var err error
		if data, err = os.ReadFile(p); errors.Is(err, fs.ErrNotExist) {
			return e, false, nil
		} else if err != nil {
			return e, false, err
		}
	}
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		kv, ok := bytes.CutPrefix(line, []byte("E:"))
		if !ok {
			continue
		}
		k, v, _ := bytes.Cut(kv, []byte{'='})
		switch string(k) {
		case "ID_FS_TYPE":
			e.fsType = string(v)
		case "ID_FS_USAGE":
			e.fsUsage = string(v)
		case "DM_MULTIPATH_DEVICE_PATH":
			e.multipath = string(v)
		case "SYSTEMD_READY":
			e.notReady = string(v) == "0"
		case "ID_WWN_WITH_EXTENSION":
			e.ids.wwn = string(v)
		case "ID_WWN":
			if e.ids.wwn == "" {
				e.ids.wwn = string(v)
			}
		case "ID_SERIAL_SHORT":
			e.ids.serial = string(v)
		case "ID_PATH":
			e.ids.path = string(v)
		case "ID_PART_ENTRY_UUID":
			e.ids.partUUID = string(v)
		case "MD_UUID":
			e.ids.mdUUID = string(v)
		}
	}
	return e, true, nil
}

// holdReason says why udev's entry keeps a device back for now, or "".
func (e udevEntry) holdReason() string {
	switch {
	case e.multipath == "1":
		return "held for multipath: udev marks it a path of a multipath map (DM_MULTIPATH_DEVICE_PATH=1), " +
			"also before the map is set up; include the map (/dev/mapper/...) instead"
	case e.multipath != "" && e.multipath != "0":
		return fmt.Sprintf("held for multipath: udev is still deciding whether it is a multipath path "+
			"(DM_MULTIPATH_DEVICE_PATH=%s); it is published once udev says it is not", e.multipath)
	case e.notReady:
		return "not ready: udev marks it not ready for use (SYSTEMD_READY=0: e.g. a multipath path, " +
			"an md array not yet running, a device-mapper map being set up); it is published once udev marks it ready"
	}
	return ""
}

// stackDescriptions name the storage stacks whose members have no mount and
// often no holder. Types are blkid's; any other type blkid files under raid
// or crypto usage counts too, as does every *_raid_member (firmware RAID).
var stackDescriptions = map[string]string{
	"LVM2_member":        "an LVM physical volume",
	"LVM1_member":        "an LVM physical volume",
	"linux_raid_member":  "an md RAID member",
	"zfs_member":         "a ZFS pool member",
	"ceph_bluestore":     "a Ceph BlueStore OSD",
	"crypto_LUKS":        "a LUKS encrypted volume",
	"BitLocker":          "a BitLocker encrypted volume",
	"bcache":             "a bcache backing or cache device",
	"drbd":               "a DRBD backing device",
	"drbdmanage_control": "DRBD control data",
	"DM_snapshot_cow":    "a device-mapper snapshot store",
	"DM_integrity":       "a dm-integrity device",
	"DM_verity_hash":     "a dm-verity hash device",
	"jbd":                "an external ext3/ext4 journal",
	"VMFS_volume_member": "a VMFS volume member",
	"stratis":            "a Stratis pool member",
	"vdo":                "a VDO volume",
}

// stackOf describes the storage stack a device with this blkid type and
// usage belongs to, or returns "" for a plain file system, swap or nothing.
func stackOf(fsType, fsUsage string) string {
	if d, ok := stackDescriptions[fsType]; ok {
		return d
	}
	switch {
	case strings.HasSuffix(fsType, "_raid_member"):
		return "a firmware RAID member"
	case fsType != "" && fsUsage == "raid":
		return "a storage stack member"
	case fsType != "" && fsUsage == "crypto":
		return "an encrypted volume"
	}
	return ""
}
