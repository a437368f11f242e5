package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks bounds symbolic link resolution, as the kernel does.
const maxSymlinks = 40

// hostFS reads the host's files under a root directory. Host paths are
// absolute, clean paths as the host sees them (/dev/sda); real paths have the
// root prepended. Symbolic links are resolved with the root as "/", so an
// absolute link target such as /proc/self/fd never escapes into the
// namespace discovery runs in. One hostFS serves one discovery pass: it
// caches directory resolutions and listings.
type hostFS struct {
	root string
	stat StatFunc

	dirs     map[string]resolved
	listings map[string][]string
	buf      []byte

	// warning is set when the mount table does not look like the host's.
	warning string
}

type resolved struct {
	path string
	err  error
}

// node is what a stat of a host path found.
type node struct {
	resolved string // host path with links resolved
	mode     fs.FileMode
	major    uint32
	minor    uint32
}

func newHostFS(root string, stat StatFunc) *hostFS {
	return &hostFS{
		root:     root,
		stat:     stat,
		dirs:     make(map[string]resolved),
		listings: make(map[string][]string),
		buf:      make([]byte, 4096),
	}
}

// real maps a host path to the path discovery opens.
func (h *hostFS) real(hostPath string) string {
	if h.root == "/" {
		return hostPath
	}
	if hostPath == "/" {
		return h.root
	}
	return h.root + hostPath
}

// resolve follows symbolic links in the absolute host path p inside the root
// and returns the host path of the file it names. The file must exist.
func (h *hostFS) resolve(p string) (string, error) {
	links := 0
	return h.resolveN(path.Clean(p), &links)
}

func (h *hostFS) resolveN(p string, links *int) (string, error) {
	if p == "/" {
		return "/", nil
	}
	dir, base := path.Split(p)
	dir = path.Clean(dir)
	rdir, ok := h.dirs[dir]
	if !ok {
		d, err := h.resolveN(dir, links)
		rdir = resolved{path: d, err: err}
		h.dirs[dir] = rdir
	}
	if rdir.err != nil {
		return "", rdir.err
	}
	next := path.Join(rdir.path, base)
	fi, err := os.Lstat(h.real(next))
	if err != nil {
		return "", err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return next, nil
	}
	*links++
	if *links > maxSymlinks {
		return "", &fs.PathError{Op: "resolve", Path: p, Err: unix.ELOOP}
	}
	target, err := os.Readlink(h.real(next))
	if err != nil {
		return "", err
	}
	if !path.IsAbs(target) {
		// rdir holds no links, so cleaning ".." against it is exact.
		target = path.Join(rdir.path, target)
	}
	return h.resolveN(path.Clean(target), links)
}

// statPath resolves and stats a host path.
func (h *hostFS) statPath(p string) (node, error) {
	r, err := h.resolve(p)
	if err != nil {
		return node{}, err
	}
	mode, major, minor, err := h.stat(h.real(r))
	if err != nil {
		return node{}, err
	}
	return node{resolved: r, mode: mode, major: major, minor: minor}, nil
}

// exists reports whether the host path names an existing file, links
// followed.
func (h *hostFS) exists(p string) bool {
	_, err := h.resolve(p)
	return err == nil
}

// list returns the sorted names in the host directory p (links followed).
// A missing or unreadable directory lists as empty.
func (h *hostFS) list(p string) []string {
	r, err := h.resolve(p)
	if err != nil {
		return nil
	}
	if names, ok := h.listings[r]; ok {
		return names
	}
	names, _ := readDirNames(h.real(r))
	sort.Strings(names)
	h.listings[r] = names
	return names
}

// glob expands an absolute path.Match pattern over host paths. Directories
// are resolved inside the root. A pattern without metacharacters yields
// itself when the file exists.
func (h *hostFS) glob(pattern string) []string {
	pattern = path.Clean(pattern)
	if !hasMeta(pattern) {
		if h.exists(pattern) {
			return []string{pattern}
		}
		return nil
	}
	dir, file := path.Split(pattern)
	dir = path.Clean(dir)
	dirs := []string{dir}
	if hasMeta(dir) {
		dirs = h.glob(dir)
	}
	var out []string
	for _, d := range dirs {
		for _, name := range h.list(d) {
			if ok, _ := path.Match(file, name); ok {
				out = append(out, path.Join(d, name))
			}
		}
	}
	return out
}

// hasMeta reports whether p holds path.Match metacharacters.
func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// readDirNames lists a real directory without sorting.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// readRawAt reads a small file (a sysfs attribute) into the shared buffer;
// the result is valid until the next call. name is relative to the
// directory dirfd, or a path when dirfd is unix.AT_FDCWD: opening
// attributes relative to their device's directory saves walking the long
// sysfs path again for each.
func (h *hostFS) readRawAt(dirfd int, name string) ([]byte, bool) {
	var fd int
	var err error
	for {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	n := 0
	for n < len(h.buf) {
		m, err := unix.Read(fd, h.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if m == 0 {
			break
		}
		n += m
		if n < len(h.buf) {
			// A short read of a sysfs attribute or a regular file
			// is its end: save the read that would return 0.
			break
		}
	}
	return h.buf[:n], true
}

// sysDir reads the attributes of one sysfs directory.
type sysDir struct {
	h  *hostFS
	fd int // unix.AT_FDCWD when the directory could not be opened
	// prefix is prepended to names: "" with a directory descriptor, else
	// the directory's real path and "/".
	prefix string
}

func (h *hostFS) openSysDir(realPath string) sysDir {
	fd, err := unix.Open(realPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return sysDir{h: h, fd: unix.AT_FDCWD, prefix: realPath + "/"}
	}
	return sysDir{h: h, fd: fd}
}

func (d sysDir) close() {
	if d.fd != unix.AT_FDCWD {
		unix.Close(d.fd)
	}
}

func (d sysDir) raw(name string) ([]byte, bool) { return d.h.readRawAt(d.fd, d.prefix+name) }

func (d sysDir) attr(name string) (string, bool) {
	b, ok := d.raw(name)
	if !ok {
		return "", false
	}
	return cleanString(b), true
}

func (d sysDir) is1(name string) bool {
	s, ok := d.attr(name)
	return ok && s == "1"
}

// links lists a directory of links such as holders/ or slaves/, sorted.
func (d sysDir) links(name string) []string {
	fd, err := unix.Openat(d.fd, d.prefix+name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), name)
	names, _ := f.Readdirnames(-1)
	f.Close()
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return names
}

func cleanString(b []byte) string {
	return strings.Trim(string(b), " \t\r\n\x00")
}

// readFile reads a whole file under the root (mountinfo, swaps).
func (h *hostFS) readFile(hostPath string) ([]byte, error) {
	return os.ReadFile(h.real(hostPath))
}

// parseDevNum parses "8:1".
func parseDevNum(s string) (uint32, uint32, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	a, err1 := parseUint32(maj)
	b, err2 := parseUint32(min)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	return a, b, nil
}

func parseUint32(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err
}

func parseUint64(s string) (uint64, error) {
	return strconv.ParseUint(s, 10, 64)
}
