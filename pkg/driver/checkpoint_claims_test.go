package driver

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// CheckpointClaims counts what SaveCheckpoint wrote, and the claims of a
// checkpoint version it does not otherwise read; it never takes a file it
// cannot decode for an empty one.
func TestCheckpointClaims(t *testing.T) {
	dir := t.TempDir()
	if n, err := CheckpointClaims(dir); n != 0 || err != nil {
		t.Errorf("no checkpoint: %d, %v; want 0 and no error", n, err)
	}
	cp := NewCheckpoint()
	for _, uid := range []string{"uid-1", "uid-2"} {
		cp.Claims[types.UID(uid)] = &PreparedClaim{Namespace: "ns", Name: "c-" + uid, UID: types.UID(uid)}
	}
	if err := SaveCheckpoint(filepath.Join(dir, CheckpointFileName), cp); err != nil {
		t.Fatal(err)
	}
	if n, err := CheckpointClaims(dir); n != 2 || err != nil {
		t.Errorf("two prepared claims: %d, %v", n, err)
	}
	if err := SaveCheckpoint(filepath.Join(dir, CheckpointFileName), NewCheckpoint()); err != nil {
		t.Fatal(err)
	}
	if n, err := CheckpointClaims(dir); n != 0 || err != nil {
		t.Errorf("empty checkpoint: %d, %v", n, err)
	}
	for content, want := range map[string]int{
		`{"version":"v9","checksum":"x","data":{"claims":{"u":{"uid":"u"}},"bootID":"b"}}`: 1,
		`{"version":"v1","data":{}}`: -1,
		`not json`:                   -1,
		``:                           -1,
	} {
		if err := os.WriteFile(filepath.Join(dir, CheckpointFileName), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := CheckpointClaims(dir)
		if want < 0 && err == nil {
			t.Errorf("%q: %d claims and no error, want an error (it may hold claims)", content, n)
		}
		if want >= 0 && (n != want || err != nil) {
			t.Errorf("%q: %d, %v; want %d", content, n, err, want)
		}
	}
}
