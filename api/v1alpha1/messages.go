package v1alpha1

import (
	"fmt"
	"strings"
)

// The detail strings of the errors this package reports. A validation error
// prints as "<field path>: <type>: <value>: <detail>" (the k8s field.Error
// form, e.g. `groups[0].permissions: Invalid value: "rx": must be a
// combination of r, w and m (e.g. "rw"), each at most once`); a decode error
// prints as "<field path>: <detail>" with " (line N)" appended when the
// document is YAML or JSON text with line information. They are kept short
// and stable so that an admission policy can repeat them word for word.
const (
	// Decoding.

	// MsgUnknownField: the key is not a field of the object.
	MsgUnknownField = "unknown field"
	// MsgDuplicateField: the key appears twice in one object.
	MsgDuplicateField = "duplicate field"
	// MsgMergeKey: YAML merge keys are refused rather than half supported.
	MsgMergeKey = "YAML merge keys (<<) are not supported; write the fields out"
	// MsgKeyNotString: a YAML mapping key that is a list or a mapping.
	MsgKeyNotString = "keys must be strings"
	// MsgNotObject: the document is a list or a scalar.
	MsgNotObject = "the document must be an object (a YAML mapping), not %s"
	// MsgMultipleDocuments: a YAML stream with a second, non-empty document.
	MsgMultipleDocuments = "the file holds more than one YAML document; put the whole configuration in one"
	// MsgTooDeep: nesting far deeper than any field of these types.
	MsgTooDeep = "the document is nested too deeply"
	// MsgTooManyValues: a YAML document whose aliases expand too far.
	MsgTooManyValues = "the document has more than 1048576 values once YAML aliases are expanded"
	// MsgMissingTypeMeta: neither apiVersion/kind nor only config.json keys.
	MsgMissingTypeMeta = "missing apiVersion/kind (expected " + APIVersion + " " + DiscoveryConfigKind +
		", or the old plugin's config.json keys %s); not config.json keys: %s"
	// MsgEmptyConfig: a DiscoveryConfig file with nothing in it.
	MsgEmptyConfig = "the file is empty or holds only comments, which is refused rather than read as the " +
		"built-in default; to publish no devices write groups: [] (with apiVersion " + APIVersion +
		" and kind " + DiscoveryConfigKind + "); for the built-in default group \"" + DefaultGroupName +
		"\" give no configuration file (unset --config and CONFIG_FILE)"
	// MsgEmptyDeviceConfig: opaque parameters with nothing in them.
	MsgEmptyDeviceConfig = "empty DeviceConfig: expected an object with apiVersion " + APIVersion +
		" and kind " + DeviceConfigKind
	// MsgIntegerRange: an integer outside the range of the Go field.
	MsgIntegerRange = "must be an integer between %d and %d"
	// MsgWrongType: e.g. "must be a list, not a string".
	MsgWrongType = "must be %s, not %s"

	// Validation, both kinds.

	// MsgPermissions: Permissions.Validate.
	MsgPermissions = `must be a combination of r, w and m (e.g. "rw"), each at most once`
	// MsgTypeMeta is the detail of a missing apiVersion or kind: `must be "<value>"`.
	MsgTypeMeta = "must be %q"

	// Validation, DiscoveryConfig.

	// MsgGroupName is used when a group has no name.
	MsgGroupName = `a DNS label such as "disks" is required`
	// MsgIncludeRequired: a group with no include pattern.
	MsgIncludeRequired = `at least one pattern is required, e.g. "/dev/sd*"`
	// MsgUnderDev: patterns, allowInUse entries and containerPath.
	MsgUnderDev = `must start with "/dev/"`
	// MsgDotDot: a ".." path element.
	MsgDotDot = `must not contain ".." elements`
	// MsgNotClean: path.Clean would change the path.
	MsgNotClean = `must be a clean path (no "//", "." elements or trailing "/")`
	// MsgBadGlob: path.Match reports ErrBadPattern.
	MsgBadGlob = "bad glob pattern: syntax error in pattern (path.Match syntax: *, ?, [a-z], \\ escapes)"
	// MsgExactPath: an allowInUse entry with a glob metacharacter.
	MsgExactPath = `exact paths only, not globs (no *, ?, [ or \)`
	// MsgMaxConsumersRange: maxConsumers outside [1, MaxConsumersLimit].
	MsgMaxConsumersRange = "must be between 1 and 1048576"
	// MsgMaxConsumersShared: maxConsumers with mode exclusive.
	MsgMaxConsumersShared = `only allowed with mode "shared"`

	// Validation, DeviceConfig.

	// MsgNotDevItself: containerPath "/dev" or "/dev/".
	MsgNotDevItself = "must name a node below /dev, not /dev itself"
	// MsgReservedContainerPath takes the reserved path that containerPath
	// is or lies below.
	MsgReservedContainerPath = "must not be %[1]s or below it: every container needs %[1]s " +
		"(the container runtime or the kubelet provides it) and a device node there would replace it; " +
		"choose another path under /dev/"
	// MsgIDRange: uid or gid out of range.
	MsgIDRange = "must be between 0 and 4294967294"
	// MsgPermissionsAboveGroup takes the permissions asked for, the group
	// and the group's permissions (checked at Prepare, where the group is
	// known).
	MsgPermissionsAboveGroup = "%q is more than group %q allows (%q): a DeviceClass or claim may narrow " +
		"its group's permissions, never widen them; ask for a subset of %[3]q, or have the node admin change the group"
	// MsgPermissionsAboveClass takes the permissions asked for, the group,
	// the class's permissions and the index of the class's config entry.
	MsgPermissionsAboveClass = "%q is more than the DeviceClass allows for group %q (%q, set by config[%d]): " +
		"a claim may narrow its class's permissions, never widen them"
	// MsgFileMode follows the value in octal: "04755: only permission ...".
	MsgFileMode = "only permission bits are allowed (at most 0777; no setuid, setgid or sticky bit)"

	// Migration of the old config.json.

	// MsgUpperLimit: upper-limit below 1.
	MsgUpperLimit = "must be at least 1 (the number of claims that may share the devices at once)"
	// MsgScanInterval: scan-interval that time.ParseDuration refuses.
	MsgScanInterval = `must be a duration such as "1m" or "60m"`
)

// Warnings. They are complete sentences for a person; some take arguments.
const (
	WarnNoGroups = "groups is empty: the driver publishes no devices"
	// WarnCharDevices takes the group index and the pattern.
	WarnCharDevices = "groups[%d]: include %q without types also matches character devices " +
		"such as /dev/null; add types: [block] if you meant disks"

	WarnLegacyFormat = "this is the old plugin's config.json; it was converted to one " +
		DiscoveryConfigKind + " group \"" + DefaultGroupName + "\" whose devices are handed out " +
		"together (bundle) to any number of claims (sharing: shared), as before; rewrite it as " +
		"apiVersion " + APIVersion + ", kind " + DiscoveryConfigKind + " when you can"
	WarnLegacyAllDevices = "include-devices is empty: every block device that passes the safety rules is " +
		"published (the old plugin also handed out the root disk and mounted disks)"
	WarnLegacyExclude = "exclude-devices is now honoured together with include-devices " +
		"(the old plugin ignored exclude-devices whenever include-devices was set)"
	// WarnLegacyUpperCase takes the old and the new permissions.
	WarnLegacyUpperCase = "permissions %q were lower-cased to %q; upper case is accepted only in the old config.json"
	// WarnLegacyUpperLimit takes the upper-limit.
	WarnLegacyUpperLimit = "upper-limit %d is above the maximum of 1048576 consumers; the devices are shared without a limit"
	// WarnLegacyShortInterval takes the scan-interval.
	WarnLegacyShortInterval = "scan-interval %q is below the old plugin's minimum of 1m"
	WarnLegacyIgnored       = "discovery-strategy and scan-interval are ignored: discovery is now event-driven " +
		"(devices are rescanned when nodes under /dev appear or disappear), so there is no periodic rescan"
)

// ErrEmptyConfig is the problem of a DiscoveryConfig document (or file)
// that is empty or holds only whitespace and comments.
var ErrEmptyConfig error = &DecodeError{Detail: MsgEmptyConfig}

// DecodeError is a problem found while reading a document, before any
// validation: a syntax error, an unknown or duplicate field, a value of the
// wrong type. Field is the path of the offending field ("groups[0].inclde"),
// empty for a problem with the document as a whole.
type DecodeError struct {
	Field  string
	Detail string
	// Line is the 1-based line in the document, 0 when unknown.
	Line int
}

// Error prints "<field>: <detail> (line N)".
func (e *DecodeError) Error() string {
	var b strings.Builder
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Detail)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// maxReportedErrors bounds how many problems ConfigError.Error prints.
const maxReportedErrors = 10

// ConfigError is the error of the Decode, Load and Migrate functions. It
// holds every problem found in one document: *DecodeError values, or
// *field.Error values from validation, each naming the field it is about.
type ConfigError struct {
	// Source is the file name for LoadDiscoveryConfig, empty otherwise.
	Source string
	// Errs are the problems, in document order.
	Errs []error
}

// Error prints "config <source>: <problem>" for one problem and
// "config <source>: N errors: <problem>; <problem>; ..." for several; the
// "config <source>: " prefix is left out when Source is empty. At most ten
// problems are printed.
func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		fmt.Fprintf(&b, "config %s: ", e.Source)
	}
	if len(e.Errs) != 1 {
		fmt.Fprintf(&b, "%d errors: ", len(e.Errs))
	}
	for i, err := range e.Errs {
		if i == maxReportedErrors {
			fmt.Fprintf(&b, "; and %d more", len(e.Errs)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap gives the problems to errors.Is and errors.As.
func (e *ConfigError) Unwrap() []error { return e.Errs }
