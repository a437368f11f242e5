package discovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

const sysClassBlock = "/sys/class/block"

// blockDev is one block device as sysfs and /dev describe it.
type blockDev struct {
	info BlockInfo
	// path is the canonical host path /dev/<kname> ("!" in the kernel name
	// becomes "/").
	path string

	// sysfs "dev" attribute.
	sysMajor, sysMinor uint32
	sysDevOK           bool

	hidden bool
	// backingRead: backing holds a loop device's backing file (identity.go).
	backingRead bool
	// partNo is a partition's number; 0 when unknown.
	partNo uint16

	holders    []string // kernel names, sorted
	partitions []string // kernel names, sorted
	// aliases are /dev/mapper and /dev/disk/by-id paths, sorted.
	aliases []string

	// From the device node.
	major, minor uint32
	// nodeProblem is why the node cannot be published ("" when fine).
	nodeProblem string

	// For the identity (identity.go): what the udev database says (nil
	// when nothing), a loop device's backing file, and the result.
	udev     *udevIDs
	backing  string
	identity string
}

// devPathOf maps a kernel name to its /dev path: sysfs writes "/" as "!".
func devPathOf(kname string) string {
	return "/dev/" + strings.ReplaceAll(kname, "!", "/")
}

// label names a device in reasons: "dm-1 (mpatha)" or "sdb".
func (d *blockDev) label() string {
	if d.info.DMName != "" {
		return d.info.KernelName + " (" + d.info.DMName + ")"
	}
	return d.info.KernelName
}

type blockSet struct {
	list    []*blockDev // sorted by kernel name
	byName  map[string]*blockDev
	byDev   map[uint64]*blockDev // sysfs numbers, then node numbers
	byPath  map[string]*blockDev // canonical path and aliases
	devPath map[string]bool      // canonical paths only
}

func devKey(major, minor uint32) uint64 { return uint64(major)<<32 | uint64(minor) }

// scanBlock reads every block device sysfs lists.
func (h *hostFS) scanBlock(ctx context.Context) (*blockSet, error) {
	names, err := readDirNames(h.real(sysClassBlock))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	sort.Strings(names)
	set := &blockSet{
		list:    make([]*blockDev, 0, len(names)),
		byName:  make(map[string]*blockDev, len(names)),
		byDev:   make(map[uint64]*blockDev, len(names)),
		byPath:  make(map[string]*blockDev, len(names)),
		devPath: make(map[string]bool, len(names)),
	}
	for i, kname := range names {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		d := h.readBlock(kname)
		set.list = append(set.list, d)
		set.byName[kname] = d
		set.byPath[d.path] = d
		set.devPath[d.path] = true
		if d.sysDevOK {
			set.byDev[devKey(d.sysMajor, d.sysMinor)] = d
		}
	}
	for _, d := range set.list {
		if d.nodeProblem == "" {
			if k := devKey(d.major, d.minor); set.byDev[k] == nil {
				set.byDev[k] = d
			}
		}
		if d.info.Kind == KindPartition {
			if p := set.byName[d.info.Parent]; p != nil {
				p.partitions = append(p.partitions, d.info.KernelName) // list is sorted
			}
		}
	}
	return set, nil
}

func (h *hostFS) readBlock(kname string) *blockDev {
	classPath := sysClassBlock + "/" + kname
	dir := h.real(classPath)
	d := &blockDev{path: devPathOf(kname)}
	d.info.KernelName = kname

	// The class link's target names a partition's disk (the directory it
	// lives in) and tells virtual devices from hardware.
	target, _ := os.Readlink(dir)
	virtual := strings.Contains(target, "/devices/virtual/")

	sd := h.openSysDir(dir)
	defer sd.close()
	if s, ok := sd.attr("dev"); ok {
		if maj, min, err := parseDevNum(s); err == nil {
			d.sysMajor, d.sysMinor, d.sysDevOK = maj, min, true
		}
	}
	if s, ok := sd.attr("size"); ok {
		if n, err := parseUint64(s); err == nil {
			d.info.SizeBytes = n * 512
		}
	}
	d.info.ReadOnly = sd.is1("ro")
	d.holders = sd.links("holders")

	partNo, isPart := sd.raw("partition")
	if isPart {
		d.partNo = parseSmallUint(partNo)
	}
	switch {
	case isPart:
		d.info.Kind = KindPartition
		if target != "" {
			d.info.Parent = path.Base(path.Dir(target))
		}
	case strings.HasPrefix(kname, "loop"):
		d.info.Kind = KindLoop
	case strings.HasPrefix(kname, "dm-"):
		d.info.Kind = KindDM
	case strings.HasPrefix(kname, "md"):
		d.info.Kind = KindMD
	case strings.HasPrefix(kname, "sr"):
		d.info.Kind = KindROM
	default:
		d.info.Kind = KindDisk
	}

	if d.info.Kind != KindPartition {
		d.info.Removable = sd.is1("removable")
		d.info.Rotational = sd.is1("queue/rotational")
		if strings.HasPrefix(kname, "nvme") {
			// Paths of a multipath namespace (nvme0c0n1) are hidden.
			d.hidden = sd.is1("hidden")
		}
		d.info.Slaves = sd.links("slaves")
		if d.info.Kind == KindDM {
			d.info.DMName, _ = sd.attr("dm/name")
			d.info.DMUUID, _ = sd.attr("dm/uuid")
			switch uuid := d.info.DMUUID; {
			case strings.HasPrefix(uuid, "mpath-"):
				d.info.Kind = KindMpath
			case strings.HasPrefix(uuid, "LVM-"):
				d.info.Kind = KindLVM
			case strings.HasPrefix(uuid, "CRYPT-"):
				d.info.Kind = KindCrypt
			}
		}
		// The namespace (NVMe) or the disk (virtio) can carry its own
		// serial and WWID; SCSI keeps them on the device.
		d.info.Serial, _ = sd.attr("serial")
		d.info.WWN, _ = sd.attr("wwid")
		if !virtual {
			d.info.Model, _ = sd.attr("device/model")
			d.info.Vendor, _ = sd.attr("device/vendor")
			if d.info.Serial == "" {
				d.info.Serial, _ = sd.attr("device/serial")
			}
			if d.info.Serial == "" {
				if b, ok := sd.raw("device/vpd_pg80"); ok {
					d.info.Serial = parseVPD80(b)
				}
			}
			if d.info.WWN == "" {
				d.info.WWN, _ = sd.attr("device/wwid")
			}
		}
	}

	h.checkNode(d)
	return d
}

// checkNode stats /dev/<kname> and compares it with sysfs.
func (h *hostFS) checkNode(d *blockDev) {
	n, err := h.statPath(d.path)
	if err != nil || !isBlockMode(n.mode) {
		d.nodeProblem = "no block device node at " + d.path
		return
	}
	d.major, d.minor = n.major, n.minor
	switch {
	case !d.sysDevOK:
		d.nodeProblem = fmt.Sprintf("sysfs has no device number for %s", d.info.KernelName)
	case d.major != d.sysMajor || d.minor != d.sysMinor:
		d.nodeProblem = fmt.Sprintf("device node %s is %d:%d but sysfs says %d:%d",
			d.path, d.major, d.minor, d.sysMajor, d.sysMinor)
	}
}

// parseVPD80 extracts the unit serial number from a SCSI VPD page 0x80:
// a 4-byte header whose bytes 2-3 are the page length, then the serial.
func parseVPD80(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	end := 4 + n
	if end > len(b) {
		end = len(b)
	}
	return cleanString(b[4:end])
}

// inheritFromParents copies the physical properties of a disk onto its
// partitions (the kernel keeps them only on the disk).
func (s *blockSet) inheritFromParents() {
	for _, d := range s.list {
		if d.info.Kind != KindPartition {
			continue
		}
		p := s.byName[d.info.Parent]
		if p == nil {
			continue
		}
		d.info.Rotational = p.info.Rotational
		d.info.Removable = p.info.Removable
		d.info.Model = p.info.Model
		d.info.Vendor = p.info.Vendor
	}
}

// scanAliases fills in /dev/mapper/<name> and /dev/disk/by-id links.
func (h *hostFS) scanAliases(s *blockSet) {
	for _, d := range s.list {
		if d.info.DMName == "" || d.nodeProblem != "" {
			continue
		}
		alias := "/dev/mapper/" + d.info.DMName
		// Only a name that leads to this very node: a stale link or node
		// must not lend its name.
		if n, err := h.statPath(alias); err == nil && isBlockMode(n.mode) &&
			n.major == d.major && n.minor == d.minor {
			d.aliases = append(d.aliases, alias)
			s.byPath[alias] = d
		}
	}
	const byID = "/dev/disk/by-id"
	for _, name := range h.list(byID) {
		link := byID + "/" + name
		target, err := os.Readlink(h.real(link))
		if err != nil {
			continue
		}
		if !path.IsAbs(target) {
			target = path.Join(byID, target)
		}
		d := s.byPath[path.Clean(target)]
		if d == nil {
			continue
		}
		d.info.ByID = append(d.info.ByID, link)
		d.aliases = append(d.aliases, link)
	}
	for _, d := range s.list {
		sort.Strings(d.aliases)
		for _, a := range d.aliases {
			s.byPath[a] = d
		}
	}
}
