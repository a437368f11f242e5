package discovery

import (
	"encoding/binary"
	"fmt"
	"io"
)

// On-disk signatures of storage stacks and file systems, found where blkid
// (util-linux libblkid) looks for them. They are read from the device only
// when the host's udev database cannot say (see stacks.go). The names are
// blkid's, the same udev stores as ID_FS_TYPE.

const (
	sigWindow   = 1 << 20 // bytes read at each end of a device
	luksHdrSize = 512     // the part of a LUKS2 binary header that is checked
)

// LUKS2 keeps a second header at one of these offsets; the first ones lie in
// the first MiB, the last two are read on their own.
var luks2SecondaryOffsets = []uint64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}

// sigView holds the parts of a device the probes look at: the first and the
// last sigWindow bytes, and the LUKS2 secondary headers beyond them.
type sigView struct {
	size    uint64
	head    []byte
	tailOff uint64
	tail    []byte
	extra   map[uint64][]byte
}

// readSigView reads the parts of a device of size bytes that the probes need.
func readSigView(r io.ReaderAt, size uint64) (*sigView, error) {
	v := &sigView{size: size, extra: map[uint64][]byte{}}
	read := func(off, n uint64) ([]byte, error) {
		b := make([]byte, n)
		m, err := r.ReadAt(b, int64(off))
		if uint64(m) == n {
			return b, nil
		}
		if err == nil || err == io.EOF {
			err = fmt.Errorf("short read at offset %d: %d of %d bytes (did the device shrink?)", off, m, n)
		}
		return nil, err
	}
	// A device of up to two windows is read whole.
	headLen := size
	if size > 2*sigWindow {
		headLen = sigWindow
	}
	var err error
	if v.head, err = read(0, headLen); err != nil {
		return nil, err
	}
	if size > 2*sigWindow {
		v.tailOff = size - sigWindow
		if v.tail, err = read(v.tailOff, sigWindow); err != nil {
			return nil, err
		}
	}
	for _, off := range luks2SecondaryOffsets {
		if off+luksHdrSize <= size && v.at(off, luksHdrSize) == nil {
			if v.extra[off], err = read(off, luksHdrSize); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

// at returns n bytes at off, or nil when they were not read (or lie beyond
// the end).
func (v *sigView) at(off, n uint64) []byte {
	if off+n < off || off+n > v.size {
		return nil
	}
	if off+n <= uint64(len(v.head)) {
		return v.head[off : off+n]
	}
	if v.tail != nil && off >= v.tailOff && off+n <= v.tailOff+uint64(len(v.tail)) {
		return v.tail[off-v.tailOff : off-v.tailOff+n]
	}
	if b := v.extra[off]; uint64(len(b)) >= n {
		return b[:n]
	}
	return nil
}

func (v *sigView) has(off uint64, magic string) bool {
	b := v.at(off, uint64(len(magic)))
	return b != nil && string(b) == magic
}

func (v *sigView) le32(off uint64) (uint32, bool) {
	if b := v.at(off, 4); b != nil {
		return binary.LittleEndian.Uint32(b), true
	}
	return 0, false
}

func (v *sigView) be32(off uint64) (uint32, bool) {
	if b := v.at(off, 4); b != nil {
		return binary.BigEndian.Uint32(b), true
	}
	return 0, false
}

func (v *sigView) le64(off uint64) (uint64, bool) {
	if b := v.at(off, 8); b != nil {
		return binary.LittleEndian.Uint64(b), true
	}
	return 0, false
}

// probeSignature names what the device carries: a storage stack's type when
// there is one (it wins over a file system found next to it, as an md 1.0
// member shows its array's file system at the start), else a file system's,
// else "".
func probeSignature(v *sigView) string {
	for _, p := range []struct {
		name string
		is   func(*sigView) bool
	}{
		{"crypto_LUKS", isLUKS},
		{"LVM2_member", isLVM2},
		{"linux_raid_member", isMDRaid},
		{"zfs_member", isZFS},
		{"ceph_bluestore", isBlueStore},
		{"bcache", isBcache},
		{"drbd", isDRBD},
	} {
		if p.is(v) {
			return p.name
		}
	}
	return probeFilesystem(v)
}

// isLUKS finds a LUKS1/LUKS2 header at 0, or a LUKS2 secondary header at one
// of its offsets. Recent blkid also wants a LUKS2 header to record its own
// offset; blkid 2.38 does not, and neither does this: either may be what
// udev says on a host.
func isLUKS(v *sigView) bool {
	if v.has(0, "LUKS\xba\xbe") {
		return true
	}
	for _, off := range luks2SecondaryOffsets {
		if v.has(off, "SKUL\xba\xbe") {
			return true
		}
	}
	return false
}

// isLVM2 finds an LVM2 label: "LABELONE" at the start of one of the first
// four sectors, naming that sector, with type "LVM2 001".
func isLVM2(v *sigView) bool {
	for sector := uint64(0); sector < 4; sector++ {
		off := sector * 512
		if !v.has(off, "LABELONE") || !v.has(off+24, "LVM2 001") {
			continue
		}
		if s, ok := v.le64(off + 8); ok && s == sector {
			return true
		}
	}
	return false
}

const mdMagic = 0xa92b4efc

// isMDRaid finds an md superblock: v0.90 in the last 64 KiB-aligned 64 KiB
// (either byte order), v1.0 8 KiB before the 4 KiB-aligned end, v1.1 at 0,
// v1.2 at 4 KiB. A v1 superblock records its own sector.
func isMDRaid(v *sigView) bool {
	const reserved = 0x10000
	v1 := func(off uint64) bool {
		magic, ok1 := v.le32(off)
		major, ok2 := v.le32(off + 4)
		super, ok3 := v.le64(off + 144)
		return ok1 && ok2 && ok3 && magic == mdMagic && major == 1 && super == off/512
	}
	if v.size > reserved {
		off := v.size&^(reserved-1) - reserved
		if m, ok := v.le32(off); ok && m == mdMagic {
			return true
		}
		if m, ok := v.be32(off); ok && m == mdMagic {
			return true
		}
		if v.size&^0xfff >= 0x2000 && v1(v.size&^0xfff-0x2000) {
			return true
		}
	}
	return v1(0) || v1(0x1000)
}

// isZFS counts uberblocks (magic 0x00bab10c, either byte order, every KiB of
// the ring at 128 KiB into a label) in the four vdev labels: two at the
// start, two at the 256 KiB-aligned end. Like blkid it wants four.
func isZFS(v *sigView) bool {
	const (
		labelSize = 256 << 10
		ringOff   = 128 << 10
		magic     = 0x00bab10c
		swapped   = 0x0cb1ba0000000000
	)
	if v.size < 64<<20 {
		return false
	}
	align := v.size % labelSize
	found := 0
	for _, label := range []uint64{0, labelSize, v.size - 2*labelSize - align, v.size - labelSize - align} {
		for i := uint64(0); i < 128; i++ {
			if m, ok := v.le64(label + ringOff + i<<10); ok && (m == magic || m == swapped) {
				found++
			}
		}
		if found >= 4 {
			return true
		}
	}
	return false
}

func isBlueStore(v *sigView) bool { return v.has(0, "bluestore block device") }

// isBcache finds a bcache superblock at 4 KiB: its magic at 24, and its own
// sector (8) at 8.
func isBcache(v *sigView) bool {
	const magic = "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"
	s, ok := v.le64(0x1000 + 8)
	return ok && s == 8 && v.has(0x1000+24, magic)
}

// isDRBD finds DRBD 8.4 or 9 internal metadata in the last 4 KiB.
func isDRBD(v *sigView) bool {
	if v.size < 0x10000 {
		return false
	}
	m, ok := v.be32(v.size - 4096 + 60)
	return ok && (m == 0x8374026b || m == 0x8374026c || m == 0x8374026d)
}

// probeFilesystem recognises the common file systems and swap.
func probeFilesystem(v *sigView) string {
	if t := probeExt(v); t != "" {
		return t
	}
	switch {
	case v.has(0, "XFSB"):
		return "xfs"
	case v.has(0x10040, "_BHRfS_M"):
		return "btrfs"
	}
	// Swap's signature ends its first page, whose size depends on the
	// architecture (4 KiB; 64 KiB on Power).
	for _, page := range []uint64{0x1000, 0x2000, 0x4000, 0x8000, 0x10000} {
		if v.has(page-10, "SWAPSPACE2") || v.has(page-10, "SWAP-SPACE") {
			return "swap"
		}
	}
	return ""
}

// probeExt tells ext2, ext3, ext4 and an external ext journal (jbd) apart by
// their feature flags, as blkid does.
func probeExt(v *sigView) string {
	const (
		sb            = 1024
		hasJournal    = 0x4
		journalDev    = 0x8
		ext2Incompat  = 0x12 // filetype, meta_bg
		ext3Incompat  = 0x16 // filetype, recover, meta_bg
		ext23RoCompat = 0x7  // sparse_super, large_file, btree_dir
	)
	b := v.at(sb, 0x68)
	if b == nil || binary.LittleEndian.Uint16(b[0x38:]) != 0xef53 {
		return ""
	}
	compat := binary.LittleEndian.Uint32(b[0x5c:])
	incompat := binary.LittleEndian.Uint32(b[0x60:])
	roCompat := binary.LittleEndian.Uint32(b[0x64:])
	switch {
	case incompat&journalDev != 0:
		return "jbd"
	case roCompat&^ext23RoCompat != 0:
		return "ext4"
	case compat&hasJournal == 0 && incompat&^ext2Incompat == 0:
		return "ext2"
	case compat&hasJournal != 0 && incompat&^ext3Incompat == 0:
		return "ext3"
	}
	return "ext4"
}
