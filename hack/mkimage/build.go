package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// BinaryPath is where the binary lives in the image.
	BinaryPath = "/usr/bin/power-dev-plugin"
	// DefaultSource is the org.opencontainers.image.source label.
	DefaultSource = "https://github.com/power-dev-plugin/power-dev-plugin"

	// Annotations and labels (OCI image spec, annotations.md).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName is what containerd's importer reads first
	// (images.AnnotationImageName); set to the same full reference.
	AnnotationContainerdName = "io.containerd.image.name"
	LabelSource              = "org.opencontainers.image.source"
	LabelVersion             = "org.opencontainers.image.version"
	LabelRevision            = "org.opencontainers.image.revision"
	LabelTitle               = "org.opencontainers.image.title"
	LabelCreated             = "org.opencontainers.image.created"
)

// DefaultPlatforms are the platforms the project ships.
var DefaultPlatforms = []string{"linux/amd64", "linux/ppc64le", "linux/s390x"}

// Platform is an OS/ARCH pair.
type Platform struct {
	OS, Architecture string
}

func (p Platform) String() string { return p.OS + "/" + p.Architecture }

// ParsePlatform reads "linux/amd64". Variants (arm/v7) are not needed here
// and not accepted.
func ParsePlatform(s string) (Platform, error) {
	os, arch, ok := strings.Cut(s, "/")
	if !ok || os == "" || arch == "" || strings.Contains(arch, "/") {
		return Platform{}, fmt.Errorf("want OS/ARCH such as linux/amd64, got %q", s)
	}
	return Platform{OS: os, Architecture: arch}, nil
}

// Binary is the binary of one platform.
type Binary struct {
	Platform Platform
	Path     string
}

// Options are the image's metadata.
type Options struct {
	// Tag is the full image reference written as the ref.name annotation.
	Tag string
	// Version, Revision and Source become OCI labels.
	Version, Revision, Source string
	// Created is the files' mtime and the config's created time.
	Created time.Time
}

// ManifestResult describes one platform's image.
type ManifestResult struct {
	Platform   Platform
	Digest     v1.Hash
	BinarySize int64
	LayerSize  int64
}

// Result describes a built archive.
type Result struct {
	IndexDigest v1.Hash
	Manifests   []ManifestResult
	ArchiveSize int64
}

// Build makes the image index of bins and writes it to out as an OCI
// archive. With layoutDir set, the unpacked OCI layout is kept there (the
// directory must not exist).
func Build(bins []Binary, opts Options, out, layoutDir string) (*Result, error) {
	if opts.Tag == "" {
		return nil, errors.New("the image reference (tag) is required")
	}
	seen := map[Platform]bool{}
	for _, b := range bins {
		if seen[b.Platform] {
			return nil, fmt.Errorf("platform %s given twice", b.Platform)
		}
		seen[b.Platform] = true
	}

	// The platforms' images are independent; compressing a binary takes a
	// few seconds, so build them at the same time.
	type built struct {
		img  v1.Image
		desc ManifestResult
		err  error
	}
	images := make([]built, len(bins))
	var wg sync.WaitGroup
	for i, b := range bins {
		wg.Go(func() {
			img, size, err := platformImage(b, opts)
			if err == nil {
				images[i].desc, err = describe(img, b.Platform, size)
			}
			images[i].img, images[i].err = img, err
		})
	}
	wg.Wait()

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	res := &Result{}
	for i, b := range bins {
		if err := images[i].err; err != nil {
			return nil, fmt.Errorf("%s: %w", b.Platform, err)
		}
		res.Manifests = append(res.Manifests, images[i].desc)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: imageNotArtifact{images[i].img},
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: b.Platform.OS, Architecture: b.Platform.Architecture},
			},
		})
	}
	var err error
	if res.IndexDigest, err = idx.Digest(); err != nil {
		return nil, err
	}

	dir := layoutDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mkimage-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = filepath.Join(tmp, "layout")
	} else if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("layout directory %s already exists", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("write OCI layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		AnnotationRefName:        opts.Tag,
		AnnotationContainerdName: opts.Tag,
	})); err != nil {
		return nil, fmt.Errorf("write OCI layout: %w", err)
	}
	if res.ArchiveSize, err = packArchive(dir, out, opts.Created); err != nil {
		return nil, err
	}
	return res, nil
}

// imageNotArtifact keeps go-containerregistry from writing an artifactType
// (the config's media type) into the index's descriptor of an image: the
// field is meant for artifacts, and an image index of plain images has no
// use for it.
type imageNotArtifact struct{ v1.Image }

func (imageNotArtifact) ArtifactType() (string, error) { return "", nil }

// describe summarises a platform's image for the build report.
func describe(img v1.Image, p Platform, binarySize int64) (ManifestResult, error) {
	d, err := img.Digest()
	if err != nil {
		return ManifestResult{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return ManifestResult{}, err
	}
	if len(layers) != 1 {
		return ManifestResult{}, fmt.Errorf("%d layers, want 1", len(layers))
	}
	lsize, err := layers[0].Size()
	if err != nil {
		return ManifestResult{}, err
	}
	return ManifestResult{Platform: p, Digest: d, BinarySize: binarySize, LayerSize: lsize}, nil
}

// platformImage is the image of one binary: an empty base, OCI media
// types, one layer, the config.
func platformImage(b Binary, opts Options) (v1.Image, int64, error) {
	bin, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, 0, err
	}
	if len(bin) == 0 {
		return nil, 0, fmt.Errorf("%s is empty", b.Path)
	}
	layerTar, err := binaryLayer(bin, opts.Created)
	if err != nil {
		return nil, 0, err
	}
	gz, err := gzipBytes(layerTar)
	if err != nil {
		return nil, 0, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, 0, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	labels := map[string]string{
		LabelTitle:   "power-dev-plugin",
		LabelSource:  opts.Source,
		LabelVersion: opts.Version,
		LabelCreated: opts.Created.UTC().Format(time.RFC3339),
	}
	if opts.Revision != "" {
		labels[LabelRevision] = opts.Revision
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: b.Platform.Architecture,
		OS:           b.Platform.OS,
		Created:      v1.Time{Time: opts.Created.UTC()},
		Config: v1.Config{
			Entrypoint: []string{BinaryPath},
			Env:        []string{"PATH=/usr/bin"},
			WorkingDir: "/",
			Labels:     labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, 0, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: opts.Created.UTC()},
			CreatedBy: "mkimage: " + BinaryPath + " (" + b.Platform.String() + ")",
			Comment:   "hack/mkimage",
		},
	})
	if err != nil {
		return nil, 0, err
	}
	return img, int64(len(bin)), nil
}

// binaryLayer is the uncompressed layer: usr/, usr/bin/ and the binary,
// root-owned, with fixed times.
func binaryLayer(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	name := strings.TrimPrefix(BinaryPath, "/")
	for _, d := range binaryParents() {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime,
			Uname: "root", Gname: "root", Format: tar.FormatUSTAR,
		}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime,
		Uname: "root", Gname: "root", Format: tar.FormatUSTAR,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses once, with no name or time in the header.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// packArchive writes the layout directory dir as a tar file at out: entries
// sorted, directories 0755 and files 0644, owned by root, all at mtime.
// The file is written next to out and renamed into place.
func packArchive(dir, out string, mtime time.Time) (int64, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("unexpected file type in the layout: %s", p)
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return 0, err
	}
	slices.Sort(names)

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range names {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return 0, err
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		hdr := &tar.Header{Name: rel, ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatUSTAR}
		if fi.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, rel+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return 0, err
			}
			continue
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, err
		}
		src, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, err
	}
	return size, nil
}
