# shellcheck shell=bash disable=SC2034 # (variables for the scripts that source this)
# Sourced by the e2e cluster scripts: pinned versions, where things go, small helpers.
# Override the locations with E2E_CACHE (built binaries, images) and E2E_STATE (PKI, data, logs).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.4.2
ETCD_VERSION=v3.7.3 # kubernetes v1.37 pins etcd 3.7 (build/dependencies.yaml); built by ./etcd
PAUSE_IMAGE=registry.k8s.io/pause:3.10
BUSYBOX_IMAGE=docker.io/library/busybox:e2e
# Debian packages the cluster needs at run time (build.sh installs the missing ones).
APT_PACKAGES=(runc containernetworking-plugins busybox-static openssl iptables iproute2 curl util-linux)

E2E_CACHE=${E2E_CACHE:-/var/cache/power-dev-plugin-e2e}
E2E_STATE=${E2E_STATE:-/var/lib/power-dev-plugin-e2e}
E2E_BIN=$E2E_CACHE/bin
E2E_IMAGES=$E2E_CACHE/images
E2E_LOGS=$E2E_STATE/logs
E2E_PIDS=$E2E_STATE/pids
E2E_PKI=$E2E_STATE/pki
KUBECONFIG_ADMIN=$E2E_STATE/admin.kubeconfig
# containerd: root (images, snapshots) and state (socket, task bundles) under the state dir.
# It still hard-codes the shim sockets under /run/containerd/s, which down.sh removes.
CONTAINERD_ROOT=$E2E_STATE/containerd/root
CONTAINERD_STATE=$E2E_STATE/containerd/state
CONTAINERD_SOCK=$CONTAINERD_STATE/containerd.sock
# Standard node paths, so a DaemonSet with the usual hostPaths works unchanged.
KUBELET_ROOT=/var/lib/kubelet
CDI_DIRS=(/etc/cdi /var/run/cdi)
# The CNI bridge and its pod subnet (pods in tests use hostNetwork; this only serves the sandboxes).
CNI_BRIDGE=e2ecni0
POD_SUBNET=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
# Extra feature gates / runtime config for every component, e.g. E2E_FEATURE_GATES=DRADerivedAttributes=true
E2E_FEATURE_GATES=${E2E_FEATURE_GATES:-}
E2E_RUNTIME_CONFIG=${E2E_RUNTIME_CONFIG:-resource.k8s.io/v1=true}

export PATH=$E2E_BIN:$PATH

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# wait_for SECONDS WHAT CMD... : poll CMD once a second until it succeeds.
wait_for() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 1
	done
	log "timed out after ${secs}s waiting for $what"
	return 1
}
# exe_of PID: the binary a process runs (also after build.sh replaced the file under it).
exe_of() {
	local e
	e=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
	echo "${e% (deleted)}"
}
