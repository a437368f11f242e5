# shellcheck shell=bash
# Sourced by run.sh and demo.sh: build the image, start the cluster, import, create devices, install the driver.
source "$(dirname "${BASH_SOURCE[0]}")/cluster/lib.sh"
E2E_SUITE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_SUITE_DIR/../.." && pwd)
OUT_DIR=$REPO_DIR/_output/e2e
E2E_IMAGE_REPO=ghcr.io/power-dev-plugin/power-dev-plugin
E2E_IMAGE=$E2E_IMAGE_REPO:e2e     # the overlay's tag
E2E_IMAGE2=$E2E_IMAGE_REPO:e2e-2  # the rolling update's (scenario 10)
E2E_ARCHIVE=$OUT_DIR/power-dev-plugin-e2e.oci.tar
# The current release, for scenario 17 (a rolling update from it): its image is built from this commit once and
# kept in the cluster's cache, by commit. Move it when a release is made.
E2E_RELEASE_COMMIT=${E2E_RELEASE_COMMIT:-6c94c496e84daef05ef734425888277886e2b56e}
E2E_RELEASE_IMAGE=$E2E_IMAGE_REPO:e2e-release
export E2E_STATE E2E_IMAGE2 E2E_SUITE_DIR E2E_RELEASE_COMMIT E2E_RELEASE_IMAGE

# step NAME CMD...: run CMD, timed.
step() {
	local name=$1 t0=$SECONDS
	shift
	log "== $name"
	"$@" || { log "FAILED: $name"; return 1; }
	log "== $name: done in $((SECONDS - t0))s"
}

# The image exactly as `make image` builds it, for linux/amd64 only (the node's architecture).
build_image() {
	local arch
	arch=$(go env GOARCH)
	mkdir -p "$OUT_DIR"
	make -C "$REPO_DIR" --no-print-directory image IMAGE="$E2E_IMAGE" IMAGE_PLATFORMS="linux/$arch" \
		IMAGE_ARCHIVE="$E2E_ARCHIVE" >"$OUT_DIR/image.log" 2>&1 || { tail -30 "$OUT_DIR/image.log" >&2; return 1; }
	grep -E 'OK:|bytes\)' "$OUT_DIR/image.log" | head -2 >&2
}

# The release's image, exactly as `make image` built it at that commit (linux/<arch>), from `git archive` of the
# commit (no worktree, nothing changes in the repository). Cached in $E2E_CACHE/images by commit: built once.
release_archive() { echo "$E2E_CACHE/images/power-dev-plugin-release-$E2E_RELEASE_COMMIT.oci.tar"; }
build_release_image() {
	local a src arch log=$OUT_DIR/release-image.log
	a=$(release_archive)
	if [[ -s $a ]]; then
		log "cached: $a"
		return 0
	fi
	git -C "$REPO_DIR" cat-file -e "$E2E_RELEASE_COMMIT^{commit}" 2>/dev/null ||
		{ log "commit $E2E_RELEASE_COMMIT is not in this clone (shallow?): scenario 17 will fail"; return 1; }
	arch=$(go env GOARCH)
	src=$(mktemp -d "${TMPDIR:-/tmp}/power-dev-plugin-release.XXXXXX")
	mkdir -p "$(dirname "$a")"
	{
		git -C "$REPO_DIR" archive "$E2E_RELEASE_COMMIT" | tar -x -C "$src" &&
			make -C "$src" --no-print-directory image IMAGE="$E2E_RELEASE_IMAGE" IMAGE_PLATFORMS="linux/$arch" \
				IMAGE_ARCHIVE="$a.tmp" VERSION="$(git -C "$REPO_DIR" describe --tags --always "$E2E_RELEASE_COMMIT")" \
				GIT_COMMIT="${E2E_RELEASE_COMMIT:0:7}" IMAGE_REVISION="$E2E_RELEASE_COMMIT" \
				SOURCE_DATE_EPOCH="$(git -C "$REPO_DIR" log -1 --format=%ct "$E2E_RELEASE_COMMIT")" &&
			mv "$a.tmp" "$a"
	} >"$log" 2>&1
	local rc=$?
	rm -rf "$src" "$a.tmp"
	((rc == 0)) || { tail -30 "$log" >&2; log "the release image could not be built: scenario 17 will fail"; return 1; }
	grep -E 'OK:|bytes\)' "$log" | head -2 >&2
}

cluster_up() {
	make -C "$REPO_DIR" --no-print-directory e2e-up >"$OUT_DIR/e2e-up.log" 2>&1 || { tail -40 "$OUT_DIR/e2e-up.log" >&2; return 1; }
	grep -E 'cluster up|already running' "$OUT_DIR/e2e-up.log" | tail -1 >&2 || true
	# shellcheck disable=SC1091
	source "$E2E_STATE/env"
	# An earlier run's legacy scenario leaves power-dev-plugin/dev registered in the kubelet's device manager
	# (capacity kept, endpoint gone), which makes it refuse scenario 5's DRA-backed extended resource with
	# "endpoint not found in cache for a registered resource". A fresh node has no such state.
	if kubectl get node localhost -o jsonpath='{.status.capacity}' 2>/dev/null | grep -q '"power-dev-plugin/'; then
		log "the node still has an earlier run's device-plugin resource: restarting the cluster for a clean kubelet"
		make -C "$REPO_DIR" --no-print-directory e2e-down >>"$OUT_DIR/e2e-up.log" 2>&1 &&
			make -C "$REPO_DIR" --no-print-directory e2e-up >>"$OUT_DIR/e2e-up.log" 2>&1 ||
			{ tail -40 "$OUT_DIR/e2e-up.log" >&2; return 1; }
		# shellcheck disable=SC1091
		source "$E2E_STATE/env"
	fi
}

use_cluster() {
	[[ -f $E2E_STATE/env ]] || die "the cluster is not up (make e2e-up)"
	# shellcheck disable=SC1091
	source "$E2E_STATE/env"
}

# The archive into containerd's k8s.io namespace, also tagged for the rolling update; the release's, if built.
import_image() {
	ctr -n k8s.io image import "$E2E_ARCHIVE" 2>&1 | grep -v DEPRECATION >&2
	ctr -n k8s.io image tag --force "$E2E_IMAGE" "$E2E_IMAGE2" 2>&1 | grep -v DEPRECATION >/dev/null
	# grep without -q reads all of ctr's output: with pipefail an early exit would fail the pipe (SIGPIPE)
	ctr -n k8s.io image ls -q 2>/dev/null | grep -xF "$E2E_IMAGE2" >/dev/null || return 1
	local a
	a=$(release_archive)
	if [[ -s $a ]]; then
		ctr -n k8s.io image import "$a" 2>&1 | grep -v DEPRECATION >&2
	else
		ctr -n k8s.io image rm "$E2E_RELEASE_IMAGE" >/dev/null 2>&1 || true # never an older release's
	fi
}

devices_up() { "$E2E_SUITE_DIR/devices.sh" up; }
devices_down() { "$E2E_SUITE_DIR/devices.sh" down; }

# The driver from the project's own kustomize overlay (through test/e2e/overlay), until its devices are published.
install_driver() {
	kubectl apply -k "$E2E_SUITE_DIR/overlay" >"$OUT_DIR/install.log" 2>&1 || { cat "$OUT_DIR/install.log" >&2; return 1; }
	# scenarios 14 and 15 stop the plugin with a nodeSelector; apply keeps a field it never set (a killed run's)
	kubectl -n power-dev-plugin patch ds power-dev-plugin --type=strategic \
		-p '{"spec":{"template":{"spec":{"nodeSelector":{"e2e.power-dev-plugin.io/plugin":null}}}}}' >/dev/null || return 1
	# a previous run's scenario 10 leaves the DaemonSet at the other tag: apply rolled it back
	kubectl -n power-dev-plugin rollout status ds/power-dev-plugin --timeout=180s >&2 || return 1
	wait_for 120 "the driver's ResourceSlices" sh -c \
		"kubectl get resourceslices --field-selector spec.driver=power-dev-plugin.io,spec.nodeName=localhost -o name | grep -q ." || return 1
	kubectl get resourceslices --field-selector spec.driver=power-dev-plugin.io >&2
}

uninstall_driver() {
	kubectl delete -k "$E2E_SUITE_DIR/overlay" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
	# scenario 18 installs the legacy overlay instead (and leaves it in place when it fails, for collect)
	kubectl delete -k "$E2E_SUITE_DIR/overlay-legacy" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
	# the device plugin's static CDI spec, which it keeps when it stops
	rm -f /var/run/cdi/power-dev-plugin.io-device.json
	# the kubelet deletes an unregistered plugin's slices only after a grace period (30 s); do it now
	kubectl delete resourceslices --field-selector spec.driver=power-dev-plugin.io --ignore-not-found >/dev/null 2>&1 || true
}

# collect: the logs and objects a failure needs, into $OUT_DIR/artifacts and (shortened) into the output.
collect() {
	local a=$OUT_DIR/artifacts
	rm -rf "$a" && mkdir -p "$a"
	log "collecting diagnostics into $a"
	{
		for n in e2e power-dev-plugin; do
			echo "### namespace $n: pods, claims, templates, daemonsets, events"
			kubectl -n "$n" get pods,resourceclaims,resourceclaimtemplates,daemonsets,events -o yaml 2>&1
		done
		echo "### resourceslices, deviceclasses"
		kubectl get resourceslices,deviceclasses -o yaml 2>&1
		echo "### node"
		kubectl get node localhost -o yaml 2>&1
		echo "### CDI specs"
		ls -l /var/run/cdi /etc/cdi 2>&1
	} >"$a/objects.yaml"
	for p in $(kubectl -n power-dev-plugin get pods -o name 2>/dev/null); do
		kubectl -n power-dev-plugin logs "$p" --all-containers >"$a/plugin-${p#pod/}.log" 2>&1
		kubectl -n power-dev-plugin logs "$p" --all-containers --previous >"$a/plugin-${p#pod/}.previous.log" 2>/dev/null || rm -f "$a/plugin-${p#pod/}.previous.log"
	done
	cp "$E2E_LOGS"/{kubelet,containerd,apiserver,scheduler,controller-manager}.log "$a/" 2>/dev/null
	# The CI output: plugin logs whole, kubelet and containerd tails, the objects.
	local f
	for f in "$a"/plugin-*.log; do [[ -f $f ]] && { echo "----- $(basename "$f")"; tail -n 300 "$f"; }; done
	echo "----- kubelet.log (last 300 lines; whole file in $a)"
	tail -n 300 "$a/kubelet.log" 2>/dev/null
	echo "----- containerd.log (last 150 lines)"
	tail -n 150 "$a/containerd.log" 2>/dev/null
	echo "----- objects (objects.yaml)"
	cat "$a/objects.yaml"
	echo "----- end of diagnostics"
}
