//go:build race

package soak

// The race detector's shadow of freed heap stays resident.
const raceEnabled = true
