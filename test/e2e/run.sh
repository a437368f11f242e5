#!/usr/bin/env bash
# The cluster test suite (make e2e): the image from `make image` (linux/amd64), the local cluster
# (test/e2e/cluster, started if needed), the image imported with ctr, the node's devices (devices.sh), the driver
# installed with `kubectl apply -k test/e2e/overlay` (the shipped deploy/kustomize/overlays/dra, patched), then
# the scenarios (Go tests with the build tag e2e; the last one, 18-legacy-device-plugin, uninstalls the driver and
# runs the legacy overlay through test/e2e/overlay-legacy instead). The current release's image (for scenario 17)
# is built from E2E_RELEASE_COMMIT once and cached. Prints "e2e: <name>: ok|FAIL <reason>" per scenario and
# "N passed, M failed"; on failure, the plugin's, kubelet's and containerd's logs and the objects' YAML.
# Afterwards: test objects deleted, driver uninstalled, devices removed; the cluster stays up for a fast next run
# unless E2E_DOWN=1.
#   E2E_ONLY=REGEXP   run only the scenarios whose name matches
#   E2E_KEEP=1        leave the driver, devices and test objects in place (to look around)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[[ $(id -u) == 0 ]] || die "run as root"
T0=$SECONDS
mkdir -p "$OUT_DIR"
rc=0

teardown() {
	[[ ${E2E_KEEP:-} == 1 ]] && { log "E2E_KEEP=1: driver, devices and namespace e2e left in place"; return; }
	if [[ -f $E2E_STATE/env ]]; then
		kubectl delete namespace e2e --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
		# scenario 11's PersistentVolume and StorageClass (cluster-wide), when a run was cut short
		kubectl delete pv,storageclass -l e2e=yes --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true
		uninstall_driver
	fi
	devices_down
	if [[ ${E2E_DOWN:-} == 1 ]]; then
		make -C "$REPO_DIR" --no-print-directory e2e-down || rc=1
	fi
}

if ! { step "image (make image, linux/amd64)" build_image &&
	{ step "release image (commit ${E2E_RELEASE_COMMIT:0:7}, cached by commit)" build_release_image || true; } &&
	step "cluster (make e2e-up)" cluster_up &&
	step "import the image (ctr)" import_image &&
	step "node devices (devices.sh up)" devices_up &&
	step "install the driver (kubectl apply -k test/e2e/overlay)" install_driver; }; then
	log "setup failed; no scenario ran"
	echo "0 passed, 18 failed"
	[[ -f $E2E_STATE/env ]] && collect
	teardown
	exit 1
fi

log "== scenarios"
# make demo's example holds a disk while its pod exists
kubectl -n default delete pod single-block-device --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
kubectl -n default delete resourceclaimtemplate single-block-device --ignore-not-found >/dev/null 2>&1
(cd "$REPO_DIR" && go test -c -tags e2e -o "$OUT_DIR/e2e.test" ./test/e2e) || { teardown; exit 1; }
(cd "$OUT_DIR" && ./e2e.test -test.run '^TestE2E$' -test.timeout 40m ${E2E_VERBOSE:+-test.v}) 2>&1 | tee "$OUT_DIR/scenarios.log"
rc=${PIPESTATUS[0]}
grep -qE '^[0-9]+ passed, 0 failed$' "$OUT_DIR/scenarios.log" || rc=1
((rc == 0)) || collect
teardown
log "e2e finished in $((SECONDS - T0))s: $(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$OUT_DIR/scenarios.log" | tail -1)"
exit "$rc"
