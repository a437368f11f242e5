package deviceplugin

import (
	"fmt"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Devices that share blocks (a disk and its partitions, a multipath map and
// its paths; discovery.Overlaps) are never offered as two IDs: the kubelet
// counts IDs and could hand them to two pods. BuildDeviceSets offers the
// top of each stack and holds back what lies under it.

// heldBackReason says why a device is not offered, for a node admin.
func heldBackReason(h discovery.HeldBack) string {
	return fmt.Sprintf("not offered in device-plugin mode: %s shares blocks with %s, built on it, and the kubelet could hand both to different pods; only the top of a stack is offered: exclude those devices from their group to offer this one instead",
		h.Device.Path, h.TopsText())
}

// logHeldBack logs the devices held back because they share blocks with
// others when that list changes, not on every inventory.
func (m *Manager) logHeldBack(sets []*DeviceSet) {
	now := map[string]string{}
	for _, s := range sets {
		for _, h := range s.HeldBack {
			now[h.Path] = h.Reason
			if m.heldBack[h.Path] != h.Reason {
				m.logger.Info("Not offering a device", "resource", s.Resource, "path", h.Path, "reason", h.Reason)
			}
		}
	}
	for p := range m.heldBack {
		if _, still := now[p]; !still {
			m.logger.Info("Device no longer held back for shared blocks", "path", p)
		}
	}
	m.heldBack = now
}
