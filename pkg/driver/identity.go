package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// What a claim holds is pinned by identity at its first Prepare: each node
// records the discovery.Device.Identity of its device, and the claim the
// boot in which its numbers were right. This file finds where a recorded
// node's device is now; restore.go acts on it. See docs/design.md.

const (
	bootIDPath = "/proc/sys/kernel/random/boot_id"
	procStat   = "/proc/stat"
)

// bootInfo says which boot the plugin runs in. The boot ID is the kernel's
// (not namespaced: a container reads the host's); btime is when it booted,
// which tells whether a file was written in this boot.
type bootInfo struct {
	id   string
	time time.Time
}

// readBoot reads the boot ID and boot time; a part that cannot be read is
// left empty, which makes every record count as one of another boot.
func readBoot() (bootInfo, error) {
	var b bootInfo
	var errs []error
	if data, err := os.ReadFile(bootIDPath); err == nil {
		b.id = strings.TrimSpace(string(data))
	} else {
		errs = append(errs, err)
	}
	data, err := os.ReadFile(procStat)
	if err == nil {
		err = fmt.Errorf("%s has no btime line", procStat)
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
				var sec int64
				if sec, err = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil {
					b.time = time.Unix(sec, 0)
				}
				break
			}
		}
	}
	if err != nil {
		errs = append(errs, err)
	}
	if b.id == "" && !b.time.IsZero() {
		// Every Linux since 2.6 has a boot ID; the boot time stands in.
		b.id = "btime:" + strconv.FormatInt(b.time.Unix(), 10)
	}
	return b, errors.Join(errs...)
}

// sameBoot reports whether a record of boot id was made in this boot.
func (s *State) sameBoot(id string) bool { return id != "" && id == s.boot.id }

// bootOfFile is the boot a file without a boot ID of its own was written
// in: this one when it was last changed after this boot began, else
// unknown.
func (s *State) bootOfFile(modTime time.Time) string {
	if s.boot.id == "" || s.boot.time.IsZero() || modTime.Before(s.boot.time) {
		return ""
	}
	return s.boot.id
}

// location is where a device that discovery saw is now.
type location struct {
	path         string
	typ          string // "b" or "c"
	major, minor uint32
	identity     string
	published    bool
	inUseAllowed bool
	// reason is why it is not published.
	reason string
}

func (l *location) nodeKey() string { return fmt.Sprintf("%s %d:%d", l.typ, l.major, l.minor) }

func (l *location) describe() string {
	s := fmt.Sprintf("%s (%s, identity %s)", l.path, l.nodeKey(), l.identity)
	if !l.published {
		s += ", not published: " + l.reason
	}
	return s
}

// seenIndex finds the devices an inventory saw, published or left out, by
// identity and by numbers.
type seenIndex struct {
	byID  map[string][]location
	byNum map[string][]location
}

// seen builds the index of idx's inventory once, when first asked.
func (idx *inventoryIndex) seen() *seenIndex {
	if idx.seenIdx != nil {
		return idx.seenIdx
	}
	si := &seenIndex{byID: map[string][]location{}, byNum: map[string][]location{}}
	add := func(l location) {
		if l.identity != "" {
			si.byID[l.identity] = append(si.byID[l.identity], l)
		}
		k := l.nodeKey()
		si.byNum[k] = append(si.byNum[k], l)
	}
	if inv := idx.inv; inv != nil {
		for gi := range inv.Groups {
			for _, d := range inv.Groups[gi].Devices {
				add(location{path: d.Path, typ: cdiType(d.Type), major: d.Major, minor: d.Minor,
					identity: d.Identity, published: true, inUseAllowed: d.InUseAllowed})
			}
		}
		for _, e := range inv.Excluded {
			if e.Type == "" {
				continue // not a device discovery looked at
			}
			add(location{path: e.Path, typ: cdiType(e.Type), major: e.Major, minor: e.Minor,
				identity: e.Identity, reason: e.Reason})
		}
	}
	idx.seenIdx = si
	return si
}

// now says what is at a node's recorded path and numbers now, for messages.
func (si *seenIndex) now(n *PlannedNode) string {
	for _, l := range si.byNum[n.nodeKey()] {
		if l.path == n.HostPath {
			return fmt.Sprintf("; %s is now %s", n.describe(), l.describe())
		}
	}
	return fmt.Sprintf("; nothing is at %s now", n.describe())
}

// find returns where the device a recorded node names is now, or why it
// cannot be told. same says whether the node's numbers were recorded in
// this boot.
func (si *seenIndex) find(n *PlannedNode, same bool) (*location, string) {
	was := n.describe()
	if n.Identity == "" {
		// Recorded by the release before identities, or recovered from a
		// spec file: only the numbers of this boot say anything.
		if !same {
			return nil, fmt.Sprintf("the claim got %s before the node restarted, and the record does not say which device "+
				"that was (it was written by an older version of the plugin, or recovered from the CDI spec file), so the "+
				"device with that name or number now may be another one", was)
		}
		for _, l := range si.byNum[n.nodeKey()] {
			if l.path == n.HostPath {
				return &l, ""
			}
		}
		return nil, "the claim got " + was + ", which is gone from the node" + si.now(n)
	}
	if !same && !discovery.IdentityIsStable(n.Identity) {
		return nil, fmt.Sprintf("the claim got %s, which has nothing stable to tell it by (identity %s: no WWN, serial, "+
			"UUID or udev path), and the node restarted since, so the device with that name now may be another one", was, n.Identity)
	}
	locs := si.byID[n.Identity]
	switch {
	case len(locs) == 1:
		return &locs[0], ""
	case len(locs) == 0:
		return nil, fmt.Sprintf("the claim got %s, identity %s, and no device on the node has that identity now%s",
			was, n.Identity, si.now(n))
	}
	paths := make([]string, len(locs))
	for i := range locs {
		if same && locs[i].path == n.HostPath && locs[i].major == n.Major && locs[i].minor == n.Minor {
			return &locs[i], ""
		}
		paths[i] = locs[i].path
	}
	return nil, fmt.Sprintf("the claim got %s, identity %s, and %d devices have that identity now (%s), so which one the "+
		"claim had cannot be told (paths of one LUN without a multipath map, or disks with one serial)",
		was, n.Identity, len(locs), strings.Join(paths, ", "))
}

// exclusiveNode reports whether a claim's device holds its nodes
// exclusively. A recovered record does not say: its group does, else it
// counts as exclusive.
func exclusiveNode(pc *PreparedClaim, d *PreparedDevice, idx *inventoryIndex) bool {
	if d.AdminAccess {
		return false
	}
	if !pc.Recovered {
		return d.Exclusive
	}
	if e, ok := idx.byName[d.Device]; ok {
		return e.group.Sharing.Mode != v1alpha1.SharingShared
	}
	return true
}

// fromV1 takes over the records of a checkpoint of the release before
// identities. Their numbers are trusted only in the boot they were written
// in, told by the file's modification time against the boot time: a file
// changed since this boot began holds numbers of this boot. The nodes'
// identities are then adopted from the devices at those numbers (verify);
// records of an earlier boot fail closed.
func (s *State) fromV1(ctx context.Context, cp *Checkpoint, meta checkpointMeta) {
	boot := s.bootOfFile(meta.modTime)
	for _, pc := range cp.Claims {
		pc.BootID = boot
	}
	klog.FromContext(ctx).Info("Read a checkpoint of the previous format; it is rewritten in the current one",
		"path", s.checkpointPath, "version", meta.version, "claims", len(cp.Claims), "writtenInThisBoot", boot != "")
}

// holderKeys are the keys a recorded node holds: its numbers while they
// are this boot's (or all there is), and its device's identity, which
// still names the device after it moved.
func (s *State) holderKeys(pc *PreparedClaim, n *PlannedNode) []string {
	var keys []string
	if n.Identity == "" || s.sameBoot(pc.BootID) {
		keys = append(keys, n.nodeKey())
	}
	if n.Identity != "" {
		keys = append(keys, "id "+n.Identity)
	}
	return keys
}

// holdersOf lists the claims that hold a node of pc, by either key.
func (ss *session) holdersOf(pc *PreparedClaim, n *PlannedNode) []holder {
	var out []holder
	for _, k := range ss.s.holderKeys(pc, n) {
		out = append(out, ss.holders[k]...)
	}
	return out
}
