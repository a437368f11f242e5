package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

const discoverUsage = `Usage: power-dev-plugin discover [--config FILE] [--host-root DIR] [-o table|yaml|json]

Scans this machine's devices exactly as the plugin does and prints, per group,
the devices it would publish with their attributes, then every device it left
out and why, and what can be done about it. Nothing is published and nothing
on the machine is changed. A host mount table that cannot be read is a warning
(no block device would be published), not a failure.

Exit codes: 0 ok, 1 discovery failed, 2 bad flags or bad configuration.
`

// discoverReport is the machine-readable output of the discover command.
type discoverReport struct {
	Devices  []reportDevice    `json:"devices"`
	Excluded []reportExclusion `json:"excluded"`
	Groups   []reportGroup     `json:"groups"`
	Warnings []string          `json:"warnings,omitempty"`
	// SharedBlocks, HeldBack and Withheld: see addOverlaps.
	SharedBlocks []reportStack         `json:"sharedBlocks,omitempty"`
	HeldBack     []discovery.Exclusion `json:"notOfferedInDevicePluginMode,omitempty"`
	Withheld     []discovery.Exclusion `json:"notPublishedInDRAMode,omitempty"`
}

// reportExclusion is a device left out, why, and what an admin can do.
type reportExclusion struct {
	Path     string `json:"path"`
	Identity string `json:"identity,omitempty"`
	Reason   string `json:"reason"`
	Advice   string `json:"advice,omitempty"`
}

type reportDevice struct {
	Group      string         `json:"group"`
	Name       string         `json:"name"`
	Path       string         `json:"path"`
	Type       string         `json:"type"`
	Major      uint32         `json:"major"`
	Minor      uint32         `json:"minor"`
	Aliases    []string       `json:"aliases,omitempty"`
	Attributes map[string]any `json:"attributes"`
}

// reportGroup says how a group's devices are published: one device per node,
// or one bundle device; exclusively or shared.
type reportGroup struct {
	Name         string `json:"name"`
	Nodes        int    `json:"nodes"`
	Bundle       string `json:"bundle,omitempty"`
	Sharing      string `json:"sharing"`
	MaxConsumers *int32 `json:"maxConsumers,omitempty"`
	Permissions  string `json:"permissions"`
}

func runDiscover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configFile, legacyConfig, hostRoot, output string
	fs := newFlagSet("discover")
	stringFlag(fs, &configFile, "config", "", "CONFIG_FILE", "",
		"DiscoveryConfig file (YAML or JSON), or the old plugin's config.json; empty: the built-in default group \"dev\"")
	stringFlag(fs, &legacyConfig, "legacy-config", "", "LEGACY_CONFIG_FILE", defaultLegacyConfig,
		"the old plugin's config.json; when this file exists it is used instead of --config, as the plugin does; empty: never")
	stringFlag(fs, &hostRoot, "host-root", "", "HOST_ROOT", "/", "directory where the host's /dev, /sys and /proc are found")
	fs.StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	if err := parseFlags(fs, args, discoverUsage); err != nil {
		return err
	}
	if output != "table" && output != "yaml" && output != "json" {
		return &exitError{code: exitUsage, err: fmt.Errorf("--output %q: must be table, yaml or json", output)}
	}
	pf := pluginFlags{configFile: configFile, legacyConfig: legacyConfig}
	path, legacy := pf.configPath()
	if legacy {
		fmt.Fprintf(stderr, "power-dev-plugin: using the old plugin's %s, as the plugin would (--legacy-config=\"\" to ignore it)\n", path)
	}
	cfg, err := loadConfig(ctx, path)
	if err != nil {
		return err
	}
	inv, err := discovery.Discover(ctx, cfg, discovery.WithHostRoot(hostRoot))
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("discovery under %s: %w", hostRoot, err)}
	}
	rep := buildReport(inv)
	switch output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "yaml":
		b, err := yaml.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	default:
		return writeTable(stdout, rep)
	}
}

// loadConfig reads the configuration file, or returns the default when path
// is empty (discovery.LoadConfig). Warnings are logged; errors exit with the
// usage code.
func loadConfig(ctx context.Context, path string) (*v1alpha1.DiscoveryConfig, error) {
	logger := klog.FromContext(ctx)
	cfg, warnings, err := discovery.LoadConfig(path)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	for _, w := range warnings {
		logger.Info("Configuration warning", "file", path, "warning", w)
	}
	return cfg, nil
}

func buildReport(inv *discovery.Inventory) *discoverReport {
	rep := &discoverReport{Devices: []reportDevice{}, Excluded: []reportExclusion{}, Groups: []reportGroup{}, Warnings: inv.Warnings}
	for _, e := range inv.Excluded {
		rep.Excluded = append(rep.Excluded, reportExclusion{Path: e.Path, Identity: e.Identity, Reason: e.Reason, Advice: discovery.Advice(e.Reason)})
	}
	for gi := range inv.Groups {
		g := &inv.Groups[gi]
		rg := reportGroup{
			Name:         g.Name,
			Nodes:        len(g.Devices),
			Bundle:       g.BundleName,
			Sharing:      string(g.Sharing.Mode),
			MaxConsumers: g.Sharing.MaxConsumers,
			Permissions:  string(g.Permissions),
		}
		rep.Groups = append(rep.Groups, rg)
		for di := range g.Devices {
			d := &g.Devices[di]
			attrs := map[string]any{}
			for k, v := range driver.DeviceAttributes(d) {
				switch {
				case v.StringValue != nil:
					attrs[string(k)] = *v.StringValue
				case v.IntValue != nil:
					attrs[string(k)] = *v.IntValue
				case v.BoolValue != nil:
					attrs[string(k)] = *v.BoolValue
				}
			}
			for k, v := range driver.DeviceCapacity(d) {
				attrs[string(k)] = v.Value.Value()
			}
			rep.Devices = append(rep.Devices, reportDevice{
				Group: d.Group, Name: d.Name, Path: d.Path, Type: string(d.Type),
				Major: d.Major, Minor: d.Minor, Aliases: d.Aliases, Attributes: attrs,
			})
		}
	}
	addOverlaps(rep, inv)
	return rep
}

func writeTable(w io.Writer, rep *discoverReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, msg := range rep.Warnings {
		fmt.Fprintf(tw, "WARNING: %s\n\n", msg)
	}
	byGroup := map[string][]reportDevice{}
	for _, d := range rep.Devices {
		byGroup[d.Group] = append(byGroup[d.Group], d)
	}
	for _, g := range rep.Groups {
		how := fmt.Sprintf("%d device(s), one per node", g.Nodes)
		if g.Bundle != "" {
			how = fmt.Sprintf("one bundle device %q of %d node(s)", g.Bundle, g.Nodes)
		}
		share := g.Sharing
		if g.MaxConsumers != nil {
			share = fmt.Sprintf("%s, at most %d claims at once", share, *g.MaxConsumers)
		}
		fmt.Fprintf(tw, "GROUP %s: %s, %s, permissions %s\n", g.Name, how, share, g.Permissions)
		if len(byGroup[g.Name]) == 0 {
			fmt.Fprintln(tw, "  (no devices)")
			continue
		}
		fmt.Fprintln(tw, "  NAME\tPATH\tTYPE\tMAJ:MIN\tKIND\tSIZE\tDETAILS")
		for _, d := range byGroup[g.Name] {
			kind, _ := d.Attributes["kind"].(string)
			size := "-"
			if s, ok := d.Attributes["size"].(int64); ok {
				size = humanBytes(s)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d:%d\t%s\t%s\t%s\n", d.Name, d.Path, d.Type, d.Major, d.Minor,
				dash(kind), size, details(d))
		}
	}
	fmt.Fprintf(tw, "\nLEFT OUT: %d\n", len(rep.Excluded))
	if len(rep.Excluded) > 0 {
		fmt.Fprintln(tw, "  PATH\tREASON")
		for _, e := range rep.Excluded {
			fmt.Fprintf(tw, "  %s\t%s\n", e.Path, e.Reason)
		}
	}
	writeOverlaps(tw, rep)
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeAdvice(w, rep.Excluded)
}

// writeAdvice says once per kind of reason what an admin can do, with the
// devices it concerns.
func writeAdvice(w io.Writer, excluded []reportExclusion) error {
	var order []string
	paths := map[string][]string{}
	for _, e := range excluded {
		if e.Advice == "" {
			continue
		}
		if _, seen := paths[e.Advice]; !seen {
			order = append(order, e.Advice)
		}
		paths[e.Advice] = append(paths[e.Advice], e.Path)
	}
	if len(order) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nWHAT TO DO")
	for _, a := range order {
		ps := paths[a]
		if len(ps) > 4 {
			ps = append(ps[:4:4], fmt.Sprintf("and %d more", len(paths[a])-4))
		}
		if _, err := fmt.Fprintf(w, "  %s:\n    %s\n", strings.Join(ps, ", "), a); err != nil {
			return err
		}
	}
	return nil
}

// details lists the identifying attributes of a device in one cell.
func details(d reportDevice) string {
	var parts []string
	keys := []string{"identity", "model", "vendor", "serial", "wwn", "dmName", "parent", "fsType"}
	for _, k := range keys {
		if v, ok := d.Attributes[k].(string); ok && v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	for _, k := range []string{"readOnly", "removable"} {
		if v, ok := d.Attributes[k].(bool); ok && v {
			parts = append(parts, k)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
