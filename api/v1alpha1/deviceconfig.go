package v1alpha1

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxID is the largest uid or gid: 2^32-1 is (uid_t)-1, "no owner" to the
// kernel's chown.
const MaxID = 1<<32 - 2

// DecodeDeviceConfig decodes the opaque parameters of a DeviceClass or
// ResourceClaim (JSON, or YAML where fileMode: 0660 is octal). apiVersion
// and kind must be power-dev-plugin.io/v1alpha1 and DeviceConfig; unknown
// fields, duplicate fields and values of the wrong type are errors naming
// the field. The result is validated with ValidateDeviceConfig and its
// permissions put in canonical order. The error is a *ConfigError.
func DecodeDeviceConfig(raw []byte) (*DeviceConfig, error) {
	root, err := parseDocument(raw)
	if err != nil {
		return nil, &ConfigError{Errs: []error{err}}
	}
	switch root.kind {
	case kindNull:
		return nil, &ConfigError{Errs: []error{&DecodeError{Detail: MsgEmptyDeviceConfig}}}
	case kindObject:
	default:
		return nil, &ConfigError{Errs: []error{&DecodeError{Detail: fmt.Sprintf(MsgNotObject, root.describe()), Line: root.line}}}
	}
	if errs := checkTypeMeta(root, DeviceConfigKind); len(errs) > 0 {
		return nil, &ConfigError{Errs: errs}
	}
	c := &DeviceConfig{}
	if errs := decodeStrict(root, c); len(errs) > 0 {
		return nil, &ConfigError{Errs: errs}
	}
	if errs := ValidateDeviceConfig(c); len(errs) > 0 {
		return nil, &ConfigError{Errs: fieldErrors(errs)}
	}
	if c.Permissions != nil {
		p := c.Permissions.Normalize()
		c.Permissions = &p
	}
	return c, nil
}

// ValidateDeviceConfig checks c. Unset fields are valid; so is a nil c.
// Empty apiVersion and kind are accepted (a config built in Go).
func ValidateDeviceConfig(c *DeviceConfig) field.ErrorList {
	if c == nil {
		return nil
	}
	errs := validateTypeMeta(c.TypeMeta, DeviceConfigKind)
	if c.Permissions != nil && !c.Permissions.valid() {
		errs = append(errs, field.Invalid(field.NewPath("permissions"), string(*c.Permissions), MsgPermissions))
	}
	if p := c.ContainerPath; p != "" {
		fp := field.NewPath("containerPath")
		if p == "/dev" || p == "/dev/" {
			errs = append(errs, field.Invalid(fp, p, MsgNotDevItself))
		} else if perrs := validateDevPath(fp, p); len(perrs) > 0 {
			errs = append(errs, perrs...)
		} else if r := reservedBy(p); r != "" {
			errs = append(errs, field.Invalid(fp, p, fmt.Sprintf(MsgReservedContainerPath, r)))
		}
	}
	for _, id := range []struct {
		name string
		v    *int64
	}{{"uid", c.UID}, {"gid", c.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > MaxID) {
			errs = append(errs, field.Invalid(field.NewPath(id.name), *id.v, MsgIDRange))
		}
	}
	if m := c.FileMode; m != nil && *m&^0o777 != 0 {
		errs = append(errs, field.Invalid(field.NewPath("fileMode"), field.OmitValueType{},
			fmt.Sprintf("%#o: %s", *m, MsgFileMode)))
	}
	return errs
}

// reservedContainerPaths are what the container runtime or the kubelet puts
// under /dev in every container, and what programs take for granted. The
// runtime replaces a node at the same path, so a claim's disk at /dev/null
// would receive every "> /dev/null". A containerPath may be neither one of
// them nor below one. The admission policy (deploy/.../admission-
// deviceconfig.yaml, variable reservedPaths) holds a copy; a test keeps the
// two equal.
var reservedContainerPaths = []string{
	"/dev/console", "/dev/core", "/dev/fd", "/dev/full", "/dev/mqueue", "/dev/null", "/dev/ptmx",
	"/dev/pts", "/dev/random", "/dev/shm", "/dev/stderr", "/dev/stdin", "/dev/stdout",
	"/dev/termination-log", "/dev/tty", "/dev/urandom", "/dev/zero",
}

// ReservedContainerPaths returns the paths a containerPath may neither be
// nor lie below, sorted.
func ReservedContainerPaths() []string { return slices.Clone(reservedContainerPaths) }

// reservedBy returns the reserved path that p is or lies below, or "".
func reservedBy(p string) string {
	for _, r := range reservedContainerPaths {
		if p == r || strings.HasPrefix(p, r+"/") {
			return r
		}
	}
	return ""
}

// MergeDeviceConfigs layers configs, e.g. group defaults < class config <
// claim config: a later config's set fields override earlier ones, its unset
// fields (nil, empty containerPath) do not. Permissions are a ceiling, not
// only a default: the caller refuses a config whose permissions are not
// Within the group's (or a claim's not Within its class's) before it merges. Nil configs are skipped. The
// result shares no memory with the inputs and carries apiVersion and kind.
func MergeDeviceConfigs(cfgs ...*DeviceConfig) *DeviceConfig {
	out := &DeviceConfig{TypeMeta: metav1.TypeMeta{APIVersion: APIVersion, Kind: DeviceConfigKind}}
	for _, c := range cfgs {
		if c == nil {
			continue
		}
		if c.Permissions != nil {
			out.Permissions = ptrCopy(c.Permissions)
		}
		if c.ContainerPath != "" {
			out.ContainerPath = c.ContainerPath
		}
		if c.UID != nil {
			out.UID = ptrCopy(c.UID)
		}
		if c.GID != nil {
			out.GID = ptrCopy(c.GID)
		}
		if c.FileMode != nil {
			out.FileMode = ptrCopy(c.FileMode)
		}
	}
	return out
}

func ptrCopy[T any](p *T) *T {
	v := *p
	return &v
}
