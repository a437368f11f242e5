package main

// Verify reads an OCI archive with nothing but archive/tar and
// encoding/json, independently of the library that wrote it, and checks
// what container runtimes rely on.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
)

// OCI media types (image-spec v1.1).
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// maxBlob bounds what Verify reads into memory per archive entry.
const maxBlob = 512 << 20

// Expect is what an archive must contain.
type Expect struct {
	// Tag is the required ref.name annotation; empty: any non-empty one.
	Tag string
	// Platforms the index must list, each exactly once, and nothing else.
	Platforms []Platform
	// Version is the required org.opencontainers.image.version label;
	// empty: any non-empty one.
	Version string
	// ELF requires each binary to be a static ELF executable for its
	// platform's machine and byte order.
	ELF bool
}

// Report is what Verify found.
type Report struct {
	Tag         string
	IndexDigest string
	// Images by platform ("linux/amd64").
	Images map[string]ImageReport
}

// ImageReport describes one platform's image.
type ImageReport struct {
	ManifestDigest string
	Labels         map[string]string
	Mode           fs.FileMode
	UID, GID       int
	Size           int64
}

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant,omitempty"`
	} `json:"platform,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		User       string            `json:"User"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// archive is the content of an OCI archive.
type archive struct {
	files map[string][]byte
	used  map[string]bool
}

func readArchive(r io.Reader) (*archive, error) {
	a := &archive{files: map[string][]byte{}, used: map[string]bool{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("archive entry %q points outside the archive", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("archive entry %q: unexpected type %q", hdr.Name, hdr.Typeflag)
		}
		if _, dup := a.files[name]; dup {
			return nil, fmt.Errorf("archive entry %q appears twice", name)
		}
		if hdr.Size > maxBlob {
			return nil, fmt.Errorf("archive entry %q: %d bytes is more than this check reads", name, hdr.Size)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		a.files[name] = b
	}
	return a, nil
}

// blob returns the blob of d after checking its digest and size.
func (a *archive) blob(d descriptor) ([]byte, error) {
	alg, hexd, ok := strings.Cut(d.Digest, ":")
	if !ok || alg != "sha256" || len(hexd) != 64 {
		return nil, fmt.Errorf("digest %q: want sha256:<64 hex digits>", d.Digest)
	}
	name := "blobs/sha256/" + hexd
	b, ok := a.files[name]
	if !ok {
		return nil, fmt.Errorf("blob %s (%s) is missing", d.Digest, d.MediaType)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != hexd {
		return nil, fmt.Errorf("blob %s has digest sha256:%s", d.Digest, got)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("blob %s has %d bytes, its descriptor says %d", d.Digest, len(b), d.Size)
	}
	a.used[name] = true
	return b, nil
}

func decodeJSON(b []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Verify checks the OCI archive at file.
func Verify(file string, want Expect) (*Report, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := readArchive(f)
	if err != nil {
		return nil, err
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// oci-layout and index.json.
	var ol struct {
		Version string `json:"imageLayoutVersion"`
	}
	if b, ok := a.files["oci-layout"]; !ok {
		fail("oci-layout is missing")
	} else if err := decodeJSON(b, &ol, "oci-layout"); err != nil {
		fail("%v", err)
	} else if ol.Version != "1.0.0" {
		fail("oci-layout: imageLayoutVersion %q, want 1.0.0", ol.Version)
	}
	b, ok := a.files["index.json"]
	if !ok {
		return nil, errors.Join(append(errs, errors.New("index.json is missing"))...)
	}
	var top index
	if err := decodeJSON(b, &top, "index.json"); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	if top.SchemaVersion != 2 {
		fail("index.json: schemaVersion %d, want 2", top.SchemaVersion)
	}
	if len(top.Manifests) != 1 {
		return nil, errors.Join(append(errs, fmt.Errorf("index.json: %d entries, want 1 (the image index)", len(top.Manifests)))...)
	}
	entry := top.Manifests[0]
	rep := &Report{Tag: entry.Annotations[AnnotationRefName], IndexDigest: entry.Digest, Images: map[string]ImageReport{}}
	switch {
	case rep.Tag == "":
		fail("index.json: no %s annotation", AnnotationRefName)
	case want.Tag != "" && rep.Tag != want.Tag:
		fail("index.json: %s is %q, want %q", AnnotationRefName, rep.Tag, want.Tag)
	}
	if entry.MediaType != mediaTypeIndex {
		return nil, errors.Join(append(errs, fmt.Errorf("index.json: entry is %s, want an image index (%s)", entry.MediaType, mediaTypeIndex))...)
	}

	// The image index: one manifest per platform.
	b, err = a.blob(entry)
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	var idx index
	if err := decodeJSON(b, &idx, "image index"); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != mediaTypeIndex {
		fail("image index: schemaVersion %d mediaType %q, want 2 and %s", idx.SchemaVersion, idx.MediaType, mediaTypeIndex)
	}
	var got []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			fail("image index: manifest %s has no platform", d.Digest)
			continue
		}
		p := Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture}
		got = append(got, p.String())
		if d.ArtifactType != "" || d.Platform.Variant != "" {
			fail("image index: %s: artifactType %q variant %q, want neither", p, d.ArtifactType, d.Platform.Variant)
		}
		im, err := verifyImage(a, d, p, want)
		if err != nil {
			fail("%s: %w", p, err)
			continue
		}
		rep.Images[p.String()] = *im
	}
	var wantNames []string
	for _, p := range want.Platforms {
		wantNames = append(wantNames, p.String())
	}
	sort.Strings(got)
	sort.Strings(wantNames)
	if !slices.Equal(got, wantNames) {
		fail("image index: platforms %v, want %v", got, wantNames)
	}

	// Nothing else in the archive.
	for name := range a.files {
		if name != "oci-layout" && name != "index.json" && !a.used[name] {
			fail("unreferenced file in the archive: %s", name)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rep, nil
}

func verifyImage(a *archive, d descriptor, p Platform, want Expect) (*ImageReport, error) {
	if d.MediaType != mediaTypeManifest {
		return nil, fmt.Errorf("manifest %s: media type %q, want %s", d.Digest, d.MediaType, mediaTypeManifest)
	}
	b, err := a.blob(d)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := decodeJSON(b, &m, "manifest"); err != nil {
		return nil, err
	}
	if m.SchemaVersion != 2 || m.MediaType != mediaTypeManifest {
		return nil, fmt.Errorf("manifest: schemaVersion %d mediaType %q", m.SchemaVersion, m.MediaType)
	}
	if m.Config.MediaType != mediaTypeConfig {
		return nil, fmt.Errorf("config media type %q, want %s", m.Config.MediaType, mediaTypeConfig)
	}
	b, err = a.blob(m.Config)
	if err != nil {
		return nil, err
	}
	var cfg imageConfig
	if err := decodeJSON(b, &cfg, "config"); err != nil {
		return nil, err
	}
	if cfg.OS != p.OS || cfg.Architecture != p.Architecture {
		return nil, fmt.Errorf("config says %s/%s, the index says %s", cfg.OS, cfg.Architecture, p)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{BinaryPath}) {
		return nil, fmt.Errorf("entrypoint %q, want [%q]", cfg.Config.Entrypoint, BinaryPath)
	}
	for _, l := range []string{LabelSource, LabelVersion, LabelRevision} {
		if cfg.Config.Labels[l] == "" {
			return nil, fmt.Errorf("label %s is missing", l)
		}
	}
	if want.Version != "" && cfg.Config.Labels[LabelVersion] != want.Version {
		return nil, fmt.Errorf("label %s is %q, want %q", LabelVersion, cfg.Config.Labels[LabelVersion], want.Version)
	}
	if len(m.Layers) != 1 || cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 {
		return nil, fmt.Errorf("%d layers and %d diff_ids (rootfs type %q), want one layer", len(m.Layers), len(cfg.RootFS.DiffIDs), cfg.RootFS.Type)
	}
	if m.Layers[0].MediaType != mediaTypeLayerGz {
		return nil, fmt.Errorf("layer media type %q, want %s", m.Layers[0].MediaType, mediaTypeLayerGz)
	}
	b, err = a.blob(m.Layers[0])
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxBlob+1))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	sum := sha256.Sum256(raw)
	if diffID := "sha256:" + hex.EncodeToString(sum[:]); diffID != cfg.RootFS.DiffIDs[0] {
		return nil, fmt.Errorf("layer diff_id %s, config says %s", diffID, cfg.RootFS.DiffIDs[0])
	}
	im := &ImageReport{ManifestDigest: d.Digest, Labels: cfg.Config.Labels}
	if err := verifyLayer(raw, p, want.ELF, im); err != nil {
		return nil, err
	}
	return im, nil
}

// verifyLayer checks the layer's files: usr/, usr/bin/ and the binary.
func verifyLayer(raw []byte, p Platform, wantELF bool, im *ImageReport) error {
	tr := tar.NewReader(bytes.NewReader(raw))
	var names []string
	var bin []byte
	found := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 {
			return fmt.Errorf("layer: %s is owned by %d:%d, want root", hdr.Name, hdr.Uid, hdr.Gid)
		}
		if hdr.Name != strings.TrimPrefix(BinaryPath, "/") {
			if !slices.Contains(binaryParents(), hdr.Name) || hdr.Typeflag != tar.TypeDir || hdr.Mode&0o7777 != 0o755 {
				return fmt.Errorf("layer: unexpected entry %s (type %q mode %#o)", hdr.Name, hdr.Typeflag, hdr.Mode)
			}
			continue
		}
		found = true
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("layer: %s is of type %q, want a regular file", hdr.Name, hdr.Typeflag)
		}
		mode := fs.FileMode(hdr.Mode & 0o7777)
		if mode != 0o755 {
			return fmt.Errorf("layer: %s has mode %#o, want 0755", hdr.Name, mode)
		}
		if bin, err = io.ReadAll(tr); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		if len(bin) == 0 {
			return fmt.Errorf("layer: %s is empty", hdr.Name)
		}
		im.Mode, im.UID, im.GID, im.Size = mode, hdr.Uid, hdr.Gid, hdr.Size
	}
	if !found {
		return fmt.Errorf("layer: no %s among %v", strings.TrimPrefix(BinaryPath, "/"), names)
	}
	if wantELF {
		return checkELF(bin, p)
	}
	return nil
}

// binaryParents are the directory entries a layer has besides the binary:
// "usr/", "usr/bin/".
func binaryParents() []string {
	var out []string
	for d := path.Dir(strings.TrimPrefix(BinaryPath, "/")); d != "."; d = path.Dir(d) {
		out = append([]string{d + "/"}, out...)
	}
	return out
}

// elfMachines are the ELF machine and byte order of each architecture.
var elfMachines = map[string]struct {
	machine elf.Machine
	order   binary.ByteOrder
}{
	"amd64":   {elf.EM_X86_64, binary.LittleEndian},
	"arm64":   {elf.EM_AARCH64, binary.LittleEndian},
	"ppc64le": {elf.EM_PPC64, binary.LittleEndian},
	"ppc64":   {elf.EM_PPC64, binary.BigEndian},
	"s390x":   {elf.EM_S390, binary.BigEndian},
}

// checkELF requires a static executable (no interpreter) for p.
func checkELF(bin []byte, p Platform) error {
	want, ok := elfMachines[p.Architecture]
	if !ok {
		return fmt.Errorf("no ELF machine known for %s", p.Architecture)
	}
	ef, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	defer func() { _ = ef.Close() }() // reads from memory: nothing to report
	if ef.Machine != want.machine || ef.ByteOrder != want.order || ef.Class != elf.ELFCLASS64 {
		return fmt.Errorf("binary is %s %s %s, want %s %s for %s", ef.Class, ef.Machine, ef.ByteOrder, want.machine, want.order, p)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return fmt.Errorf("binary is of ELF type %s, want an executable", ef.Type)
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("binary is dynamically linked (has an ELF interpreter); build it with CGO_ENABLED=0")
		}
	}
	return nil
}
