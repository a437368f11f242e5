package atomicfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// WriteCDISpec makes the CDI spec file at path (a .json name) hold spec,
// unless it holds exactly that already, through Write (hook is its
// Options.Hook). It reports whether it wrote, and what the file held before
// (nil when it did not exist or could not be read), for a caller that must
// undo the write. The spec is encoded as the CDI library encodes a .json
// spec, and checked by the library (cdi.ReadSpec of the temporary file, the
// validation a runtime applies) before it gets its name: a spec the runtime
// would refuse never replaces a good one.
func WriteCDISpec(path string, spec *cdispec.Spec, hook func(point string) error) (written bool, prev []byte, err error) {
	want, err := json.Marshal(spec)
	if err != nil {
		return false, nil, fmt.Errorf("encode CDI spec: %w", err)
	}
	prev, err = os.ReadFile(path)
	if err != nil {
		prev = nil
	}
	if prev != nil && bytes.Equal(prev, want) {
		return false, prev, nil
	}
	err = Write(path, want, Options{
		Perm:      0o600, // what the CDI library's writes gave
		MkdirPerm: 0o755,
		Check:     checkCDISpec,
		Hook:      hook,
	})
	var nd *NotDurableError
	if err != nil && !errors.As(err, &nd) {
		return false, prev, err
	}
	// Not synced to disk is no failure here: CDI specs live on a tmpfs
	// (/var/run/cdi), and both modes write them again after every start.
	return true, prev, nil
}

func checkCDISpec(tmpPath string) error {
	if _, err := cdi.ReadSpec(tmpPath, 0); err != nil {
		return fmt.Errorf("the CDI library refuses the spec: %w", err)
	}
	return nil
}
