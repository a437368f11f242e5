package discovery

import (
	"fmt"
	"io"
	"testing"
)

// sparseDevice is a device of size bytes, zero except for its chunks. It
// records every read so that a test can check what was read.
type sparseDevice struct {
	size   int64
	chunks []chunk
	reads  [][2]int64
}

func (d *sparseDevice) ReadAt(p []byte, off int64) (int, error) {
	d.reads = append(d.reads, [2]int64{off, int64(len(p))})
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if off+int64(n) > d.size {
		n = int(d.size - off)
	}
	clear(p[:n])
	for _, c := range d.chunks {
		for i, b := range c.data {
			if pos := c.off + int64(i); pos >= off && pos < off+int64(n) {
				p[pos-off] = b
			}
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestProbeSignature(t *testing.T) {
	for _, tc := range sigCases() {
		t.Run(fmt.Sprintf("%s-%d", tc.name, len(tc.chunks)), func(t *testing.T) {
			dev := &sparseDevice{size: tc.size, chunks: tc.chunks}
			v, err := readSigView(dev, uint64(tc.size))
			if err != nil {
				t.Fatal(err)
			}
			if got := probeSignature(v); got != tc.name {
				t.Errorf("probeSignature = %q, want %q", got, tc.name)
			}
			// Only the ends and the LUKS2 headers at 1, 2 and 4 MiB are read.
			var total int64
			for _, r := range dev.reads {
				total += r[1]
			}
			if limit := int64(2*sigWindow + 3*luksHdrSize); total > limit {
				t.Errorf("read %d bytes (%v), more than %d", total, dev.reads, limit)
			}
		})
	}
}

func TestProbeSignatureSmallDevices(t *testing.T) {
	for _, size := range []int64{0, 511, 4096, 1 << 20, 2 << 20, 2<<20 + 512} {
		dev := &sparseDevice{size: size, chunks: lvm2Label()}
		v, err := readSigView(dev, uint64(size))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		want := ""
		if size >= 1024 {
			want = "LVM2_member"
		}
		if got := probeSignature(v); got != want {
			t.Errorf("size %d: %q, want %q", size, got, want)
		}
	}
	// A device that is shorter than sysfs said is an error, not "nothing".
	if _, err := readSigView(&sparseDevice{size: 4096}, 8192); err == nil {
		t.Error("short read: no error")
	}
}

func TestStackOf(t *testing.T) {
	for _, tc := range []struct {
		fsType, usage string
		stack         bool
	}{
		{"LVM2_member", "raid", true},
		{"zfs_member", "filesystem", true},
		{"linux_raid_member", "raid", true},
		{"isw_raid_member", "raid", true},
		{"ddf_raid_member", "", true},
		{"crypto_LUKS", "crypto", true},
		{"ceph_bluestore", "other", true},
		{"bcache", "other", true},
		{"drbd", "raid", true},
		{"some_future_member", "raid", true},
		{"tcrypt_ish", "crypto", true},
		{"ext4", "filesystem", false},
		{"xfs", "filesystem", false},
		{"btrfs", "filesystem", false},
		{"swap", "other", false},
		{"", "", false},
	} {
		if got := stackOf(tc.fsType, tc.usage) != ""; got != tc.stack {
			t.Errorf("stackOf(%q, %q): stack %v, want %v", tc.fsType, tc.usage, got, tc.stack)
		}
	}
}
