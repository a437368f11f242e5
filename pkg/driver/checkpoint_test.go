package driver

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func ptCheckpoint(t testing.TB) *Checkpoint {
	t.Helper()
	cp := NewCheckpoint()
	for _, name := range []string{"foo", "bar"} {
		pc := NewPreparedClaim(mustPlan(t, ptClaim(name, ptResults(ptResult("all", "mp-all"))), ptInventory()))
		cp.Claims[pc.UID] = pc
	}
	return cp
}

func TestCheckpointRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), CheckpointFileName)
	cp := ptCheckpoint(t)
	if err := SaveCheckpoint(path, cp); err != nil {
		t.Fatal(err)
	}
	got, raw, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cp) {
		t.Errorf("loaded checkpoint differs:\n got %+v\nwant %+v", got, cp)
	}
	want, _ := encodeCheckpointData(cp)
	if string(raw) != string(want) {
		t.Error("raw data is not the canonical encoding")
	}
	// The file format is as documented.
	b, _ := os.ReadFile(path)
	var f map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if string(f["version"]) != `"v2"` || !strings.HasPrefix(string(f["checksum"]), `"crc32c:`) || f["data"] == nil {
		t.Errorf("file = %s", b)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(path + ".tmp*"); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestCheckpointMissingIsEmpty(t *testing.T) {
	cp, raw, err := LoadCheckpoint(filepath.Join(t.TempDir(), CheckpointFileName))
	if err != nil || cp == nil || len(cp.Claims) != 0 || raw != nil {
		t.Errorf("LoadCheckpoint = %+v, %q, %v", cp, raw, err)
	}
}

func TestCheckpointUnreadableIsNotCorrupt(t *testing.T) {
	// A directory where the file should be: a read error, which must not be
	// mistaken for corruption (that would move the file aside).
	path := filepath.Join(t.TempDir(), CheckpointFileName)
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadCheckpoint(path)
	if err == nil || IsCorruptCheckpoint(err) {
		t.Errorf("err = %v, want a plain read error", err)
	}
}

// ptCorruptions are checkpoint files that must not be trusted, and what
// the error must say.
func ptCorruptions(t testing.TB) []struct {
	name    string
	content func(good []byte) []byte
	want    string
} {
	return []struct {
		name    string
		content func(good []byte) []byte
		want    string
	}{
		{"garbage", func([]byte) []byte { return []byte("\x00\x01garbage") }, "is corrupt: not valid JSON"},
		{"empty", func([]byte) []byte { return nil }, "is corrupt: the file is empty"},
		{"truncated", func(g []byte) []byte { return g[:len(g)/2] }, "is corrupt: not valid JSON"},
		{"bad checksum", func(g []byte) []byte {
			// Change one device name inside the data; the JSON stays valid.
			return []byte(strings.Replace(string(g), `"device":"mp-all"`, `"device":"mp-alx"`, 1))
		}, "is corrupt: checksum mismatch: the file says \"crc32c:"},
		{"future version", func(g []byte) []byte {
			return []byte(strings.Replace(string(g), `"version":"v2"`, `"version":"v3"`, 1))
		}, `is corrupt: version "v3" is not supported (this plugin reads "v2" and "v1"; was it written by a newer plugin?)`},
		{"no version", func(g []byte) []byte {
			return []byte(strings.Replace(string(g), `"version":"v2",`, ``, 1))
		}, "is corrupt: no version field"},
		{"no data", func([]byte) []byte { return []byte(`{"version":"v2","checksum":"crc32c:00000000"}`) }, "is corrupt: no data field"},
		{"data of the wrong shape", func([]byte) []byte {
			data := `{"claims":[1,2]}`
			return []byte(`{"version":"v2","checksum":"` + checksum([]byte(data)) + `","data":` + data + `}`)
		}, "is corrupt: data does not decode"},
		{"entry under the wrong UID", func([]byte) []byte {
			data := `{"claims":{"a":{"uid":"b","devices":[]}}}`
			return []byte(`{"version":"v1","checksum":"` + checksum([]byte(data)) + `","data":` + data + `}`)
		}, `is corrupt: claim a is recorded under UID "b"`},
	}
}

func TestCheckpointCorruption(t *testing.T) {
	for _, tc := range ptCorruptions(t) {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), CheckpointFileName)
			if err := SaveCheckpoint(path, ptCheckpoint(t)); err != nil {
				t.Fatal(err)
			}
			good, _ := os.ReadFile(path)
			if err := os.WriteFile(path, tc.content(good), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadCheckpoint(path)
			if !IsCorruptCheckpoint(err) {
				t.Fatalf("err = %v, want a CorruptCheckpointError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "checkpoint "+path+" ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q\nwant it to name %s and say %q", msg, path, tc.want)
			}
		})
	}
}

func TestCheckpointEmptyClaimsMap(t *testing.T) {
	path := filepath.Join(t.TempDir(), CheckpointFileName)
	if err := SaveCheckpoint(path, &Checkpoint{}); err != nil {
		t.Fatal(err)
	}
	cp, _, err := LoadCheckpoint(path)
	if err != nil || cp.Claims == nil {
		t.Fatalf("LoadCheckpoint = %+v, %v", cp, err)
	}
	cp.Claims[types.UID("x")] = &PreparedClaim{UID: "x"} // must not panic
}
