package v1alpha1

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxConfigSize is the largest configuration file LoadDiscoveryConfig reads.
const MaxConfigSize = 1 << 20

// legacyKeys are the keys of the old plugin's config.json, in its order.
var legacyKeys = []string{
	"nx-gzip", "permissions", "include-devices", "exclude-devices",
	"discovery-strategy", "scan-interval", "upper-limit",
}

// LoadDiscoveryConfig reads the file at path and decodes it with
// DecodeDiscoveryConfig. Every error message starts with "config <path>: ";
// the warnings do not name the file. A missing file is an error
// (errors.Is(err, fs.ErrNotExist) holds); an empty one gives the default
// configuration. Files larger than MaxConfigSize and anything but regular
// files (after symlinks: ConfigMap mounts are links) are refused.
func LoadDiscoveryConfig(path string) (*DiscoveryConfig, []string, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, nil, &ConfigError{Source: path, Errs: []error{err}}
	}
	cfg, warns, err := DecodeDiscoveryConfig(data)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Source = path
			return nil, warns, ce
		}
		return nil, warns, &ConfigError{Source: path, Errs: []error{err}}
	}
	return cfg, warns, nil
}

func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", unwrapPathError(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", unwrapPathError(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", unwrapPathError(err))
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("the file is larger than %d bytes", MaxConfigSize)
	}
	return data, nil
}

// unwrapPathError drops the *fs.PathError wrapper, whose message repeats
// the path that the caller already prints.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// DecodeDiscoveryConfig decodes a DiscoveryConfig from YAML or JSON, applies
// SetDefaults, validates it and puts permissions in canonical order.
//
//   - Empty input (or only whitespace and comments) is an error
//     (errors.Is(err, ErrEmptyConfig)): an emptied file must never turn
//     into the broadest default. An explicit groups: [] publishes nothing.
//   - A document with apiVersion or kind must have both, set to
//     power-dev-plugin.io/v1alpha1 and DiscoveryConfig, and is decoded
//     strictly: unknown fields, duplicate fields and values of the wrong
//     type are errors naming the field.
//   - A document with neither, whose keys are all keys of the old plugin's
//     config.json, is decoded strictly as a LegacyConfig and converted with
//     MigrateLegacy.
//
// The error is a *ConfigError listing every problem found. The warnings are
// sentences for a person; they may be non-empty when err is not nil.
func DecodeDiscoveryConfig(data []byte) (*DiscoveryConfig, []string, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, nil, &ConfigError{Errs: []error{err}}
	}
	switch root.kind {
	case kindNull:
		return nil, nil, &ConfigError{Errs: []error{ErrEmptyConfig}}
	case kindObject:
	default:
		return nil, nil, &ConfigError{Errs: []error{&DecodeError{Detail: fmt.Sprintf(MsgNotObject, root.describe()), Line: root.line}}}
	}
	if root.member("apiVersion") == nil && root.member("kind") == nil {
		if unknown := nonLegacyKeys(root); len(unknown) > 0 {
			return nil, nil, &ConfigError{Errs: []error{&DecodeError{
				Detail: fmt.Sprintf(MsgMissingTypeMeta, strings.Join(legacyKeys, ", "), strings.Join(unknown, ", ")),
			}}}
		}
		return decodeLegacy(root)
	}
	if errs := checkTypeMeta(root, DiscoveryConfigKind); len(errs) > 0 {
		return nil, nil, &ConfigError{Errs: errs}
	}
	cfg := &DiscoveryConfig{}
	if errs := decodeStrict(root, cfg); len(errs) > 0 {
		return nil, nil, &ConfigError{Errs: errs}
	}
	SetDefaults(cfg)
	if errs := ValidateDiscoveryConfig(cfg); len(errs) > 0 {
		return nil, nil, &ConfigError{Errs: fieldErrors(errs)}
	}
	normalizeDiscoveryConfig(cfg)
	return cfg, discoveryWarnings(cfg), nil
}

// nonLegacyKeys returns the quoted keys of root that config.json did not
// have, each once, in document order.
func nonLegacyKeys(root *value) []string {
	var unknown []string
	seen := map[string]bool{}
	for _, m := range root.members {
		name := m.name
		if m.bad != "" {
			name = "<<"
		}
		if !seen[name] && !isLegacyKey(name) {
			unknown = append(unknown, strconv.Quote(name))
		}
		seen[name] = true
	}
	return unknown
}

func isLegacyKey(name string) bool {
	for _, k := range legacyKeys {
		if k == name {
			return true
		}
	}
	return false
}

func decodeLegacy(root *value) (*DiscoveryConfig, []string, error) {
	old := &LegacyConfig{}
	if errs := decodeStrict(root, old); len(errs) > 0 {
		return nil, nil, &ConfigError{Errs: errs}
	}
	cfg, warns, err := MigrateLegacy(old)
	warns = append([]string{WarnLegacyFormat}, warns...)
	if err != nil {
		return nil, warns, err
	}
	return cfg, warns, nil
}

// checkTypeMeta requires apiVersion and kind to be present and exact. A
// document of another version or kind is not decoded further: its other
// fields would only give misleading errors.
func checkTypeMeta(root *value, kind string) []error {
	var errs []error
	for _, f := range []struct{ name, want string }{{"apiVersion", APIVersion}, {"kind", kind}} {
		p := field.NewPath(f.name)
		m := root.member(f.name)
		switch {
		case m == nil || m.val.kind == kindNull:
			errs = append(errs, field.Required(p, fmt.Sprintf(MsgTypeMeta, f.want)))
		case m.val.kind != kindString:
			errs = append(errs, &DecodeError{Field: f.name, Detail: fmt.Sprintf(MsgWrongType, "a string", m.val.describe()), Line: m.line})
		case m.val.str != f.want:
			errs = append(errs, field.NotSupported(p, m.val.str, []string{f.want}))
		}
	}
	return errs
}

func fieldErrors(list field.ErrorList) []error {
	errs := make([]error, len(list))
	for i, e := range list {
		errs[i] = e
	}
	return errs
}
