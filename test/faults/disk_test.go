//go:build faults

package faults

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fill writes a file into the tmpfs at dir until it is full.
func fill(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, fillerName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64*1024)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			return err
		}
	}
	// the last pages of a partly written chunk
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return nil
}

// remount makes the tmpfs at dir read-only or writable again; while a file is open for writing it is busy.
func remount(dir string, ro bool) error {
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	if ro {
		flags |= unix.MS_RDONLY
	}
	return poll(10*time.Second, func() (bool, error) {
		err := unix.Mount("tmpfs", dir, "tmpfs", flags, "")
		if errors.Is(err, unix.EBUSY) {
			return false, nil
		}
		return true, err
	})
}

// dirFault breaks the CDI or the data directory (kind "full": the tmpfs filled up; "ro": remounted
// read-only) while two claims are prepared and two more are to be prepared:
//   - Prepare of the new claims must fail, saying why (the error of the file system), and leave nothing;
//   - Unprepare of a prepared claim must succeed, or fail saying why and succeed once the fault is over;
//   - the plugin must survive, and start again (kill -9) while the CDI directory is broken or the data
//     directory full; with a read-only data directory it cannot take its lock, and must end saying so;
//   - once the fault is over, everything prepares and unprepares, and nothing is left.
func (s *suite) dirFault(dir, kind string) {
	s.runs(1)
	before := s.newClaims("disk-before", []*loopDev{s.devs[0], s.devs[4]})
	during := s.newClaims("disk-during", []*loopDev{s.devs[1], s.devs[5]})
	s.mustPrepare(before, "before the fault")
	want := "no space left on device"
	lifted := false
	lift := func() {
		if lifted {
			return
		}
		lifted = true
		if kind == "ro" {
			if err := remount(dir, false); err != nil {
				s.abortf("remount %s writable: %v", dir, err)
			}
		} else if err := os.Remove(filepath.Join(dir, fillerName)); err != nil {
			s.abortf("remove the filler: %v", err)
		}
	}
	defer lift()
	if kind == "ro" {
		want = "read-only file system"
		if err := remount(dir, true); err != nil {
			s.abortf("remount %s read-only: %v", dir, err)
		}
	} else if err := fill(dir); err != nil {
		s.abortf("fill %s: %v", dir, err)
	}
	what := fmt.Sprintf("%s %s", filepath.Base(dir), map[string]string{"ro": "read-only", "full": "full"}[kind])

	r := s.prepare(during)
	for _, c := range r.ok {
		s.count(kError, "", "%s: Prepare of %s succeeded", what, c.name)
	}
	for c, msg := range r.failed {
		if !strings.Contains(msg, want) || !strings.Contains(msg, dir) {
			s.count(kError, "msg", "%s: Prepare of %s failed with %q: it does not name %q and the directory", what, c.name, msg, want)
		}
	}
	if r.err != nil {
		s.count(kError, "", "%s: the Prepare call failed as a whole: %v", what, r.err)
	}
	fmt.Printf("faults:   %s: Prepare failed: %s\n", what, r.firstErr())
	s.verify(what + ", after a Prepare failed")

	ru := s.unprepare(before[:1])
	for _, msg := range ru.failed {
		if !strings.Contains(msg, want) {
			s.count(kError, "umsg", "%s: Unprepare failed with %q, which does not name %q", what, msg, want)
		}
		fmt.Printf("faults:   %s: Unprepare failed: %s\n", what, msg)
	}
	if ru.err != nil {
		s.count(kError, "", "%s: the Unprepare call failed as a whole: %v", what, ru.err)
	}
	s.verify(what + ", after Unprepare")

	s.plugin.kill()
	if dir == s.data && kind == "ro" {
		// It cannot take its lock, so it can do nothing: it must say so and end.
		p := s.start(startOpts{why: "kill -9 and start with the " + what, exitOK: true})
		s.plugin = p
		if !p.waitExit(15 * time.Second) {
			s.count(kError, "", "%s: the plugin started (still running after 15 s)", what)
		} else if out := s.logTail(p, 3); !strings.Contains(out, want) || !strings.Contains(out, dir) {
			s.count(kError, "", "%s: the plugin ended (%s) without saying why:\n%s", what, p.exit, indent(out))
		} else {
			fmt.Printf("faults:   %s at start: %s: %s\n", what, p.exit, strings.TrimSpace(s.logTail(p, 1)))
		}
	} else {
		s.plugin = s.start(startOpts{why: "kill -9 and start with the " + what})
		if err := s.waitServing(s.plugin, 30*time.Second); err != nil {
			// it died, which is counted
		} else if dir == s.cdi && kind == "ro" {
			// A spec a failed Unprepare left cannot be removed before the directory is writable.
			s.verify(what + ", after kill -9 and a start")
		} else {
			s.verifyStarted(what + ", after kill -9 and a start")
		}
	}

	lift()
	s.ensureRunning("the fault is over")
	s.mustUnprepare(before[:1], "after the fault")
	s.mustPrepare(during, "after the fault")
	s.verify("after the " + what + " was fixed")
}
