package driver

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"
)

// capacityRequestPolicyMaxValidValues is the documented limit on
// CapacityRequestPolicy.ValidValues ("Must not contain more than 10
// entries"). k8s.io/api/resource/v1 does not export it as a constant.
const capacityRequestPolicyMaxValidValues = 10

// maxReportedErrors caps how many problems ValidateResources spells out, so
// that a systematic mistake on a node with a thousand devices does not
// produce a megabyte of log.
const maxReportedErrors = 50

// ValidateResources checks what the driver is about to publish against the
// API server's rules for ResourceSlices as documented in
// k8s.io/api/resource/v1 (constants and field comments) and as implemented
// upstream in pkg/apis/resource/validation (see the comment on the device
// limit above). It is our own check, written so that a mistake shows up in
// unit tests and in the driver's log with the device that caused it instead
// of as an opaque apiserver rejection; the real check is the API server's.
//
// Checked per pool: the name (non-empty, at most PoolNameMaxLength, DNS
// subdomains separated by "/"), 1 to MaxSlicesPerPool slices, device names
// unique across all of the pool's slices, and at most one of NodeSelector
// and AllNodes; counter set names unique across the pool, each counter a
// device consumes present in the pool (see validate_counters.go). Per
// slice: not both devices and shared counters, at most 8 counter sets of
// 1 to 32 counters (names DNS labels), and at most 128 devices, or 64 when
// a device uses taints, consumesCounters or list attributes. Per device:
// at most 2 consumesCounters entries, one per counter set, of 1 to 32
// counters; the name a DNS label;
// attributes plus capacities at most 32 and attribute values at most 48;
// attribute and capacity names a C identifier of at most 32 characters,
// optionally prefixed by a DNS subdomain of at most 63 and a "/"; each
// attribute exactly one value; string and version values at most 64 bytes,
// versions semver; list values non-empty; at most 16 taints; per-device node
// selection fields only with PerDeviceNodeSelection; capacity values not
// negative; a requestPolicy only with allowMultipleAllocations, and
// consistent (validValues xor validRange, default required with either and
// allowed by it, validValues ascending, unique, at most 10 and within the
// value, min/max/step within the value and aligned, default not above the
// value).
//
// The returned error joins one error per problem, each naming the pool,
// slice index, device and field.
func ValidateResources(res resourceslice.DriverResources) error {
	v := &validator{}
	poolNames := make([]string, 0, len(res.Pools))
	for name := range res.Pools {
		poolNames = append(poolNames, name)
	}
	sort.Strings(poolNames)
	for _, name := range poolNames {
		v.pool(name, res.Pools[name])
	}
	return v.result()
}

type validator struct {
	errs    []error
	dropped int
}

func (v *validator) addf(format string, args ...any) {
	if len(v.errs) >= maxReportedErrors {
		v.dropped++
		return
	}
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) result() error {
	if len(v.errs) == 0 {
		return nil
	}
	errs := v.errs
	if v.dropped > 0 {
		errs = append(slices.Clip(errs), fmt.Errorf("... and %d more problems", v.dropped))
	}
	return errors.Join(errs...)
}

func (v *validator) pool(name string, pool resourceslice.Pool) {
	for _, msg := range poolNameProblems(name) {
		v.addf("pool %q: name: %s", name, msg)
	}
	switch n := len(pool.Slices); {
	case n == 0:
		v.addf("pool %q: has no slices; publish one empty slice for a pool without devices", name)
	case n > MaxSlicesPerPool:
		v.addf("pool %q: %d slices, more than the %d allowed", name, n, MaxSlicesPerPool)
	}
	if pool.NodeSelector != nil && pool.AllNodes {
		v.addf("pool %q: at most one of nodeSelector and allNodes may be set", name)
	}

	seen := make(map[string]int) // device name -> slice index
	for si := range pool.Slices {
		s := &pool.Slices[si]
		at := fmt.Sprintf("pool %q, slice %d", name, si)
		if len(s.Devices) > 0 && len(s.SharedCounters) > 0 {
			v.addf("%s: only one of devices and sharedCounters may be set", at)
		}
		if n := len(s.SharedCounters); n > resourceapi.ResourceSliceMaxCounterSets {
			v.addf("%s: sharedCounters: %d counter sets, more than the %d allowed", at, n, resourceapi.ResourceSliceMaxCounterSets)
		}
		if limit, n := maxDevicesInSlice(s.Devices), len(s.Devices); n > limit {
			v.addf("%s: devices: %d devices, more than the %d allowed (%d per slice, %d when a device uses taints, consumesCounters or list attributes)",
				at, n, limit, resourceapi.ResourceSliceMaxDevices, resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures)
		}
		perDevice := ptr.Deref(s.PerDeviceNodeSelection, false)
		for di := range s.Devices {
			d := &s.Devices[di]
			if prev, dup := seen[d.Name]; dup && d.Name != "" {
				v.addf("%s, device %q: duplicate device name in the pool (also in slice %d)", at, d.Name, prev)
			} else {
				seen[d.Name] = si
			}
			v.device(at, di, d, perDevice)
		}
	}
	v.counters(name, pool)
}

func poolNameProblems(name string) []string {
	if name == "" {
		return []string{"must not be empty"}
	}
	var out []string
	if len(name) > resourceapi.PoolNameMaxLength {
		out = append(out, fmt.Sprintf("%d characters, more than %d", len(name), resourceapi.PoolNameMaxLength))
	}
	for _, part := range strings.Split(name, "/") {
		for _, msg := range validation.IsDNS1123Subdomain(part) {
			out = append(out, fmt.Sprintf("%q: %s", part, msg))
		}
	}
	return out
}

// device reports the problems of one device. The happy path allocates
// nothing: field paths and messages are only formatted for problems, which
// are sorted so that the output does not depend on map order.
func (v *validator) device(at string, index int, d *resourceapi.Device, perDeviceNodeSelection bool) {
	var probs []string
	report := func(format string, args ...any) {
		probs = append(probs, fmt.Sprintf("devices[%d].", index)+fmt.Sprintf(format, args...))
	}
	for _, msg := range validation.IsDNS1123Label(d.Name) {
		report("name: %s", msg)
	}
	if n := len(d.Attributes) + len(d.Capacity); n > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
		report("attributes, capacity: %d attributes and capacities, more than the %d allowed", n, resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
	}
	if n := attributeValues(d); n > resourceapi.ResourceSliceMaxAttributeValuesPerDevice {
		report("attributes: %d attribute values, more than the %d allowed", n, resourceapi.ResourceSliceMaxAttributeValuesPerDevice)
	}

	for name, a := range d.Attributes {
		for _, msg := range qualifiedNameProblems(name) {
			report("attributes[%s]: name: %s", name, msg)
		}
		for _, msg := range attributeProblems(a) {
			report("attributes[%s]: %s", name, msg)
		}
	}

	multi := ptr.Deref(d.AllowMultipleAllocations, false)
	for name, c := range d.Capacity {
		for _, msg := range qualifiedNameProblems(name) {
			report("capacity[%s]: name: %s", name, msg)
		}
		if c.Value.Sign() < 0 {
			report("capacity[%s]: value %s must not be negative", name, c.Value.String())
		}
		if c.RequestPolicy == nil {
			continue
		}
		if !multi {
			report("capacity[%s].requestPolicy: only allowed when allowMultipleAllocations is true", name)
			continue
		}
		for _, msg := range requestPolicyProblems(c.Value, c.RequestPolicy) {
			report("capacity[%s].requestPolicy: %s", name, msg)
		}
	}

	if n := len(d.Taints); n > resourceapi.DeviceTaintsMaxLength {
		report("taints: %d taints, more than the %d allowed", n, resourceapi.DeviceTaintsMaxLength)
	}
	for i, t := range d.Taints {
		for _, msg := range taintProblems(t) {
			report("taints[%d].%s", i, msg)
		}
	}
	if !perDeviceNodeSelection && (d.NodeName != nil || d.NodeSelector != nil || d.AllNodes != nil) {
		report("nodeName, nodeSelector, allNodes: may only be set with perDeviceNodeSelection")
	}

	slices.Sort(probs)
	for _, p := range probs {
		v.addf("%s, device %q: %s", at, d.Name, p)
	}
}

// attributeValues counts scalar attributes as one and list attributes by
// their length, as the API server does for
// ResourceSliceMaxAttributeValuesPerDevice.
func attributeValues(d *resourceapi.Device) int {
	n := 0
	for _, a := range d.Attributes {
		l := len(a.BoolValues) + len(a.IntValues) + len(a.StringValues) + len(a.VersionValues)
		if l == 0 {
			l = 1
		}
		n += l
	}
	return n
}

// isCIdentifier matches [A-Za-z_][A-Za-z0-9_]* (the format of
// k8s.io/apimachinery/pkg/api/validate/content.IsCIdentifier) without a
// regular expression: it runs for every attribute of every device.
func isCIdentifier(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// qualifiedNameProblems checks an attribute or capacity name: a C identifier
// of at most DeviceMaxIDLength, optionally prefixed with "<domain>/" where
// the domain is a DNS subdomain of at most DeviceMaxDomainLength.
func qualifiedNameProblems(name resourceapi.QualifiedName) []string {
	var out []string
	domain, id, hasDomain := strings.Cut(string(name), "/")
	if !hasDomain {
		id = domain
	} else {
		switch {
		case domain == "":
			out = append(out, "the domain must not be empty")
		case len(domain) > resourceapi.DeviceMaxDomainLength:
			out = append(out, fmt.Sprintf("domain is %d characters, more than %d", len(domain), resourceapi.DeviceMaxDomainLength))
		default:
			out = append(out, prefixed("domain", validation.IsDNS1123Subdomain(domain))...)
		}
		if strings.Contains(id, "/") {
			return append(out, "must not contain more than one slash")
		}
	}
	switch {
	case id == "":
		out = append(out, "the identifier must not be empty")
	case len(id) > resourceapi.DeviceMaxIDLength:
		out = append(out, fmt.Sprintf("identifier %q is %d characters, more than %d", id, len(id), resourceapi.DeviceMaxIDLength))
	case !isCIdentifier(id):
		out = append(out, fmt.Sprintf("identifier %q must be a C identifier (letters, digits, '_', not starting with a digit)", id))
	}
	return out
}

func prefixed(what string, msgs []string) []string {
	for i := range msgs {
		msgs[i] = what + ": " + msgs[i]
	}
	return msgs
}

// semver is semver.org 2.0.0, as the API server checks version attributes.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(-(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?` +
	`(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$`)

func attributeProblems(a resourceapi.DeviceAttribute) []string {
	var out []string
	set := 0
	str := func(field, s string) {
		if len(s) > resourceapi.DeviceAttributeMaxValueLength {
			out = append(out, fmt.Sprintf("%s value is %d bytes, more than %d", field, len(s), resourceapi.DeviceAttributeMaxValueLength))
		}
		// JSON turns each bad byte into U+FFFD (3 bytes): the API server
		// would see another, possibly too long, value.
		if !utf8.ValidString(s) {
			out = append(out, fmt.Sprintf("%s value %q is not valid UTF-8", field, s))
		}
	}
	ver := func(field, s string) {
		str(field, s)
		if !semver.MatchString(s) {
			out = append(out, fmt.Sprintf("%s value %q is not a semantic version (semver.org 2.0.0)", field, s))
		}
	}
	list := func(field string, n int, isNil bool) {
		if isNil {
			return
		}
		set++
		if n == 0 {
			out = append(out, fmt.Sprintf("%s must not be empty if specified", field))
		}
	}
	if a.IntValue != nil {
		set++
	}
	if a.BoolValue != nil {
		set++
	}
	if a.StringValue != nil {
		set++
		str("string", *a.StringValue)
	}
	if a.VersionValue != nil {
		set++
		ver("version", *a.VersionValue)
	}
	list("ints", len(a.IntValues), a.IntValues == nil)
	list("bools", len(a.BoolValues), a.BoolValues == nil)
	list("strings", len(a.StringValues), a.StringValues == nil)
	for i, s := range a.StringValues {
		str(fmt.Sprintf("strings[%d]", i), s)
	}
	list("versions", len(a.VersionValues), a.VersionValues == nil)
	for i, s := range a.VersionValues {
		ver(fmt.Sprintf("versions[%d]", i), s)
	}
	if set != 1 {
		out = append(out, fmt.Sprintf("exactly one value must be specified, found %d", set))
	}
	return out
}

// requestPolicyProblems mirrors the documented rules of
// CapacityRequestPolicy and CapacityRequestPolicyRange for integer
// quantities. "default not above the value" is our own, stricter rule: such
// a default would make every claim that does not mention the capacity fail.
func requestPolicyProblems(value resource.Quantity, p *resourceapi.CapacityRequestPolicy) []string {
	var out []string
	if p.Default != nil && p.Default.Cmp(value) > 0 {
		out = append(out, fmt.Sprintf("default %s is larger than the capacity value %s", p.Default, &value))
	}
	if p.Default != nil && p.Default.Sign() < 0 {
		out = append(out, fmt.Sprintf("default %s must not be negative", p.Default))
	}
	switch {
	case len(p.ValidValues) > 0 && p.ValidRange != nil:
		out = append(out, "only one of validValues and validRange may be set")
	case p.ValidValues != nil:
		if len(p.ValidValues) == 0 {
			break
		}
		if p.Default == nil {
			out = append(out, "default is required when validValues is set")
		}
		if len(p.ValidValues) > capacityRequestPolicyMaxValidValues {
			out = append(out, fmt.Sprintf("validValues: %d entries, more than %d", len(p.ValidValues), capacityRequestPolicyMaxValidValues))
		}
		foundDefault := false
		for i, q := range p.ValidValues {
			if i > 0 {
				switch c := p.ValidValues[i-1].Cmp(q); {
				case c > 0:
					out = append(out, fmt.Sprintf("validValues[%d]: %s is not in ascending order", i, &q))
				case c == 0:
					out = append(out, fmt.Sprintf("validValues[%d]: duplicate value %s", i, &q))
				}
			}
			if q.Cmp(value) > 0 {
				out = append(out, fmt.Sprintf("validValues[%d]: %s is larger than the capacity value %s", i, &q, &value))
			}
			if p.Default != nil && q.Cmp(*p.Default) == 0 {
				foundDefault = true
			}
		}
		if p.Default != nil && !foundDefault {
			out = append(out, fmt.Sprintf("default %s is not one of validValues", p.Default))
		}
	case p.ValidRange != nil:
		r := p.ValidRange
		if p.Default == nil {
			out = append(out, "default is required when validRange is set")
		}
		if r.Min == nil {
			return append(out, "validRange.min is required")
		}
		if r.Min.Sign() < 0 {
			out = append(out, fmt.Sprintf("validRange.min %s must not be negative", r.Min))
		}
		if r.Min.Cmp(value) > 0 {
			out = append(out, fmt.Sprintf("validRange.min %s is larger than the capacity value %s", r.Min, &value))
		}
		if p.Default != nil && p.Default.Cmp(*r.Min) < 0 {
			out = append(out, fmt.Sprintf("default %s is less than validRange.min %s", p.Default, r.Min))
		}
		if r.Max != nil {
			if r.Min.Cmp(*r.Max) > 0 {
				out = append(out, fmt.Sprintf("validRange.min %s is larger than validRange.max %s", r.Min, r.Max))
			}
			if r.Max.Cmp(value) > 0 {
				out = append(out, fmt.Sprintf("validRange.max %s is larger than the capacity value %s", r.Max, &value))
			}
			if p.Default != nil && p.Default.Cmp(*r.Max) > 0 {
				out = append(out, fmt.Sprintf("default %s is more than validRange.max %s", p.Default, r.Max))
			}
		}
		if r.Step != nil {
			if r.Step.Sign() <= 0 {
				out = append(out, fmt.Sprintf("validRange.step %s must be greater than zero", r.Step))
				break
			}
			next := r.Min.DeepCopy()
			next.Add(*r.Step)
			if next.Cmp(value) > 0 {
				out = append(out, fmt.Sprintf("validRange.min + step = %s is larger than the capacity value %s", &next, &value))
			}
			step, lo := r.Step.Value(), r.Min.Value()
			if p.Default != nil && (p.Default.Value()-lo)%step != 0 {
				out = append(out, fmt.Sprintf("default %s is not min %s plus a multiple of step %s", p.Default, r.Min, r.Step))
			}
			if r.Max != nil && (r.Max.Value()-lo)%step != 0 {
				out = append(out, fmt.Sprintf("validRange.max %s is not min %s plus a multiple of step %s", r.Max, r.Min, r.Step))
			}
		}
	}
	return out
}
