package discovery

import "strings"

// advice pairs a test on an exclusion reason with what a node admin can do
// about it. The first match wins, so specific entries come first.
var advice = []struct {
	match func(reason string) bool
	text  string
}{{
	match: prefix(reasonUnknownUse),
	text: "The plugin cannot read the host's mount table or swap list, so it cannot tell which block devices the " +
		"node uses and publishes none. Mount the host's /proc/1/mountinfo and /proc/swaps read-only at " +
		"<host-root>/proc/1/mountinfo and <host-root>/proc/swaps (the shipped DaemonSet does), or run discover on " +
		"the host as root. The devices come back at the next scan once both can be read.",
}, {
	match: prefix(reasonKernel),
	text: "It reaches the kernel, firmware, the service processor or the node's consoles and is never published. " +
		"Name its exact path in allowInUse only if a pod must have it and you accept that risk.",
}, {
	match: isAliasReason,
	text: "This character node sends commands straight to the media of the block device it names, so it follows " +
		"that device: it is published once the device is free. To hand it out anyway, name this node's exact path " +
		"in allowInUse.",
}, {
	match: contains(phraseBound),
	text: "A pod's block-mode volume (or another bind mount of the device node) is using it; it is published again " +
		"once the mount is gone. The mount point names the pod's UID and the PersistentVolume; find the pod with " +
		"kubectl get pods -A -o custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,UID:.metadata.uid.",
}, {
	match: contains(phraseKubeletDir),
	text: "The kubelet attached this loop device for a pod's volume; it is published again once the pod is gone " +
		"and the kubelet has detached it.",
}, {
	match: func(r string) bool {
		return strings.Contains(r, phraseBackingOf) || strings.HasPrefix(r, "in use: "+phraseBackedBy)
	},
	text: "A loop device holds a block device open (losetup --list shows which). The kubelet attaches one for " +
		"each block-mode volume a pod uses and detaches it when the pod is gone; a loop device nothing uses can " +
		"be detached with losetup -d.",
}, {
	match: prefix("in use: "),
	text: "The node uses it as the reason says; it is published again when that use ends. Only if you are sure " +
		"nothing needs it, name its exact path in allowInUse.",
}, {
	match: contains("held by "),
	text: "Another device is stacked on it (multipath, LVM, md); include the top of the stack " +
		"(/dev/mapper/..., /dev/dm-*, /dev/md*) instead.",
}}

// Advice says what a node admin can do about a device left out for reason,
// or "" when the reason says it all.
func Advice(reason string) string {
	for _, a := range advice {
		if a.match(reason) {
			return a.text
		}
	}
	return ""
}

func prefix(p string) func(string) bool {
	return func(r string) bool { return strings.HasPrefix(r, p) }
}
func contains(p string) func(string) bool {
	return func(r string) bool { return strings.Contains(r, p) }
}

// isAliasReason reports whether reason is a character alias's (aliasReason).
func isAliasReason(reason string) bool {
	for _, c := range blockAliasClasses {
		if strings.HasPrefix(reason, "in use: "+c.what+" of ") {
			return true
		}
	}
	return false
}
