#!/usr/bin/env bash
# Restart the e2e cluster's kubelet alone: SIGTERM (SIGKILL after 20 s), then up.sh, which starts only what is
# not running (here: the kubelet, with exactly its usual flags and config), waits for node localhost Ready and
# puts back the kernel settings the kubelet changes. Containers keep running across the restart.
# Used by the e2e scenario 13-legacy-device-plugin (a device plugin must register again by itself).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) == 0 ]] || die "run as root"
f=$E2E_PIDS/kubelet.pid
pid=$(cat "$f" 2>/dev/null || true)
[[ -n $pid && $(exe_of "$pid") == "$E2E_BIN/kubelet" ]] || die "the kubelet is not running (make e2e-up)"
log "stopping kubelet (pid $pid)"
kill "$pid"
for ((i = 0; i < 200; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
[[ -d /proc/$pid ]] && { log "kubelet did not stop, killing"; kill -9 "$pid"; sleep 0.5; }
rm -f "$f"
"$E2E_DIR/up.sh"
log "kubelet restarted (pid $(<"$f"))"
