package main

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
)

// defaultLegacyConfig is where the old power-device-plugin read its
// config.json (from its ConfigMap power-device-config).
const defaultLegacyConfig = "/etc/power-device-plugin/config.json"

// configPath returns the configuration file to use: the old plugin's
// config.json when it exists (an unchanged old ConfigMap wins, so that
// swapping the old plugin for this one keeps its configuration), else
// --config; "" is the built-in default.
func (f *pluginFlags) configPath() (path string, legacy bool) {
	if f.legacyConfig != "" {
		if _, err := os.Stat(f.legacyConfig); err == nil {
			return f.legacyConfig, true
		} else if !errors.Is(err, fs.ErrNotExist) {
			// Unreadable: use it anyway, so that loading it says why.
			return f.legacyConfig, true
		}
	}
	return f.configFile, false
}

// logConfigChoice says which configuration file is used and why.
func (f *pluginFlags) logConfigChoice(ctx context.Context) {
	logger := klog.FromContext(ctx)
	path, legacy := f.configPath()
	switch {
	case legacy && f.configFile != "":
		logger.Info("Using the old plugin's config.json, which exists, instead of --config; delete the old ConfigMap (power-device-config) to use --config",
			"config", path, "ignored", f.configFile)
	case legacy:
		logger.Info("Using the old plugin's config.json", "config", path)
	case path == "":
		logger.Info("No configuration file: using the built-in default (group \"dev\": every block device that passes the safety rules, and /dev/crypto/nx-gzip)")
	default:
		logger.Info("Using the configuration file", "config", path)
	}
}

// runDevicePlugin runs the kubelet device plugin: one resource
// power-dev-plugin/<group> per configured group. It needs no API server.
func runDevicePlugin(ctx context.Context, f pluginFlags) error {
	w := newWatcher(ctx, f)
	m, err := deviceplugin.New(
		deviceplugin.WithPluginDir(f.devicePluginDir),
		deviceplugin.WithCDIDir(f.cdiDir),
		deviceplugin.WithCDIDevices(f.devicePluginCDI),
		deviceplugin.WithHostRoot(f.hostRoot),
		deviceplugin.WithInstanceID(f.podUID),
		deviceplugin.WithHealthAddress(f.healthAddr),
		deviceplugin.WithMetrics(f.metrics),
	)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	return m.Run(ctx, w)
}
