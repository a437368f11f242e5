package discovery

import (
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Character devices that reach the media of block devices: raw SCSI
// commands (sg, bsg), NVMe admin and I/O commands (controller nodes) and
// NVMe I/O without the block layer (generic namespace nodes). They take the
// in-use and held state of the block devices they reach.
var blockAliasClasses = []struct{ class, what string }{
	{"scsi_generic", "SCSI generic node"},
	{"bsg", "SCSI bsg node"},
	{"nvme", "NVMe controller node"},
	{"nvme-generic", "NVMe generic node"},
}

// blockAlias is a character device that reaches block devices.
type blockAlias struct {
	what string
	// blocks are the kernel names of the whole block devices (no
	// partitions) it reaches, sorted.
	blocks []string
}

// blockAliases maps the device numbers of the character devices in the
// blockAliasClasses to the block devices they reach: those below the SCSI
// device (sg, bsg; for a bsg node of a SCSI host, every disk behind it),
// the namespaces of an NVMe controller, and an NVMe generic node's own
// namespace (ng0n1 is nvme0n1). A hidden NVMe multipath path (nvme0c1n1)
// stands for its head (nvme0n1).
func (h *hostFS) blockAliases(s *blockSet) map[uint64]*blockAlias {
	out := make(map[uint64]*blockAlias)
	var sysDirs map[string]string
	for _, c := range blockAliasClasses {
		classDir := "/sys/class/" + c.class
		for _, name := range h.list(classDir) {
			entry := classDir + "/" + name
			b, ok := h.readRawAt(unix.AT_FDCWD, h.real(entry+"/dev"))
			if !ok {
				continue
			}
			maj, min, err := parseDevNum(cleanString(b))
			if err != nil {
				continue
			}
			dir, err := h.resolve(entry)
			if err != nil {
				continue
			}
			a := &blockAlias{what: c.what}
			var scope string
			switch c.class {
			case "nvme":
				scope = dir
			case "nvme-generic":
				if d := s.byName["nvme"+strings.TrimPrefix(name, "ng")]; d != nil {
					a.blocks = []string{nvmeHead(s, d.info.KernelName)}
				} else {
					scope = parentDir(dir) // the controller
				}
			default:
				if scope, err = h.resolve(entry + "/device"); err != nil {
					// No device link: the parent of the class
					// directory (.../0:0:0:0/scsi_generic/sg0).
					scope = parentDir(parentDir(dir))
				}
			}
			if scope != "" {
				if sysDirs == nil {
					sysDirs = h.blockSysDirs(s)
				}
				seen := make(map[string]bool)
				for kname, sd := range sysDirs {
					if k := nvmeHead(s, kname); strings.HasPrefix(sd, scope+"/") && !seen[k] {
						seen[k] = true
						a.blocks = append(a.blocks, k)
					}
				}
				sort.Strings(a.blocks)
			}
			out[devKey(maj, min)] = a
		}
	}
	return out
}

// blockSysDirs maps the kernel names of whole block devices to their sysfs
// directories (host paths, links resolved).
func (h *hostFS) blockSysDirs(s *blockSet) map[string]string {
	out := make(map[string]string, len(s.list))
	for _, d := range s.list {
		if d.info.Kind == KindPartition {
			continue
		}
		if dir, err := h.resolve(sysClassBlock + "/" + d.info.KernelName); err == nil {
			out[d.info.KernelName] = dir
		}
	}
	return out
}

func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

// nvmeHead maps a hidden NVMe multipath path device nvme<S>c<C>n<N> to its
// head nvme<S>n<N> when that exists; other names stay as they are.
func nvmeHead(s *blockSet, kname string) string {
	rest, ok := strings.CutPrefix(kname, "nvme")
	if !ok {
		return kname
	}
	subsys, tail, ok := strings.Cut(rest, "c")
	if !ok {
		return kname
	}
	ctrl, ns, ok := strings.Cut(tail, "n")
	if !ok || !isDigits(subsys) || !isDigits(ctrl) || !isDigits(ns) {
		return kname
	}
	if head := "nvme" + subsys + "n" + ns; s.byName[head] != nil {
		return head
	}
	return kname
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// aliasReason says why a character device that reaches block devices is
// kept back: one of them is in use or held (the reason quotes that
// device's own), or whether they are cannot be known (unknown is the block
// devices' reason then). "" when it is free.
func aliasReason(a *blockAlias, s *blockSet, uses map[string]*use, helds map[string]string, unknown string) string {
	if a == nil || len(a.blocks) == 0 {
		return ""
	}
	label := func(k string) string {
		if d := s.byName[k]; d != nil {
			return d.label()
		}
		return k
	}
	if unknown != "" {
		return reasonUnknownUse + a.what + " of " + label(a.blocks[0]) + "; " +
			strings.TrimPrefix(unknown, reasonUnknownUse)
	}
	for _, k := range a.blocks {
		if u := uses[k]; u != nil {
			return "in use: " + a.what + " of " + label(k) + "; " + k + ": in use: " + u.reason
		}
	}
	for _, k := range a.blocks {
		if r := helds[k]; r != "" {
			return "in use: " + a.what + " of " + label(k) + "; " + k + ": " + r
		}
	}
	return ""
}
