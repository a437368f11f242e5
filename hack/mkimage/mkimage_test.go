package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testTag = "ghcr.io/power-dev-plugin/power-dev-plugin:v9.8.7"

func testPlatforms(t *testing.T) []Platform {
	t.Helper()
	var out []Platform
	for _, s := range DefaultPlatforms {
		p, err := ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// fakeELF is the smallest ELF executable debug/elf reads: a file header and
// one PT_LOAD program header, for the machine and byte order of arch.
func fakeELF(t *testing.T, arch string, interp bool) []byte {
	t.Helper()
	m, ok := elfMachines[arch]
	if !ok {
		t.Fatalf("no ELF machine for %s", arch)
	}
	var buf bytes.Buffer
	data := byte(elf.ELFDATA2LSB)
	if m.order == binary.BigEndian {
		data = byte(elf.ELFDATA2MSB)
	}
	nprog := uint16(1)
	if interp {
		nprog = 2
	}
	ident := [16]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), data, byte(elf.EV_CURRENT)}
	hdr := elf.Header64{
		Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(m.machine), Version: uint32(elf.EV_CURRENT),
		Entry: 0x401000, Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: nprog, Shentsize: 64,
	}
	if err := binary.Write(&buf, m.order, hdr); err != nil {
		t.Fatal(err)
	}
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x400000, Paddr: 0x400000, Filesz: 64, Memsz: 64, Align: 0x1000}}
	if interp {
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Off: 0, Filesz: 1, Memsz: 1, Align: 1})
	}
	for _, p := range progs {
		if err := binary.Write(&buf, m.order, p); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// writeBinaries writes one file per platform with content(p).
func writeBinaries(t *testing.T, dir string, content func(Platform) []byte) []Binary {
	t.Helper()
	var bins []Binary
	for _, p := range testPlatforms(t) {
		path := filepath.Join(dir, p.OS+"_"+p.Architecture, "power-dev-plugin")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content(p), 0o600); err != nil {
			t.Fatal(err)
		}
		bins = append(bins, Binary{Platform: p, Path: path})
	}
	return bins
}

func testOptions() Options {
	return Options{
		Tag: testTag, Version: "v9.8.7", Revision: "0123abc", Source: DefaultSource,
		Created: time.Unix(1764460800, 0).UTC(),
	}
}

// buildTestArchive builds an archive of fake ELF binaries and returns its path.
func buildTestArchive(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bins := writeBinaries(t, dir, func(p Platform) []byte { return fakeELF(t, p.Architecture, false) })
	out := filepath.Join(dir, "out", "image.oci.tar")
	if _, err := Build(bins, testOptions(), out, ""); err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out
}

// readTar returns the regular files and headers of a tar file.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header, []string) {
	t.Helper()
	files := map[string][]byte{}
	hdrs := map[string]*tar.Header{}
	var order []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, hdrs, order
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		hdrs[h.Name] = h
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}

func TestBuildThenVerify(t *testing.T) {
	out := buildTestArchive(t)
	rep, err := Verify(out, Expect{Tag: testTag, Platforms: testPlatforms(t), Version: "v9.8.7", ELF: true})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Tag != testTag {
		t.Errorf("tag %q", rep.Tag)
	}
	if len(rep.Images) != 3 {
		t.Fatalf("%d images, want 3", len(rep.Images))
	}
	for p, im := range rep.Images {
		if im.Mode != 0o755 || im.UID != 0 || im.GID != 0 {
			t.Errorf("%s: binary mode %v owner %d:%d", p, im.Mode, im.UID, im.GID)
		}
		if im.Labels[LabelRevision] != "0123abc" || im.Labels[LabelSource] != DefaultSource || im.Labels[LabelVersion] != "v9.8.7" {
			t.Errorf("%s: labels %v", p, im.Labels)
		}
	}

	// The archive's own layout, read without Verify: what the importers
	// look at first.
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, hdrs, order := readTar(t, f)
	if order[0] != "blobs/" {
		t.Errorf("entries are not sorted: %v", order)
	}
	for name, h := range hdrs {
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testOptions().Created) {
			t.Errorf("%s: owner %d:%d mtime %v", name, h.Uid, h.Gid, h.ModTime)
		}
	}
	if got := string(files["oci-layout"]); !strings.Contains(got, `"imageLayoutVersion": "1.0.0"`) && !strings.Contains(got, `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("oci-layout: %s", got)
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Annotations[AnnotationRefName] != testTag ||
		idx.Manifests[0].Annotations[AnnotationContainerdName] != testTag || idx.Manifests[0].MediaType != mediaTypeIndex {
		t.Errorf("index.json: %s", files["index.json"])
	}
}

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bins := writeBinaries(t, dir, func(p Platform) []byte { return []byte("binary for " + p.String()) })
	build := func(name string, opts Options) []byte {
		out := filepath.Join(dir, name)
		if _, err := Build(bins, opts, out, ""); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := build("a.tar", testOptions()), build("b.tar", testOptions())
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same input differ")
	}
	later := testOptions()
	later.Created = later.Created.Add(time.Hour)
	if bytes.Equal(a, build("c.tar", later)) {
		t.Error("a different -mtime gave the same archive")
	}
}

func TestBuildKeepsLayout(t *testing.T) {
	dir := t.TempDir()
	bins := writeBinaries(t, dir, func(p Platform) []byte { return []byte("x") })
	keep := filepath.Join(dir, "layout")
	if _, err := Build(bins, testOptions(), filepath.Join(dir, "x.tar"), keep); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"oci-layout", "index.json", "blobs/sha256"} {
		if _, err := os.Stat(filepath.Join(keep, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := Build(bins, testOptions(), filepath.Join(dir, "y.tar"), keep); err == nil {
		t.Error("Build wrote into an existing layout directory")
	}
}

func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	bins := writeBinaries(t, dir, func(p Platform) []byte { return []byte("x") })
	noTag := testOptions()
	noTag.Tag = ""
	if _, err := Build(bins, noTag, filepath.Join(dir, "a.tar"), ""); err == nil {
		t.Error("no error without a tag")
	}
	if _, err := Build(append(bins, bins[0]), testOptions(), filepath.Join(dir, "b.tar"), ""); err == nil {
		t.Error("no error for a platform given twice")
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Build([]Binary{{Platform: bins[0].Platform, Path: empty}}, testOptions(), filepath.Join(dir, "c.tar"), ""); err == nil {
		t.Error("no error for an empty binary")
	}
}

// rewrite copies the archive at src to a new file, passing every entry
// through edit (which may change the header and content, or return nil to
// drop the entry).
func rewrite(t *testing.T, src string, edit func(h *tar.Header, b []byte) []byte) string {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), "edited.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if b = edit(h, b); b == nil && h.Typeflag == tar.TypeReg {
			continue
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyRejects(t *testing.T) {
	good := buildTestArchive(t)
	want := Expect{Tag: testTag, Platforms: testPlatforms(t), Version: "v9.8.7", ELF: true}
	keep := func(h *tar.Header, b []byte) []byte { return b }

	cases := map[string]struct {
		archive string
		want    Expect
		errText string
	}{
		"other tag":        {good, Expect{Tag: "example.com/x:y", Platforms: want.Platforms}, "ref.name"},
		"other version":    {good, Expect{Version: "v1", Platforms: want.Platforms}, "image.version"},
		"missing platform": {good, Expect{Platforms: append(testPlatforms(t), Platform{"linux", "arm64"})}, "platforms"},
		"extra platform":   {good, Expect{Platforms: testPlatforms(t)[:2]}, "platforms"},
		"corrupt blob": {rewrite(t, good, func(h *tar.Header, b []byte) []byte {
			if strings.HasPrefix(h.Name, "blobs/") && len(b) > 0 && h.Typeflag == tar.TypeReg {
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 0xff
			}
			return b
		}), want, "has digest"},
		"no ref name": {rewrite(t, good, func(h *tar.Header, b []byte) []byte {
			if h.Name == "index.json" {
				return bytes.ReplaceAll(b, []byte(AnnotationRefName), []byte("x.y"))
			}
			return b
		}), Expect{Platforms: want.Platforms}, "no " + AnnotationRefName},
		"no oci-layout": {rewrite(t, good, func(h *tar.Header, b []byte) []byte {
			if h.Name == "oci-layout" {
				return nil
			}
			return b
		}), want, "oci-layout is missing"},
		"stray file": {rewrite(t, good, func(h *tar.Header, b []byte) []byte {
			if h.Name == "oci-layout" {
				h.Name = "blobs/sha256/stray"
			}
			return b
		}), Expect{Platforms: want.Platforms}, "unreferenced"},
		"unchanged copy is fine": {rewrite(t, good, keep), want, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(tc.archive, tc.want)
			switch {
			case tc.errText == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.errText != "" && err == nil:
				t.Fatalf("no error, want one containing %q", tc.errText)
			case tc.errText != "" && !strings.Contains(err.Error(), tc.errText):
				t.Fatalf("error %q does not contain %q", err, tc.errText)
			}
		})
	}
}

func TestVerifyLayer(t *testing.T) {
	amd64 := Platform{"linux", "amd64"}
	layer := func(mode int64, uid int, extra ...string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, d := range append([]string{"usr/", "usr/bin/"}, extra...) {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
				t.Fatal(err)
			}
		}
		bin := fakeELF(t, "amd64", false)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/power-dev-plugin", Mode: mode, Uid: uid, Size: int64(len(bin))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(bin); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if err := verifyLayer(layer(0o755, 0), amd64, true, &ImageReport{}); err != nil {
		t.Errorf("good layer: %v", err)
	}
	for name, raw := range map[string][]byte{
		"mode 0644":   layer(0o644, 0),
		"setuid":      layer(0o4755, 0),
		"not root":    layer(0o755, 1000),
		"extra entry": layer(0o755, 0, "etc/"),
	} {
		if err := verifyLayer(raw, amd64, true, &ImageReport{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCheckELF(t *testing.T) {
	for _, p := range testPlatforms(t) {
		if err := checkELF(fakeELF(t, p.Architecture, false), p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	s390x := Platform{"linux", "s390x"}
	if err := checkELF(fakeELF(t, "ppc64le", false), s390x); err == nil {
		t.Error("a ppc64le binary passed as s390x")
	}
	if err := checkELF(fakeELF(t, "ppc64", false), Platform{"linux", "ppc64le"}); err == nil {
		t.Error("a big-endian ppc64 binary passed as ppc64le")
	}
	if err := checkELF(fakeELF(t, "amd64", true), Platform{"linux", "amd64"}); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("dynamic binary: %v", err)
	}
	if err := checkELF([]byte("#!/bin/sh\n"), s390x); err == nil {
		t.Error("a script passed as ELF")
	}
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	var args []string
	for _, b := range writeBinaries(t, dir, func(p Platform) []byte { return fakeELF(t, p.Architecture, false) }) {
		args = append(args, "-binary", b.Platform.String()+"="+b.Path)
	}
	out := filepath.Join(dir, "cli.oci.tar")
	var stdout, stderr bytes.Buffer
	args = append([]string{"build", "-o", out, "-tag", testTag, "-revision", "abc", "-mtime", "1764460800"}, args...)
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr.String())
	}
	for _, p := range DefaultPlatforms {
		if !strings.Contains(stdout.String(), p) {
			t.Errorf("build output does not name %s:\n%s", p, stdout.String())
		}
	}
	stdout.Reset()
	// -version defaults to the tag's tag part.
	if code := run([]string{"verify", "-tag", testTag, "-version", "v9.8.7", "-elf", "-platforms", "linux/amd64 linux/ppc64le,linux/s390x", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("verify: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "OK: "+testTag) {
		t.Errorf("verify output: %s", stdout.String())
	}
	stderr.Reset()
	if code := run([]string{"verify", "-tag", "other:tag", out}, &stdout, &stderr); code != 1 {
		t.Errorf("verify of the wrong tag: exit %d", code)
	}
	for _, bad := range [][]string{
		{}, {"nope"}, {"build", "-o", out}, {"build", "-tag", "x:y", "-binary", "linux=x"},
		{"build", "-o", out, "-tag", "x:y", "-binary", "linux/amd64=" + out, "-mtime", "yesterday"},
		{"verify"}, {"verify", "-platforms", "amd64", out},
	} {
		if code := run(bad, io.Discard, io.Discard); code == 0 {
			t.Errorf("%q: exit 0", bad)
		}
	}
}

func TestTagOf(t *testing.T) {
	for ref, want := range map[string]string{
		"ghcr.io/power-dev-plugin/power-dev-plugin:v0.1.0": "v0.1.0",
		"localhost:5000/pdp":     "",
		"localhost:5000/pdp:dev": "dev",
		"pdp@sha256:abc":         "",
		"pdp:1.2@sha256:abc":     "1.2",
	} {
		if got := tagOf(ref); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", ref, got, want)
		}
	}
}
