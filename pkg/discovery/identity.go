package discovery

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A device's identity says which device it is, whatever kernel name and
// numbers it has now: sdb and 8:16 may be another disk after a reboot or a
// rescan, a WWN may not. The driver pins what a claim holds by it; see
// docs/design.md ("Identity").

// MaxIdentityLen is the length limit of an identity, the API's limit for a
// string attribute.
const MaxIdentityLen = 64

// Identity prefixes, one per source; the first that a device has wins.
const (
	idWWN      = "wwn:"      // sysfs wwid, else udev ID_WWN_WITH_EXTENSION / ID_WWN
	idSerial   = "serial:"   // sysfs serial (also VPD page 0x80), else udev ID_SERIAL_SHORT
	idDMUUID   = "dm-uuid:"  // device-mapper UUID: multipath, LVM, LUKS
	idDMName   = "dm-name:"  // a device-mapper device without a UUID
	idMDUUID   = "md-uuid:"  // md array UUID (sysfs md/uuid, else udev MD_UUID)
	idLoop     = "loop:"     // backing file and its inode
	idPartUUID = "partuuid:" // udev ID_PART_ENTRY_UUID, for partitions of a disk without identity
	idPathID   = "path-id:"  // udev ID_PATH: where the device is attached
	idPath     = "path:"     // character devices
	idKernel   = "kname:"    // nothing stable: kernel name and diskseq, good for one boot only
)

// IdentityIsStable reports whether an identity names the same device across
// reboots. One made of the kernel name ("kname:vda:diskseq=3", for a device
// without WWN, serial, UUID or udev path) holds within one boot only.
func IdentityIsStable(id string) bool {
	return id != "" && !strings.HasPrefix(id, idKernel)
}

// shortIdentity makes a raw identity fit an attribute: kept as it is when it
// is at most MaxIdentityLen bytes of printable ASCII without blanks. Else
// runs of blanks and other bytes become "_", and what does not fit is cut
// from the middle, after the kind ("loop:..devices/b.img:inode=12", the end
// being what tells devices apart: a file name, a serial, a partition
// number), followed by "~" and 16 hex digits of the SHA-256 of the whole
// raw identity.
func shortIdentity(raw string) string {
	plain := len(raw) <= MaxIdentityLen
	for i := 0; plain && i < len(raw); i++ {
		plain = raw[i] > ' ' && raw[i] < 0x7f
	}
	if plain {
		return raw
	}
	const hashLen = 16
	keep := MaxIdentityLen - 1 - hashLen
	clean := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c <= ' ' || c >= 0x7f {
			if len(clean) > 0 && clean[len(clean)-1] == '_' {
				continue
			}
			c = '_'
		}
		clean = append(clean, c)
	}
	b := make([]byte, 0, MaxIdentityLen)
	if len(clean) <= keep {
		b = append(b, clean...)
	} else {
		kind := 0
		if i := bytes.IndexByte(clean, ':'); i >= 0 && i < keep/2 {
			kind = i + 1
		}
		b = append(b, clean[:kind]...)
		b = append(b, ".."...)
		b = append(b, clean[len(clean)-(keep-kind-2):]...)
	}
	sum := sha256.Sum256([]byte(raw))
	b = append(b, '~')
	b = hex.AppendEncode(b, sum[:hashLen/2])
	return string(b)
}

// udevIDs are the identifiers the host's udev database holds for a device,
// kept only when it has one of them.
type udevIDs struct {
	wwn, serial, path, partUUID, mdUUID string
}

func (u *udevIDs) empty() bool { return *u == udevIDs{} }

// fillIdentities computes every block device's identity (blockDev.identity):
// disks and stacked devices first, then partitions, which may take their
// disk's. It runs after checkStacks, which reads the udev database.
func (h *hostFS) fillIdentities(s *blockSet) {
	for _, d := range s.list {
		if d.info.Kind != KindPartition {
			d.identity = shortIdentity(h.rawIdentity(d))
		}
	}
	for _, d := range s.list {
		if d.info.Kind == KindPartition {
			d.identity = shortIdentity(h.partitionIdentity(s, d))
		}
	}
}

func (h *hostFS) rawIdentity(d *blockDev) string {
	if d.hidden {
		// A path of an NVMe multipath namespace carries the namespace's
		// WWID; it has no node and is never handed out.
		return h.weakIdentity(d)
	}
	u := d.udev
	if u == nil {
		u = &udevIDs{}
	}
	switch d.info.Kind {
	case KindDM, KindMpath, KindLVM, KindCrypt:
		// The kernel keeps dm UUIDs unique; a name is unique too but
		// any tool may reuse it for another map.
		if d.info.DMUUID != "" {
			return idDMUUID + d.info.DMUUID
		}
		if d.info.DMName != "" {
			return idDMName + d.info.DMName
		}
	case KindMD:
		if v := h.sysAttr(d, "md/uuid"); v != "" {
			return idMDUUID + v
		}
		if u.mdUUID != "" {
			return idMDUUID + u.mdUUID
		}
	case KindLoop:
		if id := h.loopIdentity(d); id != "" {
			return id
		}
		return h.weakIdentity(d)
	}
	switch {
	case d.info.WWN != "":
		return idWWN + d.info.WWN
	case u.wwn != "":
		return idWWN + u.wwn
	case d.info.Serial != "":
		return idSerial + d.info.Serial
	case u.serial != "":
		return idSerial + u.serial
	case u.path != "":
		return idPathID + u.path
	}
	return h.weakIdentity(d)
}

// partitionIdentity is the disk's identity (as published: a long one is
// shortened first) with the partition number, as
// /dev/disk/by-id names partitions: the partition table is the disk's, and
// partition UUIDs repeat on cloned disks. A disk without a stable identity
// lends none: then the partition's UUID, where udev has one.
func (h *hostFS) partitionIdentity(s *blockSet, d *blockDev) string {
	if p := s.byName[d.info.Parent]; p != nil && IdentityIsStable(p.identity) && d.partNo > 0 {
		return p.identity + "-part" + strconv.Itoa(int(d.partNo))
	}
	if d.udev != nil && d.udev.partUUID != "" {
		return idPartUUID + d.udev.partUUID
	}
	if p := s.byName[d.info.Parent]; p != nil && d.partNo > 0 {
		return p.identity + "-part" + strconv.Itoa(int(d.partNo))
	}
	return h.weakIdentity(d)
}

// weakIdentity names a device by its kernel name and, where the kernel
// has one (5.15 and later), its disk sequence number, which changes when
// the device or its medium is replaced within one boot.
func (h *hostFS) weakIdentity(d *blockDev) string {
	id := idKernel + d.info.KernelName
	if seq := h.sysAttr(d, "diskseq"); seq != "" {
		id += ":diskseq=" + seq
	}
	return id
}

// loopIdentity is a bound loop device's backing file with its inode (and
// offset when not 0); the file alone when it cannot be looked at under the
// host root (attached in another mount namespace, or deleted). "" when the
// loop device is not bound.
func (h *hostFS) loopIdentity(d *blockDev) string {
	file := h.backingOf(d)
	if file == "" {
		return ""
	}
	id := idLoop + file
	if r, err := h.resolve(file); err == nil {
		var st unix.Stat_t
		if unix.Stat(h.real(r), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			id += ":inode=" + strconv.FormatUint(st.Ino, 10)
		}
	}
	if off := h.sysAttr(d, "loop/offset"); off != "" && off != "0" {
		id += ":offset=" + off
	}
	return id
}

// backingOf reads a loop device's backing file once per scan.
func (h *hostFS) backingOf(d *blockDev) string {
	if !d.backingRead {
		d.backing = h.loopBackingFile(d.info.KernelName)
		d.backingRead = true
	}
	return d.backing
}

// parseSmallUint parses a sysfs number such as "12\n" without allocating;
// 0 when it is none or does not fit.
func parseSmallUint(b []byte) uint16 {
	n := 0
	for _, c := range bytes.TrimSpace(b) {
		if c < '0' || c > '9' || n > 6553 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return uint16(n)
}

// sysAttr reads one attribute of a block device's sysfs directory.
func (h *hostFS) sysAttr(d *blockDev, name string) string {
	b, ok := h.readRawAt(unix.AT_FDCWD, h.real(sysClassBlock+"/"+d.info.KernelName+"/"+name))
	if !ok {
		return ""
	}
	return cleanString(b)
}
