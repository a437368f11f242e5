package discovery

import (
	"encoding/binary"
)

// Real on-disk signatures, written the way the tools that make them lay
// them out (pvcreate, mdadm, cryptsetup, zpool, ceph-volume, make-bcache,
// drbdadm, mkfs, mkswap), reduced to the bytes blkid checks. The fixture
// and real-kernel tests write them into device contents.

// chunk is data at an offset of a device.
type chunk struct {
	off  int64
	data []byte
}

// sigCase is a signature and what discovery must call it.
type sigCase struct {
	name   string // blkid type
	size   int64  // device size the chunks are laid out for
	chunks []chunk
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func put(b []byte, off int, data []byte) { copy(b[off:], data) }

// lvm2Label is pvcreate's label in sector 1.
func lvm2Label() []chunk {
	b := make([]byte, 512)
	put(b, 0, []byte("LABELONE"))
	put(b, 8, le64(1)) // sector_xl: this sector
	put(b, 20, le32(32))
	put(b, 24, []byte("LVM2 001"))
	put(b, 32, []byte("Kz3vY0kQ0d6b0gI1hQ1fX2mN3pR4sT5u"))
	put(b, 16, le32(lvmCRC(b[20:])))
	return []chunk{{512, b}}
}

// lvmCRC is LVM2's label checksum (lib/misc/crc.c), which blkid verifies.
func lvmCRC(data []byte) uint32 {
	tab := [16]uint32{
		0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
		0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
	}
	crc := uint32(0xf597a6cf)
	for _, b := range data {
		crc ^= uint32(b)
		crc = crc>>4 ^ tab[crc&0xf]
		crc = crc>>4 ^ tab[crc&0xf]
	}
	return crc
}

// mdSuper1 is an md v1.x superblock at off (v1.1: 0, v1.2: 4096, v1.0:
// 8 KiB before the 4 KiB-aligned end).
func mdSuper1(off int64) []chunk {
	b := make([]byte, 256)
	put(b, 0, le32(mdMagic))
	put(b, 4, le32(1)) // major_version
	put(b, 16, []byte("0123456789abcdef"))
	put(b, 32, []byte("host:md0"))
	put(b, 72, le32(1)) // raid1
	put(b, 144, le64(uint64(off)/512))
	return []chunk{{off, b}}
}

// mdSuper090BE is an md v0.90 superblock written by a big-endian host (Power
// before ppc64le) in the last 64 KiB-aligned 64 KiB.
func mdSuper090BE(size int64) []chunk {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b, mdMagic)
	binary.BigEndian.PutUint32(b[4:], 0)
	binary.BigEndian.PutUint32(b[8:], 90)
	return []chunk{{size&^0xffff - 0x10000, b}}
}

// luks1Header is cryptsetup's LUKS1 header (version 1, big-endian).
func luks1Header() []chunk {
	b := make([]byte, 592)
	put(b, 0, []byte("LUKS\xba\xbe"))
	binary.BigEndian.PutUint16(b[6:], 1)
	put(b, 8, []byte("aes"))
	put(b, 40, []byte("xts-plain64"))
	put(b, 72, []byte("sha256"))
	put(b, 168, []byte("0b3c6a2c-4a7e-4d31-9a57-2f7c9a0d3b11"))
	return []chunk{{0, b}}
}

// luks2Secondary is only the second LUKS2 header at 16 KiB, as a device
// whose first header was overwritten shows it.
func luks2Secondary() []chunk { return luks2SecondaryAt(0x4000, 0x4000) }

// luks2SecondaryAt is a LUKS2 secondary header at off that says it is at
// recorded.
func luks2SecondaryAt(off, recorded int64) []chunk {
	b := make([]byte, 512)
	put(b, 0, []byte("SKUL\xba\xbe"))
	binary.BigEndian.PutUint16(b[6:], 2)
	binary.BigEndian.PutUint64(b[8:], 0x4000)
	binary.BigEndian.PutUint64(b[256:], uint64(recorded))
	return []chunk{{off, b}}
}

// zfsLabels are the four vdev labels of a pool member of size bytes, each
// with a few uberblocks in its ring (native byte order of a little-endian
// host).
func zfsLabels(size int64) []chunk {
	const labelSize = 256 << 10
	align := size % labelSize
	var out []chunk
	for _, label := range []int64{0, labelSize, size - 2*labelSize - align, size - labelSize - align} {
		for _, slot := range []int64{4, 5} {
			ub := make([]byte, 40)
			put(ub, 0, le64(0x00bab10c))
			put(ub, 8, le64(5000)) // SPA version
			put(ub, 16, le64(uint64(slot)))
			out = append(out, chunk{label + 128<<10 + slot<<10, ub})
		}
	}
	return out
}

func blueStoreLabel() []chunk {
	return []chunk{{0, []byte("bluestore block device\n5f3a6c2e-3b1d-4f0e-9d8c-7a6b5c4d3e2f\n")}}
}

func bcacheSuper() []chunk {
	b := make([]byte, 64)
	put(b, 8, le64(8)) // offset: sector 8
	put(b, 16, le64(1))
	put(b, 24, []byte("\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"))
	return []chunk{{0x1000, b}}
}

func drbdMeta(size int64) []chunk {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[60:], 0x8374026d) // DRBD 9
	return []chunk{{size - 4096, b}}
}

// extSuper is an ext superblock with the given feature flags.
func extSuper(compat, incompat, roCompat uint32) []chunk {
	b := make([]byte, 1024)
	put(b, 0x38, []byte{0x53, 0xef})
	put(b, 0x5c, le32(compat))
	put(b, 0x60, le32(incompat))
	put(b, 0x64, le32(roCompat))
	return []chunk{{1024, b}}
}

// swapHeader is mkswap's header for pages of the given size: version 1 and
// the last page at 1 KiB, the magic at the end of the first page.
func swapHeader(size, page int64) []chunk {
	return []chunk{
		{1024, append(le32(1), le32(uint32(size/page-1))...)},
		{page - 10, []byte("SWAPSPACE2")},
	}
}

// sigCases are one device per signature discovery knows, at sizes where
// blkid would find them.
func sigCases() []sigCase {
	const size = 128 << 20 // ZFS wants at least 64 MiB
	odd := int64(size + 7*4096 + 512)
	return []sigCase{
		{"LVM2_member", size, lvm2Label()},
		{"linux_raid_member", size, mdSuper1(4096)},                     // v1.2
		{"linux_raid_member", size, mdSuper1(0)},                        // v1.1
		{"linux_raid_member", odd, mdSuper1(odd&^0xfff - 0x2000)},       // v1.0
		{"linux_raid_member", odd, mdSuper090BE(odd)},                   // v0.90
		{"crypto_LUKS", size, luks1Header()},                            //
		{"crypto_LUKS", size, luks2Secondary()},                         //
		{"zfs_member", size, zfsLabels(size)},                           //
		{"zfs_member", odd, zfsLabels(odd)},                             // end labels 256 KiB-aligned
		{"ceph_bluestore", size, blueStoreLabel()},                      //
		{"bcache", size, bcacheSuper()},                                 //
		{"drbd", size, drbdMeta(size)},                                  //
		{"ext4", size, extSuper(0x4, 0x2|0x40|0x80|0x200, 0x1|0x2|0x8)}, // mkfs.ext4 defaults
		{"ext3", size, extSuper(0x4, 0x2, 0x1|0x2)},                     //
		{"ext2", size, extSuper(0, 0x2, 0x1)},                           //
		{"jbd", size, extSuper(0x4, 0x8, 0)},                            //
		{"xfs", size, []chunk{{0, []byte("XFSB\x00\x00\x10\x00")}}},     //
		{"btrfs", size, []chunk{{0x10040, []byte("_BHRfS_M")}}},         //
		{"swap", size, swapHeader(size, 0x1000)},                        // 4 KiB pages
		{"swap", size, swapHeader(size, 0x10000)},                       // 64 KiB pages (Power)
		{"", size, nil}, // never written
		{"", size, []chunk{{512, []byte("LABELONE\x05\x00\x00\x00")}}}, // a label naming another sector
		{"", size, mdSuper1(8192)},                                     // md v1 at no place mdadm puts it
		{"", 32 << 20, zfsLabels(32 << 20)},                            // too small for ZFS, as blkid says
		{"", size, zfsLabels(size)[:2]},                                // one label: too few uberblocks
		{"crypto_LUKS", size, luks2SecondaryAt(0x20000, 0x8000)},       // blkid 2.38 does not check the recorded offset
		{"", size, []chunk{{0, []byte("bluestore block")}}},            // cut short
	}
}
