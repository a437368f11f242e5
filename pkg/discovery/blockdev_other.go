//go:build !linux

package discovery

import (
	"errors"
	"os"
)

// OpenBlockDevice needs Linux block devices.
func OpenBlockDevice(root, hostPath string, major, minor uint32, exclusive bool) (*os.File, error) {
	return nil, errors.New("opening block devices is a Linux feature")
}

// IsBusy is false off Linux.
func IsBusy(error) bool { return false }
