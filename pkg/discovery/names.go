package discovery

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
)

// maxNameLen is the length limit of a DNS-1123 label.
const maxNameLen = 63

// baseName maps a host path to a DNS-1123 label: without "/dev/", lower
// case, every run of other characters than [a-z0-9] turned into one "-",
// no "-" at either end. A name longer than 63 characters is cut and given a
// hash suffix.
func baseName(p string) string {
	name := sanitize(p)
	if name == "" || len(name) > maxNameLen {
		return hashedName(name, p, 6)
	}
	return name
}

// sanitize does the mapping of baseName without the length limit.
func sanitize(p string) string {
	s := strings.TrimPrefix(p, "/dev/")
	b := make([]byte, 0, len(s))
	dash := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') {
			if dash && len(b) > 0 {
				b = append(b, '-')
			}
			dash = false
			b = append(b, c)
			continue
		}
		dash = true
	}
	return string(b)
}

// hashedName appends "-" and n hex digits of sha256(p) to name, cutting name
// so that the result fits in a label.
func hashedName(name, p string, n int) string {
	if name == "" {
		name = "dev"
	}
	sum := sha256.Sum256([]byte(p))
	h := hex.EncodeToString(sum[:])[:n]
	if max := maxNameLen - 1 - n; len(name) > max {
		name = strings.TrimRight(name[:max], "-")
	}
	return name + "-" + h
}

// nameRank orders the claims on a contested name: a path that is exactly
// /dev/<name> first, then one that maps to it losslessly ("/" as "-"),
// then the rest.
func nameRank(name, p string) int {
	rest := strings.TrimPrefix(p, "/dev/")
	switch {
	case rest == name && rest != p:
		return 0
	case strings.ReplaceAll(rest, "/", "-") == name && rest != p:
		return 1
	default:
		return 2
	}
}

// assignNames gives every path a unique label. reserved are names that are
// taken already and never change (bundle group names). The result maps
// paths to names. It depends only on the set of paths, not their order.
func assignNames(paths []string, reserved []string) map[string]string {
	claims := make(map[string][]string)
	for _, p := range paths {
		n := baseName(p)
		claims[n] = append(claims[n], p)
	}
	taken := make(map[string]bool, len(paths)+len(reserved))
	for _, r := range reserved {
		taken[r] = true
	}
	out := make(map[string]string, len(paths))
	var losers []string
	for name, ps := range claims {
		if len(ps) == 1 && !taken[name] {
			out[ps[0]] = name
			continue
		}
		sort.Strings(ps)
		winner := ""
		if !taken[name] {
			best, bestRank, tie := "", 3, false
			for _, p := range ps {
				switch r := nameRank(name, p); {
				case r < bestRank:
					best, bestRank, tie = p, r, false
				case r == bestRank:
					tie = true
				}
			}
			if bestRank < 2 && !tie {
				winner = best
			}
		}
		for _, p := range ps {
			if p == winner {
				out[p] = name
			} else {
				losers = append(losers, p)
			}
		}
	}
	for _, n := range out {
		taken[n] = true
	}
	// Hashed names cannot meet plain ones in practice; should they, a
	// longer hash settles it, in path order.
	sort.Strings(losers)
	for _, p := range losers {
		base := sanitize(p)
		n := 6
		name := hashedName(base, p, n)
		for taken[name] && n < 16 {
			n += 2
			name = hashedName(base, p, n)
		}
		taken[name] = true
		out[p] = name
	}
	return out
}
