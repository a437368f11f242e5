#!/usr/bin/env bash
# Build everything the e2e cluster runs, from the Go module proxy and Debian packages:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl  ($K8S_VERSION, ./k8s wrapper module)
#   fakedra, a tiny DRA kubelet plugin for smoke.sh                           (./k8s/fakedra)
#   containerd, containerd-shim-runc-v2, ctr                                 ($CONTAINERD_VERSION, go install)
#   etcd                                                                      ($ETCD_VERSION, ./etcd wrapper module)
#   pause + busybox OCI image archives                                        (./tools, no Docker)
# into $E2E_CACHE (default /var/cache/power-dev-plugin-e2e). Each part is skipped when its stamp
# (versions + hash of its inputs) matches, so a second run takes seconds.
# Usage: build.sh [--force]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FORCE=0
[[ ${1:-} == --force ]] && FORCE=1
[[ $(id -u) == 0 ]] || die "run as root (installs Debian packages)"
mkdir -p "$E2E_BIN" "$E2E_IMAGES"

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOTOOLCHAIN=${GOTOOLCHAIN:-local}
GO_VERSION=$(go env GOVERSION)
T0=$SECONDS

# --- Debian packages ---------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
	grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "apt-get install ${missing[*]}"
	apt-get update -qq >/dev/null 2>&1 || apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# stamp_ok NAME KEY FILE... : the part NAME was built with KEY and all FILEs exist.
stamp_ok() {
	local name=$1 key=$2 f
	shift 2
	((FORCE)) && return 1
	[[ -f $E2E_BIN/.stamp-$name && $(<"$E2E_BIN/.stamp-$name") == "$key" ]] || return 1
	for f; do [[ -x $E2E_BIN/$f ]] || return 1; done
}
stamp_set() { echo "$2" >"$E2E_BIN/.stamp-$1"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- Kubernetes ----------------------------------------------------------------------------
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
key="k8s=$K8S_VERSION go=$GO_VERSION mod=$(hash_of "$E2E_DIR/k8s/go.mod" "$E2E_DIR/k8s/go.sum" "$E2E_DIR"/k8s/fakedra/*.go)"
if stamp_ok k8s "$key" "${K8S_BINS[@]}" fakedra; then
	log "kubernetes $K8S_VERSION: up to date"
else
	log "kubernetes $K8S_VERSION: building ${K8S_BINS[*]} (cold: ~9 min on 2 cores)"
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	ld="-s -w"
	# without these, kubectl and the components report v0.0.0 and version skew checks misbehave
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	t=$SECONDS
	pkgs=()
	for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	# + fakedra, the tiny DRA kubelet plugin smoke.sh uses (same module, so it shares the build)
	(cd "$E2E_DIR/k8s" && go build -trimpath -ldflags="$ld" -o "$E2E_BIN/" "${pkgs[@]}" ./fakedra)
	stamp_set k8s "$key"
	log "kubernetes: built in $((SECONDS - t))s"
fi

# --- containerd ----------------------------------------------------------------------------
CTRD_BINS=(containerd containerd-shim-runc-v2 ctr)
key="containerd=$CONTAINERD_VERSION go=$GO_VERSION"
if stamp_ok containerd "$key" "${CTRD_BINS[@]}"; then
	log "containerd $CONTAINERD_VERSION: up to date"
else
	log "containerd $CONTAINERD_VERSION: go install ${CTRD_BINS[*]}"
	t=$SECONDS
	m=github.com/containerd/containerd/v2
	# go install pkg@version ignores any go.mod around; run it from / to make that obvious
	(cd / && GOBIN=$E2E_BIN go install -trimpath \
		-ldflags="-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=module-proxy" \
		"$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"$m/cmd/ctr@$CONTAINERD_VERSION")
	stamp_set containerd "$key"
	log "containerd: built in $((SECONDS - t))s"
fi

# --- etcd ----------------------------------------------------------------------------------
key="etcd=$ETCD_VERSION go=$GO_VERSION mod=$(hash_of "$E2E_DIR/etcd/go.mod" "$E2E_DIR/etcd/go.sum" "$E2E_DIR/etcd/main.go")"
if stamp_ok etcd "$key" etcd; then
	log "etcd $ETCD_VERSION: up to date"
else
	log "etcd $ETCD_VERSION: building"
	t=$SECONDS
	(cd "$E2E_DIR/etcd" && go build -trimpath -ldflags="-s -w" -o "$E2E_BIN/etcd" .)
	stamp_set etcd "$key"
	log "etcd: built in $((SECONDS - t))s"
fi

# --- tools and images ------------------------------------------------------------------------
busybox=$(command -v busybox || echo /bin/busybox)
key="tools go=$GO_VERSION src=$(hash_of "$E2E_DIR"/tools/go.mod "$E2E_DIR"/tools/*/*.go) busybox=$(sha256sum "$busybox" | cut -c1-16)"
if stamp_ok tools "$key" pause mkimage && [[ -f $E2E_IMAGES/pause.tar && -f $E2E_IMAGES/busybox.tar ]]; then
	log "pause/busybox images: up to date"
else
	log "pause/busybox images: building"
	(cd "$E2E_DIR/tools" && go build -trimpath -ldflags="-s -w" -o "$E2E_BIN/" ./pause ./mkimage)
	"$E2E_BIN/mkimage" -name "$PAUSE_IMAGE" -out "$E2E_IMAGES/pause.tar" -entrypoint /pause \
		"$E2E_BIN/pause:/pause"
	# busybox-static is one binary; /bin/sh and the other applets are symlinks to it (like docker.io busybox: CMD sh)
	"$E2E_BIN/mkimage" -name "$BUSYBOX_IMAGE" -out "$E2E_IMAGES/busybox.tar" -cmd sh \
		-busybox "$busybox:/bin/busybox"
	stamp_set tools "$key"
fi

{
	echo "kubernetes=$K8S_VERSION containerd=$CONTAINERD_VERSION etcd=$ETCD_VERSION go=$GO_VERSION"
	echo "runc=$(dpkg-query -W -f='${Version}' runc) cni-plugins=$(dpkg-query -W -f='${Version}' containernetworking-plugins)"
} >"$E2E_BIN/VERSIONS"
log "build done in $((SECONDS - T0))s: $E2E_BIN ($(tr '\n' ' ' <"$E2E_BIN/VERSIONS"))"
