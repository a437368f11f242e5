#!/usr/bin/env bash
# make demo: the local cluster, the driver installed as users install it, and the first example
# (examples/single-block-device) run against a loop device. Needs root; the first run builds the cluster (~10 min).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[[ $(id -u) == 0 ]] || die "run as root (the demo starts a local Kubernetes node)"
mkdir -p "$OUT_DIR"
EX=$REPO_DIR/examples/single-block-device

step "build the image (make image, this machine's architecture only)" build_image
step "start the local cluster (make e2e-up; the first time builds it)" cluster_up
step "import the image into the node's containerd" import_image
step "create loop devices for the node (test/e2e/devices.sh)" devices_up
step "install the driver (kubectl apply -k test/e2e/overlay -> deploy/kustomize/overlays/dra)" install_driver

log "== run the example $EX"
kubectl delete pod single-block-device --ignore-not-found --wait=true >/dev/null
kubectl apply -f "$EX/resourceclaimtemplate.yaml"
# The example as written, except: the busybox image already on the node, and the host network (the
# demo node's only network; nothing leaves the machine).
sed -e 's#image: docker.io/library/busybox:1.37#image: docker.io/library/busybox:e2e#' \
	-e 's#^spec:$#spec:\n  hostNetwork: true#' "$EX/pod.yaml" | kubectl apply -f -
wait_for 120 "the pod to finish" sh -c \
	'p=$(kubectl get pod single-block-device -o jsonpath={.status.phase}); [ "$p" = Succeeded ] || [ "$p" = Failed ]' || true
echo
echo "\$ kubectl get pod single-block-device"
kubectl get pod single-block-device -o wide
echo
echo "\$ kubectl logs single-block-device"
kubectl logs single-block-device || true
echo
echo "\$ kubectl get resourceclaims,resourceslices"
kubectl get resourceclaims,resourceslices -o wide
cat <<EOT

The pod above got one of the node's loop devices through the power-dev-plugin.io DRA driver (its claim was
created from the ResourceClaimTemplate, allocated by the scheduler and prepared by the plugin through CDI; it
was deleted again when the pod finished, which freed the device).
Try it yourself:

  source $E2E_STATE/env        # KUBECONFIG and PATH for kubectl
  kubectl get resourceslices -o yaml          # what the driver publishes
  kubectl -n power-dev-plugin logs ds/power-dev-plugin

Tear down (stops the cluster and removes everything it and the demo put on the machine, loop devices too):

  make e2e-down
EOT
