package driver

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// This file reads the DeviceConfig entries of a claim's allocation: which
// requests each applies to, decoding, and the permission ceiling.

// ourConfig is one opaque config entry addressed to this driver.
type ourConfig struct {
	index     int // position in allocation.devices.config
	fromClass bool
	requests  []string
	raw       []byte

	decoded bool
	cfg     *v1alpha1.DeviceConfig
	errs    []string // problems, each "config[i]: ..."
	blamed  bool     // errs already reported (against the first request)
}

// appliesTo reports whether the entry is for request, which may be
// "main/sub". An entry naming the main request covers all its subrequests.
func (c *ourConfig) appliesTo(request string) bool {
	if len(c.requests) == 0 {
		return true
	}
	main, _, _ := strings.Cut(request, "/")
	for _, r := range c.requests {
		if r == request || r == main {
			return true
		}
	}
	return false
}

// fieldError formats a problem with one of the entry's fields the way
// decoding problems read: "config[1]: containerPath: Invalid value: ...".
func (c *ourConfig) fieldError(fe *field.Error) string {
	return fmt.Sprintf("config[%d]: %s", c.index, fe.Error())
}

// decode parses and validates the entry once.
func (c *ourConfig) decode() {
	if c.decoded {
		return
	}
	c.decoded = true
	prefix := fmt.Sprintf("config[%d]: ", c.index)
	if len(c.raw) == 0 {
		c.errs = append(c.errs, prefix+"parameters: Required value: the DeviceConfig is empty")
		return
	}
	// DecodeDeviceConfig is strict and validates; each problem names
	// its field.
	cfg, err := v1alpha1.DecodeDeviceConfig(c.raw)
	if err != nil {
		var ce *v1alpha1.ConfigError
		if errors.As(err, &ce) && len(ce.Errs) > 0 {
			for _, e := range ce.Errs {
				c.errs = append(c.errs, prefix+e.Error())
			}
		} else {
			c.errs = append(c.errs, prefix+err.Error())
		}
		return
	}
	if len(c.errs) == 0 {
		c.cfg = cfg
	}
}

// permissionsFor applies the permission ceiling to the config entries of a
// request for a device of group g: the group's permissions are the most a
// DeviceClass or claim config may set, and the class's the most a claim
// config may set. The result is the claim's, else the class's, else the
// group's; problems name the field, the group and the allowed value.
func permissionsFor(entries []*ourConfig, g *discovery.Group) (v1alpha1.Permissions, []string) {
	group := g.Permissions
	if group == "" {
		group = v1alpha1.DefaultPermissions
	}
	var problems []string
	forbid := func(c *ourConfig, detail string) {
		problems = append(problems, c.fieldError(field.Forbidden(field.NewPath("permissions"), detail)))
	}
	var class, claim *v1alpha1.Permissions
	var classFrom *ourConfig
	for _, c := range entries {
		p := c.cfg.Permissions
		switch {
		case p == nil:
		case !p.Within(group):
			forbid(c, fmt.Sprintf(v1alpha1.MsgPermissionsAboveGroup, *p, g.Name, group))
		case c.fromClass:
			class, classFrom = p, c
		case class != nil && !p.Within(*class):
			forbid(c, fmt.Sprintf(v1alpha1.MsgPermissionsAboveClass, *p, g.Name, *class, classFrom.index))
		default:
			claim = p
		}
	}
	switch {
	case claim != nil:
		return *claim, problems
	case class != nil:
		return *class, problems
	}
	return group, problems
}
