#!/usr/bin/env bash
# The fault-injection suite (make test-faults): the release binary (make build) and its faultinject build
# (-tags faultinject: the State's fault points kill the process when POWER_DEV_PLUGIN_FAILPOINTS names them),
# driven through the DRA socket against the e2e cluster's API server (started if it is not up), with loop
# devices 230-237, tmpfs mounts and a host root under $FAULTS_DIR. Prints a table of lost, changed, doubled and
# leaked prepares, plugin deaths and errors per fault; fails unless all are 0. See test/faults/README.md.
#   FAULTS_SEED=N      reproduce a run's seeded choices (kill moments, kill points)
#   FAULTS_ONLY=REGEXP run only the faults whose name matches
#   FAULTS_BIN=PATH [FAULTS_FAILPOINT_BIN=PATH]  test another build (say an older commit's) with this suite
#   FAULTS_METADATA=1  run the plugin with --device-metadata=true (the helper's metadata files, off by default)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
source test/e2e/cluster/lib.sh
[[ $(id -u) == 0 ]] || die "run as root"
T0=$SECONDS
OUT=$REPO/_output/faults
FAULTS_DIR=${FAULTS_DIR:-/var/lib/power-dev-plugin-faults}
mkdir -p "$OUT"

# What a run that was killed leaves: mounts and loop devices (its plugin processes die with the suite: they
# get SIGKILL when it ends), and maybe the API server stopped.
cleanup() {
	if [[ -d $FAULTS_DIR ]]; then
		findmnt -rn -o TARGET | grep -F "$FAULTS_DIR/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
		for n in $(seq 230 237); do
			[[ $(cat /sys/block/loop$n/loop/backing_file 2>/dev/null) == "$FAULTS_DIR"/* ]] && losetup -d "/dev/loop$n"
		done
		rm -rf "$FAULTS_DIR"
	fi
	# the API server, if the run ended while it was stopped
	if [[ -f $E2E_STATE/env ]] && ! kubectl --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz >/dev/null 2>&1; then
		log "the API server is not answering: starting what is not running (up.sh)"
		"$E2E_DIR/up.sh" >>"$OUT/up.log" 2>&1 || log "up.sh failed: see $OUT/up.log"
	fi
}
cleanup
trap cleanup EXIT

log "== build: make build, the faultinject build, the suite"
if [[ -z ${FAULTS_BIN:-} ]]; then
	make --no-print-directory build >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
	CGO_ENABLED=0 go build -tags faultinject -trimpath -o bin/power-dev-plugin-faultinject ./cmd/kubelet-plugin \
		>>"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
	FAULTS_BIN=$REPO/bin/power-dev-plugin FAULTS_FAILPOINT_BIN=$REPO/bin/power-dev-plugin-faultinject
else
	log "testing $FAULTS_BIN (and ${FAULTS_FAILPOINT_BIN:-no faultinject build}) instead of this tree's build"
fi
go test -c -tags faults -o "$OUT/faults.test" ./test/faults >>"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }

log "== cluster (make e2e-up: starts it if it is not up)"
make --no-print-directory e2e-up >"$OUT/e2e-up.log" 2>&1 || { tail -30 "$OUT/e2e-up.log"; exit 1; }
# shellcheck disable=SC1091
source "$E2E_STATE/env"
if kubectl get daemonset -A -l app.kubernetes.io/name=power-dev-plugin -o name 2>/dev/null | grep -q .; then
	log "NOTE: the driver's DaemonSet is installed (make e2e with E2E_KEEP=1?); the suite uses a node of its own"
fi

log "== faults"
export FAULTS_BIN FAULTS_FAILPOINT_BIN=${FAULTS_FAILPOINT_BIN:-}
export FAULTS_DIR FAULTS_METADATA=${FAULTS_METADATA:-} FAULTS_OUT=$OUT FAULTS_REPO=$REPO E2E_STATE E2E_CACHE
(cd "$REPO/test/faults" && "$OUT/faults.test" -test.run '^TestFaults$' -test.timeout 15m ${FAULTS_VERBOSE:+-test.v}) 2>&1 |
	tee "$OUT/faults.log"
rc=${PIPESTATUS[0]}
log "faults finished in $((SECONDS - T0))s (rc $rc); plugin log: $OUT/plugin.log, table: $OUT/results.txt"
exit "$rc"
