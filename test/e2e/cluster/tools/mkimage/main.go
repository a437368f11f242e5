// Command mkimage packs host files into a single-layer OCI image archive that
// `ctr -n k8s.io image import` loads, so the e2e cluster needs no Docker and no registry.
//
//	mkimage -name registry.k8s.io/pause:3.10 -out pause.tar -entrypoint /pause /path/to/pause:/pause
//	mkimage -name docker.io/library/busybox:e2e -out busybox.tar -cmd sh -busybox /bin/busybox:/bin/busybox
//
// Each argument is SRC:DEST (a host file and its path in the image). -busybox SRC:DEST also
// adds a symlink next to DEST for every applet that `SRC --list` names (sh, ls, sleep, ...).
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	s := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(s[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func main() {
	name := flag.String("name", "", "image reference, e.g. registry.k8s.io/pause:3.10")
	out := flag.String("out", "", "output archive")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint")
	cmd := flag.String("cmd", "", "comma-separated default command")
	busybox := flag.String("busybox", "", "SRC:DEST of a busybox binary; adds its applets as symlinks")
	flag.Parse()
	if *name == "" || *out == "" || !strings.Contains(*name, ":") {
		fmt.Fprintln(os.Stderr, "usage: mkimage -name REPO:TAG -out FILE [-entrypoint A,B] [-cmd A,B] [-busybox SRC:DEST] SRC:DEST...")
		os.Exit(2)
	}
	if err := run(*name, *out, list(*entrypoint), list(*cmd), *busybox, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(name, out string, entrypoint, cmd []string, busybox string, files []string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dirs := map[string]bool{}
	epoch := time.Unix(0, 0)
	mkdir := func(d string, mode int64) error {
		if d == "" || d == "." || dirs[d] {
			return nil
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	mkparents := func(p string) error {
		parts := strings.Split(path.Dir(p), "/")
		for i := range parts {
			if err := mkdir(strings.Join(parts[:i+1], "/"), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	addFile := func(src, dest string, mode int64) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := mkparents(dest); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dest, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	}
	split := func(spec string) (string, string, error) {
		src, dest, ok := strings.Cut(spec, ":")
		dest = strings.Trim(dest, "/")
		if !ok || src == "" || dest == "" {
			return "", "", fmt.Errorf("want SRC:DEST, got %q", spec)
		}
		return src, dest, nil
	}

	for _, spec := range files {
		src, dest, err := split(spec)
		if err != nil {
			return err
		}
		if err := addFile(src, dest, 0o755); err != nil {
			return err
		}
	}
	if busybox != "" {
		src, dest, err := split(busybox)
		if err != nil {
			return err
		}
		if err := addFile(src, dest, 0o755); err != nil {
			return err
		}
		listing, err := exec.Command(src, "--list").Output()
		if err != nil {
			return fmt.Errorf("%s --list: %w", src, err)
		}
		applets := strings.Fields(string(listing))
		sort.Strings(applets)
		for _, a := range applets {
			link := path.Join(path.Dir(dest), a)
			if a == path.Base(dest) || a == "" {
				continue
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: link, Linkname: path.Base(dest), Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{"dev", "etc", "proc", "sys", "var", "root"} {
		if err := mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := mkdir("tmp", 0o1777); err != nil {
		return err
	}
	for n, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(content)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	layerBlob := blob{"application/vnd.oci.image.layer.v1.tar", layer.Bytes()}
	imageConfig := map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if len(entrypoint) > 0 {
		imageConfig["Entrypoint"] = entrypoint
	}
	if len(cmd) > 0 {
		imageConfig["Cmd"] = cmd
	}
	config := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       imageConfig,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerBlob.digest()}},
	}
	configBlob := blob{"application/vnd.oci.image.config.v1+json", mustJSON(config)}
	manifestBlob := blob{"application/vnd.oci.image.manifest.v1+json", mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configBlob.descriptor(),
		"layers":        []any{layerBlob.descriptor()},
	})}
	md := manifestBlob.descriptor()
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:],
	}
	md["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	index := mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})

	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	put := func(n string, data []byte) error {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := aw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	for _, b := range []blob{layerBlob, configBlob, manifestBlob} {
		if err := put("blobs/sha256/"+strings.TrimPrefix(b.digest(), "sha256:"), b.data); err != nil {
			return err
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, archive.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
