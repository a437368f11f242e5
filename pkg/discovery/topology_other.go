//go:build !linux

package discovery

// pcieRootOf: deviceattribute reads sysfs only on Linux.
func pcieRootOf(hostRoot, bdf string) string { return "" }
