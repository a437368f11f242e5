package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
)

// The checkpoint records which claims are prepared on this node, because
// the kubelet's Unprepare call only carries the claim's UID and name. It is
// one JSON file in the plugin's data directory:
//
//	{"version":"v2","checksum":"crc32c:1a2b3c4d","data":{"claims":{"<uid>":{...PreparedClaim...}}}}
//
// The checksum is CRC-32C (Castagnoli) over the exact bytes of "data" as
// they appear in the file. The file is replaced atomically
// (atomicfile.Write: a temp file of this plugin's in the same directory,
// fsynced, renamed over the old one, and the directory fsynced), so after a
// crash the file is either the old or the new checkpoint, never a mix.
//
// Version v2 adds each node's identity and each claim's boot ID. v1, which
// the release before wrote, is read too (its claims have neither; see
// State) and rewritten as v2. A v1 reader refuses v2 as a version it does
// not know rather than read it without the identities: see docs/design.md
// on downgrades.

const (
	// CheckpointFileName is the checkpoint's name in the data directory.
	CheckpointFileName = "checkpoint.json"
	// CheckpointVersion is the version this plugin writes.
	CheckpointVersion = "v2"
	// checkpointV1 is the version before node identities, still read.
	checkpointV1 = "v1"

	checksumPrefix = "crc32c:"
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// Checkpoint is the checkpoint's data.
type Checkpoint struct {
	Claims map[types.UID]*PreparedClaim `json:"claims"`
}

// NewCheckpoint returns an empty checkpoint.
func NewCheckpoint() *Checkpoint {
	return &Checkpoint{Claims: map[types.UID]*PreparedClaim{}}
}

type checkpointFile struct {
	Version  string          `json:"version"`
	Checksum string          `json:"checksum"`
	Data     json.RawMessage `json:"data"`
}

// CorruptCheckpointError says that the checkpoint file exists and was read
// but its content cannot be trusted. Reading errors (permissions, I/O) are
// not corruption and are returned as they are.
type CorruptCheckpointError struct {
	Path   string
	Reason string
}

func (e *CorruptCheckpointError) Error() string {
	return fmt.Sprintf("checkpoint %s is corrupt: %s", e.Path, e.Reason)
}

// IsCorruptCheckpoint reports whether err is, or wraps, a CorruptCheckpointError.
func IsCorruptCheckpoint(err error) bool {
	var ce *CorruptCheckpointError
	return errors.As(err, &ce)
}

func checksum(data []byte) string {
	return fmt.Sprintf("%s%08x", checksumPrefix, crc32.Checksum(data, crc32c))
}

// encodeCheckpointData is the canonical encoding of the data: compact JSON,
// map keys sorted (encoding/json sorts them).
func encodeCheckpointData(cp *Checkpoint) ([]byte, error) {
	if cp.Claims == nil {
		cp = NewCheckpoint()
	}
	return json.Marshal(cp)
}

// LoadCheckpoint reads the checkpoint at path. A missing file is an empty
// checkpoint. It also returns the raw data bytes, which let a caller skip
// rewriting an unchanged checkpoint.
func LoadCheckpoint(path string) (*Checkpoint, []byte, error) {
	cp, raw, _, err := loadCheckpointFile(path)
	return cp, raw, err
}

// checkpointMeta is what the file says besides its data.
type checkpointMeta struct {
	version string
	modTime time.Time
}

func loadCheckpointFile(path string) (*Checkpoint, []byte, checkpointMeta, error) {
	var meta checkpointMeta
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewCheckpoint(), nil, meta, nil
	}
	if err != nil {
		return nil, nil, meta, fmt.Errorf("read checkpoint: %w", err)
	}
	if fi, err := os.Stat(path); err == nil {
		meta.modTime = fi.ModTime()
	}
	corrupt := func(format string, args ...any) error {
		return &CorruptCheckpointError{Path: path, Reason: fmt.Sprintf(format, args...)}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil, meta, corrupt("the file is empty")
	}
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, nil, meta, corrupt("not valid JSON: %v", err)
	}
	if f.Version != CheckpointVersion && f.Version != checkpointV1 {
		if f.Version == "" {
			return nil, nil, meta, corrupt("no version field")
		}
		return nil, nil, meta, corrupt("version %q is not supported (this plugin reads %q and %q; was it written by a newer plugin?)", f.Version, CheckpointVersion, checkpointV1)
	}
	meta.version = f.Version
	if len(f.Data) == 0 {
		return nil, nil, meta, corrupt("no data field")
	}
	if got := checksum(f.Data); f.Checksum != got {
		return nil, nil, meta, corrupt("checksum mismatch: the file says %q, the data hashes to %q", f.Checksum, got)
	}
	cp := NewCheckpoint()
	if err := json.Unmarshal(f.Data, cp); err != nil {
		return nil, nil, meta, corrupt("data does not decode: %v", err)
	}
	if cp.Claims == nil {
		cp.Claims = map[types.UID]*PreparedClaim{}
	}
	for uid, pc := range cp.Claims {
		if pc == nil {
			return nil, nil, meta, corrupt("claim %s has no entry", uid)
		}
		if pc.UID != uid {
			return nil, nil, meta, corrupt("claim %s is recorded under UID %q", uid, pc.UID)
		}
	}
	return cp, []byte(f.Data), meta, nil
}

// SaveCheckpoint replaces the checkpoint at path atomically and durably.
func SaveCheckpoint(path string, cp *Checkpoint) error {
	data, err := encodeCheckpointData(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	return writeCheckpointData(path, data, nil)
}

// writeCheckpointData writes the checkpoint file for data through
// atomicfile.Write; hook is its fault hook (tests), called with the
// points prefixed "checkpoint:". A *atomicfile.NotDurableError means the
// new content is in place.
func writeCheckpointData(path string, data []byte, hook func(string) error) error {
	b, err := json.Marshal(checkpointFile{Version: CheckpointVersion, Checksum: checksum(data), Data: data})
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	b = append(b, '\n')
	o := atomicfile.Options{Perm: 0o600}
	if hook != nil {
		o.Hook = func(p string) error { return hook("checkpoint:" + p) }
	}
	if err := atomicfile.Write(path, b, o); err != nil {
		return fmt.Errorf("write the checkpoint %s: %w", path, err)
	}
	return nil
}
