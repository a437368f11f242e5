package v1alpha1

// DefaultDiscoveryConfig is the configuration used when no file is given:
// one group "dev" with every block device that passes the safety rules, plus
// the NX-GZIP accelerator when the node has it. The types filter applies to
// glob patterns only; a path written out in full (no *, ? or [) is taken
// whatever its type, which is how the char device joins a block-only group.
func DefaultDiscoveryConfig() *DiscoveryConfig {
	cfg := &DiscoveryConfig{
		Groups: []DeviceGroup{{
			Name:    DefaultGroupName,
			Include: []string{"/dev/*", NXGzipPath},
			Types:   []DeviceType{DeviceTypeBlock},
		}},
	}
	SetDefaults(cfg)
	return cfg
}

// SetDefaults fills in every optional field of cfg.
func SetDefaults(cfg *DiscoveryConfig) {
	if cfg.APIVersion == "" {
		cfg.APIVersion = APIVersion
	}
	if cfg.Kind == "" {
		cfg.Kind = DiscoveryConfigKind
	}
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		if g.Permissions == "" {
			g.Permissions = DefaultPermissions
		}
		if g.Sharing == nil {
			g.Sharing = &Sharing{Mode: SharingExclusive}
		}
		if g.Sharing.Mode == "" {
			g.Sharing.Mode = SharingExclusive
		}
	}
}
