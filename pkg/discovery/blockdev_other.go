//go:build !linux

package discovery

import (
	"errors"
	"os"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// OpenBlockDevice needs Linux block devices.
func OpenBlockDevice(root, hostPath string, major, minor uint32, exclusive bool) (*os.File, error) {
	return nil, errors.New("opening block devices is a Linux feature")
}

// IsBusy is false off Linux.
func IsBusy(error) bool { return false }

// CheckNotHeld refuses every block device off Linux: the check needs Linux.
func CheckNotHeld(root string, d *Device) error {
	if d.Type != v1alpha1.DeviceTypeBlock || d.InUseAllowed {
		return nil
	}
	return errors.New("checking that a block device is not in use needs Linux")
}
