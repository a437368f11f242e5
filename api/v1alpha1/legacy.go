package v1alpha1

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// AllDevicesPattern is the include pattern of a group that takes every
// device node (with types [block]: every block device).
const AllDevicesPattern = "/dev/*"

// Old values of discovery-strategy.
const (
	legacyStrategyDefault = "default"
	legacyStrategyTime    = "time"
)

// MigrateLegacy maps the old plugin's config.json onto a DiscoveryConfig
// with one group named "dev" (DefaultGroupName); see the package
// documentation for the table. A nil old is config.json {}
// (an empty config.json file is refused by DecodeDiscoveryConfig). The
// result has defaults applied and is valid. Errors name the config.json
// keys (include-devices[1], upper-limit, ...); the error is a *ConfigError.
// The warnings may be non-empty when err is not nil.
func MigrateLegacy(old *LegacyConfig) (*DiscoveryConfig, []string, error) {
	if old == nil {
		old = &LegacyConfig{}
	}
	var warns []string
	var errs []error

	g := DeviceGroup{
		Name:    DefaultGroupName,
		Exclude: slices.Clone(old.ExcludeDevices),
		// Each unit used to grant the container every matched device.
		Bundle:  true,
		Sharing: &Sharing{Mode: SharingShared},
	}
	if len(old.IncludeDevices) > 0 {
		g.Include = slices.Clone(old.IncludeDevices)
		if len(old.ExcludeDevices) > 0 {
			warns = append(warns, WarnLegacyExclude)
		}
	} else {
		g.Include = []string{AllDevicesPattern}
		g.Types = []DeviceType{DeviceTypeBlock}
		warns = append(warns, WarnLegacyAllDevices)
	}
	if old.NXGzip && !slices.Contains(g.Include, NXGzipPath) {
		g.Include = append(g.Include, NXGzipPath)
	}

	g.Permissions = DefaultPermissions
	if old.Permissions != "" {
		// The old plugin accepted upper case.
		lower := strings.ToLower(old.Permissions)
		p := Permissions(lower)
		if !p.valid() {
			errs = append(errs, field.Invalid(field.NewPath("permissions"), old.Permissions, MsgPermissions))
		} else {
			g.Permissions = p.Normalize()
			if lower != old.Permissions {
				warns = append(warns, fmt.Sprintf(WarnLegacyUpperCase, old.Permissions, g.Permissions))
			}
		}
	}

	if n := old.UpperLimit; n != nil {
		switch {
		case *n < 1:
			errs = append(errs, field.Invalid(field.NewPath("upper-limit"), *n, MsgUpperLimit))
		case *n > MaxConsumersLimit:
			warns = append(warns, fmt.Sprintf(WarnLegacyUpperLimit, *n))
		default:
			m := int32(*n)
			g.Sharing.MaxConsumers = &m
		}
	}

	switch old.DiscoveryStrategy {
	case "", legacyStrategyDefault, legacyStrategyTime:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("discovery-strategy"), old.DiscoveryStrategy,
			[]string{legacyStrategyDefault, legacyStrategyTime}))
	}
	if old.ScanInterval != "" {
		d, err := time.ParseDuration(old.ScanInterval)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(field.NewPath("scan-interval"), old.ScanInterval, MsgScanInterval))
		case d < time.Minute:
			warns = append(warns, fmt.Sprintf(WarnLegacyShortInterval, old.ScanInterval))
		}
	}
	if old.DiscoveryStrategy != "" || old.ScanInterval != "" {
		warns = append(warns, WarnLegacyIgnored)
	}

	cfg := &DiscoveryConfig{Groups: []DeviceGroup{g}}
	SetDefaults(cfg)
	for _, e := range ValidateDiscoveryConfig(cfg) {
		errs = append(errs, legacyFieldError(e))
	}
	if len(errs) > 0 {
		return nil, warns, &ConfigError{Errs: errs}
	}
	return cfg, warns, nil
}

// legacyFieldPaths rename the fields of the migrated group back to the
// config.json keys they came from. Include and exclude keep their indexes:
// the only pattern MigrateLegacy adds is appended.
var legacyFieldPaths = []struct{ group, legacy string }{
	{"groups[0].include", "include-devices"},
	{"groups[0].exclude", "exclude-devices"},
	{"groups[0].permissions", "permissions"},
	{"groups[0].sharing.maxConsumers", "upper-limit"},
}

func legacyFieldError(e *field.Error) *field.Error {
	out := *e
	for _, r := range legacyFieldPaths {
		if rest, ok := strings.CutPrefix(e.Field, r.group); ok && (rest == "" || rest[0] == '[') {
			out.Field = r.legacy + rest
			break
		}
	}
	return &out
}
