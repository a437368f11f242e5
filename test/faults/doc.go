// Package faults is the fault-injection suite (build tag faults): test/faults/run.sh, `make test-faults`.
// See test/faults/README.md.
package faults
