// Command mkimage builds the power-dev-plugin container image without a
// container engine, and checks an image archive it built.
//
// The image is the static binary alone: one layer on an empty base with
// /usr/bin/power-dev-plugin (root-owned, mode 0755), an image per platform,
// and an OCI image index over them. It is written as an OCI image layout
// packed into a tar file (an "OCI archive"), which
//
//	ctr -n k8s.io image import power-dev-plugin-v0.1.0.oci.tar
//	podman load -i power-dev-plugin-v0.1.0.oci.tar
//	skopeo copy oci-archive:power-dev-plugin-v0.1.0.oci.tar docker://registry.example/power-dev-plugin:v0.1.0
//
// accept. The archive is reproducible: the same binaries, tag, labels and
// -mtime give the same bytes (file times are -mtime, entries are sorted,
// owners are root, gzip headers carry no time).
//
// Usage:
//
//	mkimage build -o OUT.oci.tar -tag REF [-version V] [-revision R] [-source URL] [-mtime UNIX] \
//	    -binary linux/amd64=PATH -binary linux/ppc64le=PATH ...
//	mkimage verify [-tag REF] [-platforms linux/amd64,linux/ppc64le,linux/s390x] [-version V] [-elf] OUT.oci.tar
//
// `make image` and `make image-verify` run it with the project's values.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  mkimage build -o OUT.oci.tar -tag REF -binary OS/ARCH=PATH [-binary ...] [-version V] [-revision R] [-source URL] [-mtime UNIX]
  mkimage verify [-tag REF] [-platforms OS/ARCH,...] [-version V] [-elf] OUT.oci.tar
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "build":
		err = runBuild(args[1:], stdout, stderr)
	case "verify":
		err = runVerify(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mkimage: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "mkimage %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// binaryFlags collects -binary OS/ARCH=PATH.
type binaryFlags []Binary

func (b *binaryFlags) String() string {
	parts := make([]string, len(*b))
	for i, x := range *b {
		parts[i] = x.Platform.String() + "=" + x.Path
	}
	return strings.Join(parts, ",")
}

func (b *binaryFlags) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("want OS/ARCH=PATH, got %q", s)
	}
	p, err := ParsePlatform(plat)
	if err != nil {
		return err
	}
	*b = append(*b, Binary{Platform: p, Path: path})
	return nil
}

func runBuild(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkimage build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bins binaryFlags
		opts Options
		out  string
	)
	fs.Var(&bins, "binary", "OS/ARCH=PATH of the binary for one platform (repeat per platform)")
	fs.StringVar(&out, "o", "", "the OCI archive to write (.oci.tar)")
	fs.StringVar(&opts.Tag, "tag", "", "image reference for the org.opencontainers.image.ref.name annotation, e.g. ghcr.io/power-dev-plugin/power-dev-plugin:v0.1.0")
	fs.StringVar(&opts.Version, "version", "", "org.opencontainers.image.version label (default: the tag's tag part)")
	fs.StringVar(&opts.Revision, "revision", "", "org.opencontainers.image.revision label (the git commit)")
	fs.StringVar(&opts.Source, "source", DefaultSource, "org.opencontainers.image.source label")
	mtime := fs.String("mtime", os.Getenv("SOURCE_DATE_EPOCH"), "time of the files and of the image config, in seconds since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
	layoutDir := fs.String("layout", "", "also keep the unpacked OCI image layout in this new directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if out == "" {
		return errors.New("-o is required")
	}
	if len(bins) == 0 {
		return errors.New("at least one -binary OS/ARCH=PATH is required")
	}
	t, err := parseEpoch(*mtime)
	if err != nil {
		return fmt.Errorf("-mtime: %w", err)
	}
	opts.Created = t
	if opts.Version == "" {
		opts.Version = tagOf(opts.Tag)
	}

	res, err := Build(bins, opts, out, *layoutDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s (%d bytes)\n", out, opts.Tag, res.ArchiveSize)
	fmt.Fprintf(stdout, "  index    %s\n", res.IndexDigest)
	for _, m := range res.Manifests {
		fmt.Fprintf(stdout, "  %-14s %s  binary %d bytes, layer %d bytes\n", m.Platform, m.Digest, m.BinarySize, m.LayerSize)
	}
	return nil
}

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkimage verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var want Expect
	platforms := fs.String("platforms", strings.Join(DefaultPlatforms, ","), "the platforms the index must have, separated by commas or spaces")
	fs.StringVar(&want.Tag, "tag", "", "the org.opencontainers.image.ref.name the archive must carry (default: any)")
	fs.StringVar(&want.Version, "version", "", "the org.opencontainers.image.version label the images must carry (default: any)")
	fs.BoolVar(&want.ELF, "elf", false, "require each binary to be a static ELF executable for its platform")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("want exactly one archive")
	}
	// Comma- or space-separated, so that a Makefile list can be passed as is.
	for _, s := range strings.FieldsFunc(*platforms, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := ParsePlatform(s)
		if err != nil {
			return err
		}
		want.Platforms = append(want.Platforms, p)
	}
	rep, err := Verify(fs.Arg(0), want)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK: %s\n", fs.Arg(0), rep.Tag)
	fmt.Fprintf(stdout, "  index    %s\n", rep.IndexDigest)
	names := make([]string, 0, len(rep.Images))
	for p := range rep.Images {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		im := rep.Images[p]
		fmt.Fprintf(stdout, "  %-14s %s  %s %s uid %d gid %d %d bytes\n", p, im.ManifestDigest, BinaryPath, im.Mode, im.UID, im.GID, im.Size)
	}
	return nil
}

// parseEpoch reads seconds since 1970; empty is 0.
func parseEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("want seconds since 1970, got %q", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// tagOf is the tag of an image reference ("v0.1.0" of "ghcr.io/x/y:v0.1.0"),
// or "" when it has none.
func tagOf(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ""
	}
	return ref[i+1:]
}
