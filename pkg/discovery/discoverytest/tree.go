// Package discoverytest lays out fake host roots for tests of device
// discovery: the sysfs, /dev and /proc files package discovery reads.
//
// A Tree is a directory that stands for the host's "/". Device nodes are
// real (mknod) when the test runs as root, which CI does. Without
// CAP_MKNOD a node is an empty regular file plus an entry in a table, and
// Tree.Stat returns the function to hand to discovery.WithStat so that
// discovery sees the recorded type and numbers. That fake exists only
// because mknod(2) needs the capability; everything else (directories,
// attributes, symbolic links) is real in both modes.
package discoverytest

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// DevNum is a device number.
type DevNum struct {
	Major, Minor uint32
}

// Block describes a block device to lay out in sysfs and /dev.
type Block struct {
	// Name is the kernel name: sda, sda1, nvme0n1, dm-0, cciss!c0d0.
	Name string
	// Dev is the device number sysfs reports (and the node's, unless
	// NodeDev is set).
	Dev DevNum
	// Size in bytes; sysfs gets it in 512-byte sectors.
	Size uint64
	// Parent makes the device a partition of the named disk, which must
	// have been added before.
	Parent string

	// Attributes of the underlying hardware device (sysfs device/...).
	Model, Vendor, Serial, WWID string
	// VPDSerial is written as a SCSI VPD page 0x80 (device/vpd_pg80).
	VPDSerial string
	// Attrs are more files relative to the device's sysfs directory, such
	// as "wwid" or "serial" for NVMe namespaces and virtio disks.
	Attrs map[string]string

	Rotational, Removable, ReadOnly, Hidden bool

	// DMName and DMUUID fill dm/name and dm/uuid. With DMName set
	// /dev/mapper/<DMName> links to the node unless NoMapperLink.
	DMName, DMUUID string
	NoMapperLink   bool

	// Slaves are the devices this one is stacked on; they must have been
	// added before. Their holders/ directories get the back links.
	Slaves []string
	// ByID are /dev/disk/by-id names that link to the node.
	ByID []string

	// NoNode leaves /dev without a node for the device.
	NoNode bool
	// NodeDev gives the /dev node other numbers than sysfs has.
	NodeDev *DevNum
	// SysDir overrides the device's sysfs directory (a host path under
	// /sys/devices). Partitions always live in their disk's directory.
	SysDir string

	// BackingFile fills loop/backing_file, as the kernel does for a bound
	// loop device: the path of the file or device node behind it.
	BackingFile string
	// Udev are the properties of the device's udev database entry, e.g.
	// {"ID_FS_TYPE": "ext4"} (see udev.go). NoUdev leaves the entry out,
	// as before udev has processed the device.
	Udev   map[string]string
	NoUdev bool
	// DiskSeq fills the diskseq attribute when not 0.
	DiskSeq uint64
}

// Tree is a fake host root.
type Tree struct {
	// Root is the directory that stands for the host's "/".
	Root string

	t    testing.TB
	fake bool

	mu         sync.Mutex
	nodes      map[string]fakeNode // real path -> node (fake mode)
	devs       map[string]DevNum   // kernel name -> sysfs numbers
	sizes      map[DevNum]uint64
	unreadable map[string]bool // host paths Open refuses
	noUdev     bool

	sysDirs map[string]string // kernel name -> sysfs host path
	mounts  []string
	swaps   []string
	hosts   int
}

type fakeNode struct {
	mode         fs.FileMode
	major, minor uint32
}

// New makes a Tree in a new temporary directory. Device nodes are real when
// mknod works (root), fake otherwise.
func New(t testing.TB) *Tree { return NewAt(t, t.TempDir()) }

// NewFake makes a Tree whose device nodes are always fake, to test the
// non-root way even as root.
func NewFake(t testing.TB) *Tree { return newTree(t, t.TempDir(), true) }

// NewAt makes a Tree in dir, which must exist and should be empty.
func NewAt(t testing.TB, dir string) *Tree { return newTree(t, dir, !canMknod(dir)) }

func newTree(t testing.TB, dir string, fake bool) *Tree {
	t.Helper()
	tr := &Tree{
		Root:    filepath.Clean(dir),
		t:       t,
		fake:    fake,
		nodes:   make(map[string]fakeNode),
		sysDirs: make(map[string]string),

		devs:       make(map[string]DevNum),
		sizes:      make(map[DevNum]uint64),
		unreadable: make(map[string]bool),
	}
	for _, d := range []string{"/dev", "/sys/class/block", "/sys/devices/virtual/block", "/proc/1"} {
		tr.Mkdir(d)
	}
	tr.writeMounts()
	tr.writeSwaps()
	tr.initUdev()
	return tr
}

// canMknod tries to make a block node in dir.
func canMknod(dir string) bool {
	if os.Geteuid() != 0 {
		return false
	}
	p := filepath.Join(dir, ".mknod-probe")
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 250))); err != nil {
		return false
	}
	_ = os.Remove(p)
	return true
}

// Fake reports whether device nodes are fake.
func (tr *Tree) Fake() bool { return tr.fake }

// Stat returns the stat function to give discovery.WithStat: nil when the
// nodes are real, else one that reports the recorded nodes.
func (tr *Tree) Stat() func(string) (fs.FileMode, uint32, uint32, error) {
	if !tr.fake {
		return nil
	}
	return tr.statFake
}

func (tr *Tree) statFake(p string) (fs.FileMode, uint32, uint32, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, 0, 0, err
	}
	if fi.Mode().IsRegular() {
		tr.mu.Lock()
		n, ok := tr.nodes[filepath.Clean(p)]
		tr.mu.Unlock()
		if ok {
			return n.mode, n.major, n.minor, nil
		}
	}
	return fi.Mode().Type(), 0, 0, nil
}

// Path maps a host path to its place in the tree.
func (tr *Tree) Path(hostPath string) string {
	return filepath.Join(tr.Root, filepath.FromSlash(hostPath))
}

// Mkdir makes a host directory and its parents.
func (tr *Tree) Mkdir(hostPath string) {
	tr.t.Helper()
	if err := os.MkdirAll(tr.Path(hostPath), 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

// File writes a host file, making its directory.
func (tr *Tree) File(hostPath, content string) {
	tr.t.Helper()
	tr.Mkdir(path.Dir(hostPath))
	if err := os.WriteFile(tr.Path(hostPath), []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

// Symlink makes a host symbolic link to target, as given (relative or
// absolute host path).
func (tr *Tree) Symlink(hostPath, target string) {
	tr.t.Helper()
	tr.Mkdir(path.Dir(hostPath))
	if err := os.Symlink(target, tr.Path(hostPath)); err != nil {
		tr.t.Fatal(err)
	}
}

// relLink makes a symbolic link with a target relative to the link's
// directory, as sysfs and udev do.
func (tr *Tree) relLink(hostPath, hostTarget string) {
	tr.t.Helper()
	rel, err := filepath.Rel(path.Dir(hostPath), hostTarget)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.Symlink(hostPath, filepath.ToSlash(rel))
}

// Remove deletes a host path and everything under it.
func (tr *Tree) Remove(hostPath string) {
	tr.t.Helper()
	real := tr.Path(hostPath)
	if err := os.RemoveAll(real); err != nil {
		tr.t.Fatal(err)
	}
	tr.mu.Lock()
	delete(tr.nodes, filepath.Clean(real))
	tr.mu.Unlock()
}

// CharNode makes a character device node.
func (tr *Tree) CharNode(hostPath string, major, minor uint32) {
	tr.t.Helper()
	tr.node(hostPath, unix.S_IFCHR, fs.ModeDevice|fs.ModeCharDevice, major, minor)
}

// BlockNode makes a block device node (without any sysfs entry).
func (tr *Tree) BlockNode(hostPath string, major, minor uint32) {
	tr.t.Helper()
	tr.node(hostPath, unix.S_IFBLK, fs.ModeDevice, major, minor)
}

func (tr *Tree) node(hostPath string, kind uint32, mode fs.FileMode, major, minor uint32) {
	tr.t.Helper()
	tr.Mkdir(path.Dir(hostPath))
	real := filepath.Clean(tr.Path(hostPath))
	if !tr.fake {
		if err := unix.Mknod(real, kind|0o600, int(unix.Mkdev(major, minor))); err != nil {
			tr.t.Fatalf("mknod %s: %v", real, err)
		}
		return
	}
	// Record first: a watcher may look as soon as the file appears.
	tr.mu.Lock()
	tr.nodes[real] = fakeNode{mode: mode, major: major, minor: minor}
	tr.mu.Unlock()
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		tr.t.Fatal(err)
	}
}

// DevPath is the /dev path of a kernel name ("!" stands for "/").
func DevPath(kname string) string {
	return "/dev/" + strings.ReplaceAll(kname, "!", "/")
}

// SysDir returns the sysfs directory (host path) of an added device.
func (tr *Tree) SysDir(kname string) string { return tr.sysDirs[kname] }

func isVirtual(name string) bool {
	for _, p := range []string{"loop", "dm-", "md", "zram", "ram", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// AddBlock lays out a block device: its sysfs directory, the
// /sys/class/block link, holders/slaves links, then the /dev node and its
// /dev/mapper and /dev/disk/by-id links.
func (tr *Tree) AddBlock(b Block) {
	tr.t.Helper()
	if _, dup := tr.sysDirs[b.Name]; dup {
		tr.t.Fatalf("block device %s added twice", b.Name)
	}
	var sysDir, devDir string
	switch {
	case b.Parent != "":
		pd, ok := tr.sysDirs[b.Parent]
		if !ok {
			tr.t.Fatalf("partition %s: parent %s not added", b.Name, b.Parent)
		}
		sysDir = pd + "/" + b.Name
	case b.SysDir != "":
		sysDir = b.SysDir
	case isVirtual(b.Name):
		sysDir = "/sys/devices/virtual/block/" + b.Name
	case strings.HasPrefix(b.Name, "nvme"):
		ctrl := b.Name
		if i := strings.Index(b.Name[4:], "n"); i >= 0 {
			ctrl = b.Name[:4+i]
		}
		devDir = "/sys/devices/pci0000:00/0000:00:04.0/nvme/" + ctrl
		sysDir = devDir + "/" + b.Name
	default:
		tr.hosts++
		n := tr.hosts
		devDir = fmt.Sprintf("/sys/devices/pci0000:00/0000:00:10.0/host%d/target%d:0:0/%d:0:0:0", n, n, n)
		sysDir = devDir + "/block/" + b.Name
	}
	tr.sysDirs[b.Name] = sysDir

	attr := func(name, value string) { tr.File(sysDir+"/"+name, value+"\n") }
	bit := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	attr("dev", fmt.Sprintf("%d:%d", b.Dev.Major, b.Dev.Minor))
	attr("size", fmt.Sprint(b.Size/512))
	attr("ro", bit(b.ReadOnly))
	attr("uevent", fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=%s", b.Dev.Major, b.Dev.Minor,
		strings.TrimPrefix(DevPath(b.Name), "/dev/")))
	tr.Mkdir(sysDir + "/holders")
	if b.Parent != "" {
		attr("partition", partNumber(b.Name))
	} else {
		attr("removable", bit(b.Removable))
		attr("queue/rotational", bit(b.Rotational))
		tr.Mkdir(sysDir + "/slaves")
		if b.Hidden {
			attr("hidden", "1")
		}
	}
	if b.DMName != "" || b.DMUUID != "" {
		attr("dm/name", b.DMName)
		attr("dm/uuid", b.DMUUID)
	}
	hw := map[string]string{"model": b.Model, "vendor": b.Vendor, "serial": b.Serial, "wwid": b.WWID}
	needDev := b.VPDSerial != ""
	for _, v := range hw {
		needDev = needDev || v != ""
	}
	if needDev && devDir == "" {
		devDir = sysDir + "/device-attrs"
	}
	if devDir != "" {
		tr.Mkdir(devDir)
		tr.relLink(sysDir+"/device", devDir)
		for k, v := range hw {
			if v != "" {
				// SCSI pads model and vendor with blanks.
				tr.File(devDir+"/"+k, v+"   \n")
			}
		}
		if b.VPDSerial != "" {
			page := []byte{0, 0x80, byte(len(b.VPDSerial) >> 8), byte(len(b.VPDSerial))}
			tr.File(devDir+"/vpd_pg80", string(append(page, b.VPDSerial...)))
		}
	}
	if b.BackingFile != "" {
		attr("loop/backing_file", b.BackingFile)
	}
	for k, v := range b.Attrs {
		attr(k, v)
	}
	for _, s := range b.Slaves {
		sd, ok := tr.sysDirs[s]
		if !ok {
			tr.t.Fatalf("%s: slave %s not added", b.Name, s)
		}
		tr.relLink(sysDir+"/slaves/"+s, sd)
		tr.relLink(sd+"/holders/"+b.Name, sysDir)
	}
	if b.DiskSeq != 0 {
		attr("diskseq", fmt.Sprint(b.DiskSeq))
	}
	tr.relLink("/sys/class/block/"+b.Name, sysDir)
	tr.mu.Lock()
	tr.devs[b.Name] = b.Dev
	tr.sizes[b.Dev] = b.Size
	tr.mu.Unlock()
	if !tr.noUdev && !b.NoUdev {
		tr.UdevEntry(b.Name, b.Udev)
	}

	dev := DevPath(b.Name)
	if !b.NoNode {
		n := b.Dev
		if b.NodeDev != nil {
			n = *b.NodeDev
		}
		tr.BlockNode(dev, n.Major, n.Minor)
	}
	if b.DMName != "" && !b.NoMapperLink {
		tr.relLink("/dev/mapper/"+b.DMName, dev)
	}
	for _, id := range b.ByID {
		tr.relLink("/dev/disk/by-id/"+id, dev)
	}
}

// RemoveBlock takes a device away as a hot unplug does. sysfs goes first
// and the /dev node and links last, so a watcher woken by the /dev change
// sees the whole removal (as AddBlock makes the node last). Partitions and
// the holders links of other devices are left as they are.
func (tr *Tree) RemoveBlock(kname string) {
	tr.t.Helper()
	sysDir, ok := tr.sysDirs[kname]
	if !ok {
		tr.t.Fatalf("block device %s not added", kname)
	}
	tr.Remove("/sys/class/block/" + kname)
	tr.Remove(sysDir)
	delete(tr.sysDirs, kname)
	tr.mu.Lock()
	n := tr.devs[kname]
	delete(tr.devs, kname)
	tr.mu.Unlock()
	tr.Remove(fmt.Sprintf("%s/b%d:%d", udevData, n.Major, n.Minor))
	dev := DevPath(kname)
	for _, dir := range []string{"/dev/mapper", "/dev/disk/by-id"} {
		entries, _ := os.ReadDir(tr.Path(dir))
		for _, e := range entries {
			link := dir + "/" + e.Name()
			if target, err := os.Readlink(tr.Path(link)); err == nil && path.Join(dir, target) == dev {
				tr.Remove(link)
			}
		}
	}
	tr.Remove(dev)
}

// partNumber is the trailing number of a partition name (sda12 -> 12).
func partNumber(name string) string {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) {
		return "1"
	}
	return name[i:]
}

// Mount adds a line to /proc/1/mountinfo for a whole file system (root
// "/"). Spaces and other special characters in the source and mount point
// are escaped as the kernel does.
func (tr *Tree) Mount(source string, dev DevNum, mountPoint, fsType string) {
	tr.t.Helper()
	tr.MountRoot(source, dev, "/", mountPoint, fsType)
}

// MountRoot adds a line to /proc/1/mountinfo that mounts the path root of
// a file system, as a bind mount does.
func (tr *Tree) MountRoot(source string, dev DevNum, root, mountPoint, fsType string) {
	tr.t.Helper()
	id := 100 + len(tr.mounts)
	tr.mounts = append(tr.mounts, fmt.Sprintf("%d 1 %d:%d %s %s rw,relatime shared:%d - %s %s rw",
		id, dev.Major, dev.Minor, escape(root), escape(mountPoint), id, fsType, escape(source)))
	tr.writeMounts()
}

// DevtmpfsDev is the device number the fixture gives devtmpfs.
var DevtmpfsDev = DevNum{Major: 0, Minor: 5}

// BindNode adds the mountinfo line of a bind mount of the device node
// hostNode (/dev/sdc) at mountPoint, as the kubelet makes for a pod's
// block-mode volume: devtmpfs's number, source "udev", root "/sdc".
func (tr *Tree) BindNode(hostNode, mountPoint string) {
	tr.t.Helper()
	if !strings.HasPrefix(hostNode, "/dev/") {
		tr.t.Fatalf("BindNode %s: not under /dev", hostNode)
	}
	tr.MountRoot("udev", DevtmpfsDev, strings.TrimPrefix(hostNode, "/dev"), mountPoint, "devtmpfs")
}

// Char describes a character device that sysfs lists in a class, such as
// a SCSI generic node or an NVMe controller.
type Char struct {
	// Path is the /dev path of the node.
	Path string
	Dev  DevNum
	// Class and Name make /sys/class/<Class>/<Name>.
	Class, Name string
	// Of is the kernel name of an added block device the node belongs
	// to. Its sysfs directory is placed as the kernel places it:
	// scsi_generic and bsg under the disk's SCSI device (with a device
	// link to it), nvme as the namespace's controller directory,
	// nvme-generic in the controller directory.
	Of string
	// SysDir places the node's sysfs directory (a host path) instead, with
	// no device link.
	SysDir string
}

// AddChar lays out a character device's sysfs directory, its class link
// and its /dev node.
func (tr *Tree) AddChar(c Char) {
	tr.t.Helper()
	sysDir, device := c.SysDir, ""
	if sysDir == "" {
		of, ok := tr.sysDirs[c.Of]
		if !ok {
			tr.t.Fatalf("char %s: block device %q not added", c.Name, c.Of)
		}
		switch c.Class {
		case "scsi_generic", "bsg":
			device = path.Dir(path.Dir(of)) // .../H:C:T:L/block/sda
			sysDir = device + "/" + c.Class + "/" + c.Name
		case "nvme":
			sysDir = path.Dir(of) // .../nvme/nvme0/nvme0n1
			device = path.Dir(path.Dir(sysDir))
		case "nvme-generic":
			device = path.Dir(of)
			sysDir = device + "/" + c.Name
		default:
			tr.t.Fatalf("char %s: class %q needs SysDir", c.Name, c.Class)
		}
	}
	tr.File(sysDir+"/dev", fmt.Sprintf("%d:%d\n", c.Dev.Major, c.Dev.Minor))
	if device != "" {
		if _, err := os.Lstat(tr.Path(sysDir + "/device")); err != nil {
			tr.relLink(sysDir+"/device", device)
		}
	}
	tr.relLink("/sys/class/"+c.Class+"/"+c.Name, sysDir)
	tr.CharNode(c.Path, c.Dev.Major, c.Dev.Minor)
}

// Swap adds a swap partition to /proc/swaps.
func (tr *Tree) Swap(hostPath string) { tr.swap(hostPath, "partition") }

// SwapFile adds a swap file to /proc/swaps.
func (tr *Tree) SwapFile(hostPath string) { tr.swap(hostPath, "file") }

func (tr *Tree) swap(hostPath, kind string) {
	tr.t.Helper()
	tr.swaps = append(tr.swaps, fmt.Sprintf("%-40s%-10s%d\t0\t-2", escape(hostPath), kind, 1048572))
	tr.writeSwaps()
}

func (tr *Tree) writeMounts() {
	tr.t.Helper()
	s := strings.Join(tr.mounts, "\n")
	if s != "" {
		s += "\n"
	}
	tr.File("/proc/1/mountinfo", s)
}

func (tr *Tree) writeSwaps() {
	tr.t.Helper()
	s := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	for _, l := range tr.swaps {
		s += l + "\n"
	}
	tr.File("/proc/swaps", s)
}

// escape writes space, tab, newline and backslash as octal escapes.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
