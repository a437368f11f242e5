// Package atomicfile writes and removes the plugin's files (CDI specs of both
// modes, the checkpoint) so that a crash leaves under a file's name either
// its old or its new content, and at most a temporary file whose name says
// it is this plugin's. The CDI library names its temporary files
// spec.<digits>.tmp for every writer that uses it, so the plugin could not
// tell its own leftovers from another driver's; it writes through its own
// names instead and removes only those. docs/design.md says why.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

const (
	// owner is the plugin's name; every temporary file carries it.
	owner = v1alpha1.GroupName
	// TempPrefix starts the name of every temporary file the plugin
	// writes. The leading dot hides it from ls, and the ".tmp" ending
	// from the CDI cache, which loads only *.json and *.yaml.
	TempPrefix = "." + owner + "-"
	tempSuffix = ".tmp"
)

// Fault points of Write, passed to Options.Hook.
const (
	// PointTempCreated: the temporary file exists, empty.
	PointTempCreated = "temp-created"
	// PointTempWritten: the temporary file is complete and synced, not
	// yet renamed.
	PointTempWritten = "temp-written"
	// PointRemove: Remove is about to unlink the file.
	PointRemove = "remove"
)

// tempTag is what the temporary files of base carry after TempPrefix: base
// without the plugin's name at its start, which TempPrefix says already.
func tempTag(base string) string { return strings.TrimPrefix(base, owner+"-") }

// TempPattern is the name a temporary file of a write of path gets, with
// "*" for the random part: .power-dev-plugin.io-<tag>.*.tmp.
func TempPattern(path string) string {
	return TempPrefix + tempTag(filepath.Base(path)) + ".*" + tempSuffix
}

// IsTemp reports whether a file name (not a path) is one of Write's
// temporary files.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, TempPrefix) && strings.HasSuffix(name, tempSuffix)
}

// Options tune Write.
type Options struct {
	// Perm is the file's mode; 0 means 0600.
	Perm os.FileMode
	// MkdirPerm, when not 0, creates the directory (and its parents)
	// with that mode when it is missing.
	MkdirPerm os.FileMode
	// Check, when set, is run on the complete temporary file before it is
	// renamed: the content is checked as the file's readers will read it.
	Check func(tmpPath string) error
	// Hook, when set, is called at the Point* steps (tests inject faults
	// with it); an error it returns fails the write at that step.
	Hook func(point string) error
}

func (o *Options) hit(point string) error {
	if o.Hook == nil {
		return nil
	}
	return o.Hook(point)
}

// NotDurableError is returned when the new content is in place under the
// file's name but the directory could not be synced: readers see the new
// content; after a power loss the old one may come back.
type NotDurableError struct {
	Path string
	Err  error
}

func (e *NotDurableError) Error() string {
	return fmt.Sprintf("%s is in place, but syncing its directory failed, so it may be lost at a power loss: %v", e.Path, e.Err)
}

func (e *NotDurableError) Unwrap() error { return e.Err }

// Write replaces path with data atomically and durably: a temporary file in
// the same directory (TempPattern), held under an exclusive flock while it
// is written so that RemoveTemps leaves a write in progress alone, then
// fsync, Check, rename over path, and fsync of the directory. On any error
// but a *NotDurableError the temporary file is gone and path is as it was.
// Errors are those of the step that failed (they name the temporary file),
// with what to do for the common causes (Explain); the caller says what it
// was writing.
func Write(path string, data []byte, o Options) error {
	dir := filepath.Dir(path)
	fail := func(e error) error { return WithAdvice(e, dir) }
	if o.MkdirPerm != 0 {
		if err := os.MkdirAll(dir, o.MkdirPerm); err != nil {
			return fail(err)
		}
	}
	tmp, err := os.CreateTemp(dir, TempPattern(path))
	if err != nil {
		return fail(err)
	}
	// Closed also when a test's fault hook panics to simulate a crash, as
	// the kernel closes it (and drops the flock) when the process dies; the
	// file is removed only on the error paths, which a crash never takes.
	defer tmp.Close()
	abort := func(e error) error {
		_ = os.Remove(tmp.Name())
		return fail(e)
	}
	// A cleaner that took the lock between create and here is about to
	// unlink the name; the rename then fails and the caller retries.
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX); err != nil {
		return abort(fmt.Errorf("lock %s: %w", tmp.Name(), err))
	}
	if err := o.hit(PointTempCreated); err != nil {
		return abort(err)
	}
	perm := o.Perm
	if perm == 0 {
		perm = 0o600
	}
	if err := tmp.Chmod(perm); err != nil {
		return abort(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return abort(err)
	}
	if err := tmp.Sync(); err != nil {
		return abort(err)
	}
	if o.Check != nil {
		if err := o.Check(tmp.Name()); err != nil {
			_ = os.Remove(tmp.Name())
			return err
		}
	}
	if err := o.hit(PointTempWritten); err != nil {
		return abort(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return abort(err)
	}
	if err := SyncDir(dir); err != nil {
		return &NotDurableError{Path: path, Err: err}
	}
	return nil
}

// Remove removes path; a missing file is no error. hook, when set, is
// called at PointRemove first (tests).
func Remove(path string, hook func(point string) error) error {
	err := error(nil)
	if hook != nil {
		err = hook(PointRemove)
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return WithAdvice(err, filepath.Dir(path))
}

// RemoveTemps removes in dir the temporary files that writes of files whose
// names start with basePrefix left behind (a crash between create and
// rename), and returns their paths. A file a write still holds is left
// alone. Nothing else is touched: not other files of the plugin, and never
// another writer's. A missing directory has none.
func RemoveTemps(dir, basePrefix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, WithAdvice(fmt.Errorf("list %s: %w", dir, err), dir)
	}
	start := TempPrefix + tempTag(basePrefix)
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !IsTemp(name) || !strings.HasPrefix(name, start) {
			continue
		}
		p := filepath.Join(dir, name)
		ok, err := removeIfUnlocked(p)
		switch {
		case err != nil:
			errs = append(errs, WithAdvice(fmt.Errorf("remove a temporary file of a crashed write: %w", err), dir))
		case ok:
			removed = append(removed, p)
		}
	}
	return removed, errors.Join(errs...)
}

// removeIfUnlocked removes p unless a writer holds its flock.
func removeIfUnlocked(p string) (bool, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil // a write in progress
		}
		return false, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// SyncDir fsyncs a directory, which makes renames and removals in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
