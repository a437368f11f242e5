// Package v1alpha1 holds the configuration API of power-dev-plugin: the node
// configuration DiscoveryConfig, which says which host device nodes the
// driver publishes and how they are grouped, and DeviceConfig, the opaque
// parameters a DeviceClass or ResourceClaim passes for its devices.
//
// # DiscoveryConfig
//
//	apiVersion: power-dev-plugin.io/v1alpha1
//	kind: DiscoveryConfig
//	groups:
//	- name: disks                     # DNS label, unique
//	  include: ["/dev/dm-*", "/dev/sd*"]
//	  exclude: ["/dev/sda*"]          # exclude always wins
//	  types: [block]                  # optional: block, char; empty: both
//	  permissions: rw                 # optional: r, w, m; default rw
//	- name: nx-gzip
//	  include: ["/dev/crypto/nx-gzip"]
//	  sharing: {mode: shared, maxConsumers: 64}  # default {mode: exclusive}
//	- name: db2
//	  include: ["/dev/mapper/mpath*"]
//	  bundle: true                    # all matched nodes are one device
//	allowInUse: ["/dev/sdb"]          # exact paths only, not globs
//
// LoadDiscoveryConfig and DecodeDiscoveryConfig read it from YAML or JSON.
// An empty or comment-only file is an error (ErrEmptyConfig), never the
// default: only the absence of a file means DefaultDiscoveryConfig, and
// groups: [] means no devices. Decoding is strict: unknown
// fields, duplicate fields and values of the wrong type are errors that name
// the field path. Then SetDefaults and ValidateDiscoveryConfig run. All the
// problems of a stage are reported at once in a *ConfigError; validation
// runs only on a document that decoded without problems.
//
// Rules checked by ValidateDiscoveryConfig:
//   - groups[i].name: a DNS label (RFC 1123), unique. Zero groups are
//     allowed (nothing is published) but give a warning.
//   - groups[i].include: at least one pattern. Every include and exclude
//     pattern starts with "/dev/", is clean (path.Clean leaves it as is),
//     has no ".." element and is valid path.Match syntax.
//   - groups[i].types: block and/or char, no duplicates.
//   - groups[i].permissions: see Permissions.
//   - groups[i].sharing.mode: exclusive or shared; maxConsumers only with
//     shared, between 1 and MaxConsumersLimit (1048576).
//   - groups[i].unhealthyTaintEffect: NoSchedule (default when empty) or
//     NoExecute.
//   - allowInUse: exact clean paths under /dev/ (no *, ?, [ or \), no
//     duplicates.
//
// # YAML and JSON
//
// Text that starts with [, with {}, or with { and a double-quoted key is read
// as JSON and must be valid JSON; anything else, {apiVersion: ...} flow
// style included, is read as YAML 1.2. As in
// YAML 1.1 and sigs.k8s.io/yaml, a plain integer with a leading zero is
// octal: fileMode: 0660 is 432; 0o660 works too. Unlike sigs.k8s.io/yaml,
// yes/no/on/off are strings, not booleans. Only one YAML document is
// allowed; YAML merge keys (<<) are refused. Anchors and aliases work, up to
// 1048576 values once expanded; nesting deeper than 32 levels is refused.
//
// # The old plugin's config.json
//
// A document without apiVersion and kind whose keys are all keys of the old
// power-device-plugin's config.json is read as a LegacyConfig and converted
// by MigrateLegacy into one group named "dev", with warnings:
//
//	config.json                  DiscoveryConfig group "dev"
//	-------------------------    ---------------------------------------------
//	include-devices: [globs]     include: the same globs, no types filter
//	include-devices empty        include: ["/dev/*"], types: [block]
//	                             (every block device that passes the safety
//	                             rules; the root disk is no longer handed out)
//	nx-gzip: true                "/dev/crypto/nx-gzip" appended to include
//	                             unless already there
//	exclude-devices: [globs]     exclude: the same globs, always honoured (the
//	                             old plugin ignored them when include-devices
//	                             was set: warning)
//	permissions: "RW"            permissions: "rw" (upper case lower-cased,
//	                             warning; order made canonical); empty: rw;
//	                             invalid: error on permissions
//	(each request got every      bundle: true, sharing: {mode: shared}
//	matched device)
//	upper-limit: N               sharing.maxConsumers: N; N < 1: error on
//	                             upper-limit; N > 1048576: unbounded, warning;
//	                             unset: unbounded (the old default 100000 is
//	                             not carried over)
//	discovery-strategy           default or time, else error; then ignored
//	                             with a warning: discovery is event-driven
//	scan-interval                must parse as a Go duration, else error;
//	                             below 1m: warning; then ignored (as above)
//
// Errors of a migrated file name the config.json keys (include-devices[0],
// upper-limit, ...). Key names are matched exactly (the old plugin's
// encoding/json also matched them case-insensitively).
//
// # DeviceConfig
//
//	{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DeviceConfig",
//	 "permissions": "r", "containerPath": "/dev/data",
//	 "uid": 1000, "gid": 2000, "fileMode": 432}
//
// DecodeDeviceConfig requires apiVersion and kind, decodes strictly and
// validates: permissions as above; containerPath an absolute clean path
// below /dev/ without ".."; uid and gid between 0 and 4294967294; fileMode
// permission bits only (at most 0777). MergeDeviceConfigs layers group
// defaults, class and claim configs, later set fields winning.
//
// # Error messages
//
// Validation errors are k8s field errors, printed as
// "<path>: <type>: <value>: <detail>"; decode errors print as
// "<path>: <detail> (line N)". The details are the Msg constants of
// messages.go; keep them stable, an admission policy repeats them.
//
//	path                          message
//	----------------------------  ------------------------------------------------
//	<any field>                   unknown field
//	<any field>                   duplicate field
//	<any field>                   must be <a list|a string|an integer|an object|
//	                              true or false>, not <what was found>
//	<integer field>               must be an integer between <min> and <max>
//	<object>                      YAML merge keys (<<) are not supported; write
//	                              the fields out
//	(document)                    invalid JSON at line L, column C: <reason>
//	(document)                    invalid YAML: <reason>
//	(document)                    the document must be an object (a YAML
//	                              mapping), not <kind>
//	(document)                    the file holds more than one YAML document; ...
//	(document)                    the document is nested too deeply
//	(document)                    the document has more than 1048576 values once
//	                              YAML aliases are expanded
//	(document)                    missing apiVersion/kind (expected ...); not
//	                              config.json keys: "<key>", ...
//	apiVersion                    Required value: must be "power-dev-plugin.io/v1alpha1"
//	apiVersion                    Unsupported value: "<v>": supported values:
//	                              "power-dev-plugin.io/v1alpha1"
//	kind                          Required value / Unsupported value, likewise
//	groups[i].name                Required value: a DNS label such as "disks" is
//	                              required
//	groups[i].name                Invalid value: "<v>": <RFC 1123 label message>
//	groups[i].name                Duplicate value: "<v>"
//	groups[i].include             Required value: at least one pattern is
//	                              required, e.g. "/dev/sd*"
//	groups[i].include[j],         Invalid value: "<v>": must start with "/dev/"
//	 groups[i].exclude[j],        Invalid value: "<v>": must not contain ".."
//	 allowInUse[j],                elements
//	 containerPath                Invalid value: "<v>": must be a clean path (no
//	                              "//", "." elements or trailing "/")
//	groups[i].include[j],         Invalid value: "<v>": bad glob pattern: syntax
//	 groups[i].exclude[j]         error in pattern (path.Match syntax: ...)
//	groups[i].types[j]            Unsupported value: "<v>": supported values:
//	                              "block", "char"
//	groups[i].types[j]            Duplicate value: "<v>"
//	groups[i].permissions,        Invalid value: "<v>": must be a combination of
//	 permissions                  r, w and m (e.g. "rw"), each at most once
//	groups[i].sharing.mode        Unsupported value: "<v>": supported values:
//	                              "exclusive", "shared"
//	groups[i].sharing.maxConsumers Forbidden: only allowed with mode "shared"
//	groups[i].sharing.maxConsumers Invalid value: <n>: must be between 1 and
//	                              1048576
//	allowInUse[j]                 Invalid value: "<v>": exact paths only, not
//	                              globs (no *, ?, [ or \)
//	allowInUse[j]                 Duplicate value: "<v>"
//	containerPath                 Invalid value: "/dev": must name a node below
//	                              /dev, not /dev itself
//	uid, gid                      Invalid value: <n>: must be between 0 and
//	                              4294967294
//	fileMode                      Invalid value: <octal>: only permission bits are
//	                              allowed (at most 0777; no setuid, setgid or
//	                              sticky bit)
//	upper-limit                   Invalid value: <n>: must be at least 1 (...)
//	discovery-strategy            Unsupported value: "<v>": supported values:
//	                              "default", "time"
//	scan-interval                 Invalid value: "<v>": must be a duration such
//	                              as "1m" or "60m"
//
// +groupName=power-dev-plugin.io
package v1alpha1
