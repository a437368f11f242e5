// Package e2e holds the cluster tests (build tag e2e): test/e2e/run.sh, `make e2e`. See test/e2e/README.md.
package e2e
