package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CheckpointClaims counts the claims the checkpoint in the plugin's data
// directory records as prepared, for --mode=auto, which must not leave DRA
// while claims are prepared. It reads any checkpoint version ("data" with
// its "claims" map) and checks nothing else: no file is none, and an error
// means the file exists but cannot be read or decoded (it may hold claims).
func CheckpointClaims(dataDir string) (int, error) {
	path := filepath.Join(dataDir, CheckpointFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	var f struct {
		Data struct {
			Claims *map[string]json.RawMessage `json:"claims"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, fmt.Errorf("checkpoint %s: not valid JSON: %w", path, err)
	}
	if f.Data.Claims == nil {
		return 0, fmt.Errorf("checkpoint %s: no claims in its data", path)
	}
	return len(*f.Data.Claims), nil
}
