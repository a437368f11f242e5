//go:build faults

package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// What the plugin's directories may hold besides the spec files of prepared claims.
var (
	dataAllowed = map[string]bool{driver.CheckpointFileName: true, "state.lock": true, "dra.sock": true, fillerName: true,
		metadataDir: true}
	regAllowed = map[string]bool{driverName + "-reg.sock": true}
)

// The kubeletplugin helper's device metadata (--device-metadata, on by default): per claim and request a file
// <data>/dra-device-metadata/<namespace>_<name>/<request>/metadata.json, and a CDI spec
// <cdi>/power-dev-plugin.io_metadata_<claim UID>_<request>.json that mounts it.
const metadataDir = "dra-device-metadata"

var metadataSpecPrefix = driverName + "_metadata_"

// metadataFiles lists the metadata tree: claim directory (<namespace>_<name>) -> its files, and anything that
// is not a metadata.json in its place.
func metadataFiles(root string) (byClaim map[string][]string, stray []string) {
	byClaim = map[string][]string{}
	claims, _ := os.ReadDir(root)
	for _, cd := range claims {
		p := filepath.Join(root, cd.Name())
		if !cd.IsDir() {
			stray = append(stray, p)
			continue
		}
		reqs, _ := os.ReadDir(p)
		if len(reqs) == 0 {
			stray = append(stray, p+"/")
		}
		for _, rd := range reqs {
			rp := filepath.Join(p, rd.Name())
			files, _ := os.ReadDir(rp)
			if !rd.IsDir() || len(files) == 0 {
				stray = append(stray, rp)
				continue
			}
			for _, f := range files {
				if f.Name() == "metadata.json" {
					byClaim[cd.Name()] = append(byClaim[cd.Name()], filepath.Join(rp, f.Name()))
				} else {
					stray = append(stray, filepath.Join(rp, f.Name()))
				}
			}
		}
	}
	return byClaim, stray
}

// specNodes is what a CDI spec file of the driver gives a container: "b 7:230 /dev/loop230" per node.
func specNodes(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec struct {
		Kind    string `json:"kind"`
		Devices []struct {
			Name  string `json:"name"`
			Edits struct {
				Nodes []struct {
					Path     string `json:"path"`
					HostPath string `json:"hostPath"`
					Type     string `json:"type"`
					Major    int64  `json:"major"`
					Minor    int64  `json:"minor"`
				} `json:"deviceNodes"`
			} `json:"containerEdits"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%s does not parse: %v", path, err)
	}
	var out []string
	for _, d := range spec.Devices {
		for _, n := range d.Edits.Nodes {
			hp := n.HostPath
			if hp == "" {
				hp = n.Path
			}
			out = append(out, fmt.Sprintf("%s %d:%d %s", n.Type, n.Major, n.Minor, hp))
		}
	}
	sort.Strings(out)
	return out, nil
}

func (d *loopDev) node() string { return fmt.Sprintf("b %d:%d %s", d.major, d.minor, d.path) }

// verify compares the plugin's files with what the kubelet was told, at a moment no call is running:
//   - lost: a claim the kubelet holds as prepared has no checkpoint entry or no spec file;
//   - changed: a spec file gives other device nodes than the claim's allocation;
//   - doubled: an exclusive device is in the spec files of two claims;
//   - leaked: a spec file or checkpoint entry of a claim that is not prepared, or any other file in the CDI,
//     data or registration directory (temporary files, files moved aside).
//
// A claim whose last call was cut short or failed may be either prepared or not, but its files must agree once
// the plugin started again (Reconcile repairs them): verifyStarted checks that too.
func (s *suite) verify(where string) { s.check(where, false) }

// verifyStarted is verify right after the plugin (re)started.
func (s *suite) verifyStarted(where string) { s.check(where, true) }

func (s *suite) check(where string, started bool) {
	cp, _, err := driver.LoadCheckpoint(filepath.Join(s.data, driver.CheckpointFileName))
	if err != nil {
		s.count(kError, "checkpoint "+err.Error(), "%s: the checkpoint cannot be read: %v", where, err)
		return
	}
	inCP := map[types.UID]bool{}
	for uid := range cp.Claims {
		inCP[uid] = true
	}
	specs := map[types.UID][]string{}
	metaSpecs := map[types.UID]bool{}
	entries, err := os.ReadDir(s.cdi)
	if err != nil {
		s.count(kError, "", "%s: list %s: %v", where, s.cdi, err)
	}
	for _, e := range entries {
		if e.Name() == fillerName || s.foreign[e.Name()] {
			continue
		}
		if rest, ok := strings.CutPrefix(e.Name(), metadataSpecPrefix); ok && strings.HasSuffix(rest, "_dev.json") {
			metaSpecs[types.UID(strings.TrimSuffix(rest, "_dev.json"))] = true
			continue
		}
		uid, ok := strings.CutPrefix(e.Name(), strings.TrimSuffix(driver.CDISpecName(""), ".json"))
		uid, okExt := strings.CutSuffix(uid, ".json")
		if !ok || !okExt || uid == "" {
			s.count(kLeaked, "file "+e.Name(), "%s: %s left in the CDI directory (%s)", where, e.Name(), describeFile(filepath.Join(s.cdi, e.Name())))
			continue
		}
		nodes, err := specNodes(filepath.Join(s.cdi, e.Name()))
		if err != nil {
			s.count(kLeaked, "file "+e.Name(), "%s: %v", where, err)
			continue
		}
		specs[types.UID(uid)] = nodes
	}
	for _, dir := range []struct {
		path    string
		allowed map[string]bool
	}{{s.data, dataAllowed}, {s.reg, regAllowed}} {
		entries, err := os.ReadDir(dir.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.count(kError, "", "%s: list %s: %v", where, dir.path, err)
		}
		for _, e := range entries {
			if !dir.allowed[e.Name()] {
				p := filepath.Join(dir.path, e.Name())
				s.count(kLeaked, "file "+p, "%s: %s left in %s (%s)", where, e.Name(), dir.path, describeFile(p))
			}
		}
	}

	metaByName, stray := metadataFiles(filepath.Join(s.data, metadataDir))
	for _, p := range stray {
		s.count(kLeaked, "file "+p, "%s: %s left in the device metadata directory (%s)", where, strings.TrimPrefix(p, s.data+"/"), describeFile(p))
	}

	s.mu.Lock()
	claims := make([]*claim, 0, len(s.claims))
	for _, c := range s.claims {
		claims = append(claims, c)
	}
	s.mu.Unlock()
	known := map[types.UID]*claim{}
	holders := map[string][]string{} // exclusive node -> claims whose spec gives it
	inUse := map[string]bool{}       // <namespace>_<name> of claims that are or may be prepared
	byUID := map[types.UID]*claim{}
	for _, c := range claims {
		byUID[c.uid] = c
		if c.state != stNone {
			inUse[nsName+"_"+c.name] = true
		}
	}
	for dir := range metaByName {
		if !inUse[dir] {
			s.count(kLeaked, "meta "+dir, "%s: the device metadata of claim %s, which is not prepared, is left (%s)", where, dir,
				filepath.Join(s.data, metadataDir, dir))
		}
	}
	for uid := range metaSpecs {
		if c := byUID[uid]; c == nil || c.state == stNone {
			s.count(kLeaked, "metaspec "+string(uid), "%s: the metadata CDI spec of claim UID %s, which is not prepared, is left", where, uid)
		}
	}
	for _, c := range claims {
		known[c.uid] = c
		if c.state == stPrepared && c.metadata && (!metaSpecs[c.uid] || len(metaByName[nsName+"_"+c.name]) == 0) {
			s.count(kLost, "metalost "+string(c.uid), "%s: claim %s was answered with its metadata file, but metadata CDI spec: %v, file: %v (its containers cannot start without them)",
				where, c.name, metaSpecs[c.uid], len(metaByName[nsName+"_"+c.name]) > 0)
		}
		nodes, hasSpec := specs[c.uid]
		switch c.state {
		case stPrepared:
			// While its device is unplugged, Restore removes the claim's spec (its pod must not get whatever
			// takes the device's number) and keeps the entry; it writes the spec again when the device is back.
			if !inCP[c.uid] || (!hasSpec && attached(c.dev)) {
				s.count(kLost, "lost "+string(c.uid), "%s: claim %s (%s) was prepared, but checkpoint entry: %v, spec file: %v",
					where, c.name, c.dev.path, inCP[c.uid], hasSpec)
			}
		case stNone:
			if inCP[c.uid] {
				s.count(kLeaked, "cp "+string(c.uid), "%s: the checkpoint holds claim %s (%s), which is not prepared", where, c.name, c.dev.path)
			}
			if hasSpec {
				s.count(kLeaked, "spec "+string(c.uid), "%s: the CDI spec of claim %s (%s), which is not prepared, is left", where, c.name, c.dev.path)
			}
		}
		if started && c.state == stUnknown && hasSpec != inCP[c.uid] {
			kind := kLeaked
			if inCP[c.uid] {
				kind = kError
			}
			s.count(kind, "half "+string(c.uid), "%s: claim %s: checkpoint entry: %v, spec file: %v", where, c.name, inCP[c.uid], hasSpec)
		}
		if hasSpec {
			if want := []string{c.dev.node()}; strings.Join(nodes, ",") != strings.Join(want, ",") {
				s.count(kChanged, "nodes "+string(c.uid), "%s: claim %s: its spec gives %v, its allocation is %v", where, c.name, nodes, want)
			}
			if c.dev.exclusive {
				for _, n := range nodes {
					holders[n] = append(holders[n], c.name)
				}
			}
		}
	}
	for uid := range specs {
		if known[uid] == nil {
			s.count(kLeaked, "spec "+string(uid), "%s: a CDI spec of a claim the suite never made: %s", where, uid)
		}
	}
	for uid := range inCP {
		if known[uid] == nil {
			s.count(kLeaked, "cp "+string(uid), "%s: a checkpoint entry of a claim the suite never made: %s", where, uid)
		}
	}
	for n, names := range holders {
		if len(names) > 1 {
			sort.Strings(names)
			s.count(kDoubled, "double "+n+strings.Join(names, ","), "%s: exclusive device %s is in the spec files of %d claims: %v", where, n, len(names), names)
		}
	}
}

func describeFile(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		return err.Error()
	}
	if !fi.Mode().IsRegular() {
		return fi.Mode().Type().String()
	}
	return fmt.Sprintf("%d bytes", fi.Size())
}
