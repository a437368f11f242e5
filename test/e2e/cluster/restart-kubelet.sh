#!/usr/bin/env bash
# Restart the e2e cluster's kubelet alone: SIGTERM (SIGKILL after 20 s), then up.sh, which starts only what is
# not running (here: the kubelet, with exactly its usual flags and config), waits for node localhost Ready and
# puts back the kernel settings the kubelet changes. Containers keep running across the restart.
#   restart-kubelet.sh          stop, then start
#   restart-kubelet.sh stop     stop only (a scenario then changes the node while no kubelet runs)
#   restart-kubelet.sh start    start only (up.sh)
# Used by the e2e scenarios 13-kubelet-restart, 14-reboot-renumbered-loops, 15-stale-claim-gc and
# 18-legacy-device-plugin (a device plugin must register again by itself).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) == 0 ]] || die "run as root"
f=$E2E_PIDS/kubelet.pid

stop_kubelet() {
	local pid
	pid=$(cat "$f" 2>/dev/null || true)
	[[ -n $pid && $(exe_of "$pid") == "$E2E_BIN/kubelet" ]] || die "the kubelet is not running (make e2e-up)"
	log "stopping kubelet (pid $pid)"
	kill "$pid"
	for ((i = 0; i < 200; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
	[[ -d /proc/$pid ]] && { log "kubelet did not stop, killing"; kill -9 "$pid"; sleep 0.5; }
	rm -f "$f"
}

start_kubelet() {
	"$E2E_DIR/up.sh"
	log "kubelet started (pid $(<"$f"))"
}

case ${1:-restart} in
stop) stop_kubelet ;;
start) start_kubelet ;;
restart) stop_kubelet; start_kubelet ;;
*) die "usage: $0 [stop|start|restart]" ;;
esac
