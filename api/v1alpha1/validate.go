package v1alpha1

import (
	"fmt"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxConsumersLimit is the largest Sharing.MaxConsumers: far more claims
// than a node can run pods, small enough to count in an int32 without care.
const MaxConsumersLimit = 1 << 20

// Validate reports whether p is a non-empty combination of r, w and m, each
// at most once, in any order, lower case only.
func (p Permissions) Validate() error {
	if !p.valid() {
		return fmt.Errorf("invalid permissions %q: %s", string(p), MsgPermissions)
	}
	return nil
}

func (p Permissions) valid() bool {
	if p == "" || len(p) > 3 {
		return false
	}
	var seen [3]bool
	for i := 0; i < len(p); i++ {
		j := strings.IndexByte("rwm", p[i])
		if j < 0 || seen[j] {
			return false
		}
		seen[j] = true
	}
	return true
}

// Normalize returns valid permissions in the canonical order r, w, m ("wr"
// gives "rw"). Invalid permissions are returned unchanged.
func (p Permissions) Normalize() Permissions {
	if !p.valid() {
		return p
	}
	var b strings.Builder
	for _, c := range "rwm" {
		if strings.ContainsRune(string(p), c) {
			b.WriteRune(c)
		}
	}
	return Permissions(b.String())
}

// Within reports whether p grants nothing beyond ceiling: every letter of p
// is in ceiling ("r" and "rw" are within "rw"; "rm" is not). A group's
// permissions are the ceiling of what a DeviceClass or claim config may ask
// for, and a class's the ceiling of its claims'.
func (p Permissions) Within(ceiling Permissions) bool {
	for i := 0; i < len(p); i++ {
		if strings.IndexByte(string(ceiling), p[i]) < 0 {
			return false
		}
	}
	return true
}

// ValidateDiscoveryConfig checks cfg, defaulted or not: empty optional
// fields are accepted. A nil cfg is an empty one: valid, with no groups.
func ValidateDiscoveryConfig(cfg *DiscoveryConfig) field.ErrorList {
	if cfg == nil {
		return nil
	}
	errs := validateTypeMeta(cfg.TypeMeta, DiscoveryConfigKind)
	groupsPath := field.NewPath("groups")
	names := map[string]bool{}
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		gp := groupsPath.Index(i)
		errs = append(errs, validateGroup(g, gp)...)
		if g.Name != "" {
			if names[g.Name] {
				errs = append(errs, field.Duplicate(gp.Child("name"), g.Name))
			}
			names[g.Name] = true
		}
	}
	seen := map[string]bool{}
	for i, p := range cfg.AllowInUse {
		fp := field.NewPath("allowInUse").Index(i)
		errs = append(errs, validateDevPath(fp, p)...)
		if strings.ContainsAny(p, `*?[\`) {
			errs = append(errs, field.Invalid(fp, p, MsgExactPath))
		}
		if seen[p] {
			errs = append(errs, field.Duplicate(fp, p))
		}
		seen[p] = true
	}
	return errs
}

// validateTypeMeta accepts empty apiVersion and kind (a config built in Go);
// the decoders insist that they are set.
func validateTypeMeta(tm metav1.TypeMeta, kind string) field.ErrorList {
	var errs field.ErrorList
	if tm.APIVersion != "" && tm.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), tm.APIVersion, []string{APIVersion}))
	}
	if tm.Kind != "" && tm.Kind != kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), tm.Kind, []string{kind}))
	}
	return errs
}

func validateGroup(g *DeviceGroup, gp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if g.Name == "" {
		errs = append(errs, field.Required(gp.Child("name"), MsgGroupName))
	} else if msgs := validation.IsDNS1123Label(g.Name); len(msgs) > 0 {
		errs = append(errs, field.Invalid(gp.Child("name"), g.Name, strings.Join(msgs, "; ")))
	}
	if len(g.Include) == 0 {
		errs = append(errs, field.Required(gp.Child("include"), MsgIncludeRequired))
	}
	for j, p := range g.Include {
		errs = append(errs, validatePattern(gp.Child("include").Index(j), p)...)
	}
	for j, p := range g.Exclude {
		errs = append(errs, validatePattern(gp.Child("exclude").Index(j), p)...)
	}
	types := map[DeviceType]bool{}
	for j, t := range g.Types {
		tp := gp.Child("types").Index(j)
		switch {
		case t != DeviceTypeBlock && t != DeviceTypeChar:
			errs = append(errs, field.NotSupported(tp, string(t), []DeviceType{DeviceTypeBlock, DeviceTypeChar}))
		case types[t]:
			errs = append(errs, field.Duplicate(tp, string(t)))
		}
		types[t] = true
	}
	if g.Permissions != "" && !g.Permissions.valid() {
		errs = append(errs, field.Invalid(gp.Child("permissions"), string(g.Permissions), MsgPermissions))
	}
	switch g.UnhealthyTaintEffect {
	case "", TaintNoSchedule, TaintNoExecute:
	default:
		errs = append(errs, field.NotSupported(gp.Child("unhealthyTaintEffect"), string(g.UnhealthyTaintEffect), []TaintEffect{TaintNoSchedule, TaintNoExecute}))
	}
	if s := g.Sharing; s != nil {
		sp := gp.Child("sharing")
		mode := s.Mode
		if mode == "" {
			mode = SharingExclusive
		}
		if mode != SharingExclusive && mode != SharingShared {
			errs = append(errs, field.NotSupported(sp.Child("mode"), string(s.Mode), []SharingMode{SharingExclusive, SharingShared}))
		}
		if s.MaxConsumers != nil {
			mp := sp.Child("maxConsumers")
			switch n := *s.MaxConsumers; {
			case mode == SharingExclusive:
				errs = append(errs, field.Forbidden(mp, MsgMaxConsumersShared))
			case n < 1 || n > MaxConsumersLimit:
				errs = append(errs, field.Invalid(mp, n, MsgMaxConsumersRange))
			}
		}
	}
	return errs
}

// validatePattern checks an include or exclude glob.
func validatePattern(fp *field.Path, p string) field.ErrorList {
	errs := validateDevPath(fp, p)
	if _, err := path.Match(p, ""); err == path.ErrBadPattern {
		errs = append(errs, field.Invalid(fp, p, MsgBadGlob))
	}
	return errs
}

// validateDevPath checks that p is a clean absolute path under /dev/.
func validateDevPath(fp *field.Path, p string) field.ErrorList {
	var errs field.ErrorList
	if !strings.HasPrefix(p, "/dev/") {
		errs = append(errs, field.Invalid(fp, p, MsgUnderDev))
	}
	switch {
	case hasDotDot(p):
		errs = append(errs, field.Invalid(fp, p, MsgDotDot))
	case strings.HasPrefix(p, "/") && path.Clean(p) != p:
		errs = append(errs, field.Invalid(fp, p, MsgNotClean))
	}
	return errs
}

func hasDotDot(p string) bool {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

// discoveryWarnings returns the warnings about a valid cfg.
func discoveryWarnings(cfg *DiscoveryConfig) []string {
	var warns []string
	if len(cfg.Groups) == 0 {
		warns = append(warns, WarnNoGroups)
	}
	for i, g := range cfg.Groups {
		if len(g.Types) > 0 {
			continue
		}
		for _, p := range g.Include {
			if p == AllDevicesPattern {
				warns = append(warns, fmt.Sprintf(WarnCharDevices, i, p))
			}
		}
	}
	return warns
}

// normalizeDiscoveryConfig puts permissions in canonical order.
func normalizeDiscoveryConfig(cfg *DiscoveryConfig) {
	for i := range cfg.Groups {
		cfg.Groups[i].Permissions = cfg.Groups[i].Permissions.Normalize()
	}
}
