package discoverytest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// A Tree stands for a host that runs udev: it has /run/udev/control (a
// regular file where the host has udevd's socket) and every AddBlock writes
// the device's udev database entry, /run/udev/data/b<major>:<minor>, with
// Block.Udev as its properties, before the /dev node appears. NoUdev makes
// a host without udev; Block.NoUdev a device udev has not processed yet.
//
// Device contents, which discovery reads on hosts without udev, are sparse
// files of the device's size under <root>/.blockdata that Tree.Open serves
// (hand it to discovery.WithBlockOpener): zeros unless WriteDevice wrote
// something. The real device a fixture's node numbers name is never opened.

const (
	udevData    = "/run/udev/data"
	udevControl = "/run/udev/control"
	blockData   = "/.blockdata"
)

func (tr *Tree) initUdev() {
	tr.t.Helper()
	tr.Mkdir(udevData)
	tr.File(udevControl, "")
	tr.Mkdir(blockData)
}

// NoUdev turns the tree into a host without udev: no /run/udev at all, and
// AddBlock writes no database entries.
func (tr *Tree) NoUdev() {
	tr.t.Helper()
	tr.noUdev = true
	tr.Remove("/run/udev")
}

// UdevEntry writes the udev database entry of an added device, as udev does
// when it has processed the device's event (a new file renamed into place).
// props are its E: properties, e.g. {"ID_FS_TYPE": "LVM2_member"}.
func (tr *Tree) UdevEntry(kname string, props map[string]string) {
	tr.t.Helper()
	dev, ok := tr.devs[kname]
	if !ok {
		tr.t.Fatalf("block device %s not added", kname)
	}
	var b strings.Builder
	b.WriteString("I:1000000\n")
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "E:%s=%s\n", k, props[k])
	}
	b.WriteString("G:systemd\nQ:systemd\nV:1\n")
	name := fmt.Sprintf("%s/b%d:%d", udevData, dev.Major, dev.Minor)
	tmp := fmt.Sprintf("%s/.#b%d:%d", udevData, dev.Major, dev.Minor)
	tr.File(tmp, b.String())
	if err := os.Rename(tr.Path(tmp), tr.Path(name)); err != nil {
		tr.t.Fatal(err)
	}
}

// WriteDevice writes data at offset off into the contents of an added
// device.
func (tr *Tree) WriteDevice(kname string, off int64, data []byte) {
	tr.t.Helper()
	dev, ok := tr.devs[kname]
	if !ok {
		tr.t.Fatalf("block device %s not added", kname)
	}
	f, err := tr.openData(dev)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		tr.t.Fatal(err)
	}
}

// Resize changes the size of an added device in sysfs and in its contents,
// as a grown LUN or a re-bound loop device shows it.
func (tr *Tree) Resize(kname string, size uint64) {
	tr.t.Helper()
	dev, ok := tr.devs[kname]
	if !ok {
		tr.t.Fatalf("block device %s not added", kname)
	}
	tr.mu.Lock()
	tr.sizes[dev] = size
	tr.mu.Unlock()
	tr.File(tr.SysDir(kname)+"/size", fmt.Sprint(size/512)+"\n")
}

// Unreadable makes Open fail for the device at hostPath with "permission
// denied", as an open of a host block device does without device access.
func (tr *Tree) Unreadable(hostPath string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.unreadable[hostPath] = true
}

// Open opens the contents of the block device with these numbers read-only:
// the function to give discovery.WithBlockOpener.
func (tr *Tree) Open(hostPath string, major, minor uint32) (*os.File, error) {
	tr.mu.Lock()
	denied := tr.unreadable[hostPath]
	var dev DevNum
	found := false
	for _, d := range tr.devs {
		if d.Major == major && d.Minor == minor {
			dev, found = d, true
		}
	}
	tr.mu.Unlock()
	switch {
	case denied:
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: syscall.EACCES}
	case !found:
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: syscall.ENXIO}
	}
	f, err := tr.openData(dev)
	if err != nil {
		return nil, err
	}
	f.Close()
	return os.Open(tr.dataPath(dev))
}

func (tr *Tree) dataPath(dev DevNum) string {
	return tr.Path(fmt.Sprintf("%s/%d:%d", blockData, dev.Major, dev.Minor))
}

// openData opens the contents file for writing, making it (sparse, of the
// device's size) first.
func (tr *Tree) openData(dev DevNum) (*os.File, error) {
	p := tr.dataPath(dev)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	tr.mu.Lock()
	size := tr.sizes[dev]
	tr.mu.Unlock()
	if fi, err := f.Stat(); err == nil && fi.Size() != int64(size) {
		if err := f.Truncate(int64(size)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}
