#!/usr/bin/env bash
# Prove the e2e cluster works: a hostNetwork busybox pod runs to completion (its log is printed),
# the resource.k8s.io/v1 API takes the DRA fields our driver relies on, and a tiny DRA kubelet
# plugin (fakedra) gets devices into pods through the scheduler, the kubelet and CDI.
# Leaves nothing behind.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export KUBECONFIG=$KUBECONFIG_ADMIN
[[ -f $KUBECONFIG ]] || die "no cluster: run up.sh (make e2e-up) first"
T0=$SECONDS
pod=e2e-smoke
pass=0 fail=0
check() { # NAME CMD...
	local name=$1
	shift
	if "$@"; then
		log "ok: $name"
		pass=$((pass + 1))
	else
		log "FAILED: $name"
		fail=$((fail + 1))
	fi
}
DRIVER=fakedra.e2e.example.com
fakedra_pid=
cleanup() {
	kubectl delete pod "$pod" e2e-smoke-claim e2e-smoke-extended --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true
	kubectl delete resourceclaim e2e-smoke --ignore-not-found >/dev/null 2>&1 || true
	if [[ -n $fakedra_pid ]]; then
		kill "$fakedra_pid" 2>/dev/null && wait "$fakedra_pid" 2>/dev/null
		fakedra_pid=
	fi
	kubectl delete resourceslices --field-selector "spec.driver=$DRIVER" --ignore-not-found >/dev/null 2>&1 || true
	kubectl delete resourceslice e2e-smoke-slice --ignore-not-found >/dev/null 2>&1 || true
	kubectl delete deviceclass e2e-smoke.example.com "$DRIVER" --ignore-not-found >/dev/null 2>&1 || true
	rmdir "$KUBELET_ROOT/plugins/$DRIVER" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

# --- a pod --------------------------------------------------------------------------------------
# run_to_completion NAME: wait for pod NAME to finish, print its log; true if it Succeeded.
run_to_completion() {
	local name=$1 phase="" i
	for ((i = 0; i < 120; i++)); do
		phase=$(kubectl get pod "$name" -o jsonpath='{.status.phase}')
		[[ $phase == Succeeded || $phase == Failed ]] && break
		sleep 1
	done
	echo "--- pod $name: phase $phase after ${i}s; log:" >&2
	kubectl logs "$name" >&2 || true
	echo "---" >&2
	[[ $phase == Succeeded ]] || { kubectl describe pod "$name" | tail -20 >&2; return 1; }
}
pod_runs() {
	kubectl apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata: {name: $pod, namespace: default}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from \$(hostname) kernel \$(uname -r); id; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; echo done"]
EOT
	run_to_completion "$pod" && grep -q '^done$' <<<"$(kubectl logs "$pod")"
}
check "hostNetwork busybox pod ran to completion" pod_runs
check "pod deleted" kubectl delete pod "$pod" --wait=true --timeout=60s

# --- DRA API --------------------------------------------------------------------------------------
api_served() {
	kubectl api-resources --api-group=resource.k8s.io -o wide >&2
	local r v1
	v1=$(kubectl get --raw /apis/resource.k8s.io/v1)
	for r in deviceclasses resourceclaims resourceclaimtemplates resourceslices devicetaintrules; do
		grep -q "\"name\":\"$r\"" <<<"$v1" || { log "resource.k8s.io/v1 $r not served"; return 1; }
	done
}
check "resource.k8s.io/v1 serves deviceclasses, resourceclaims(templates), resourceslices, devicetaintrules" api_served

deviceclass_extended_resource() { # DRAExtendedResource: the field is dropped when the gate is off
	kubectl apply -f - >/dev/null <<EOT
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: e2e-smoke.example.com}
spec:
  extendedResourceName: example.com/e2e-smoke
  selectors:
  - cel: {expression: 'device.driver == "e2e-smoke.example.com"'}
EOT
	[[ $(kubectl get deviceclass e2e-smoke.example.com -o jsonpath='{.spec.extendedResourceName}') == example.com/e2e-smoke ]]
}
check "DeviceClass keeps spec.extendedResourceName (DRAExtendedResource)" deviceclass_extended_resource

slice_fields() { # DRAConsumableCapacity and DRADeviceTaints: fields dropped when the gates are off
	kubectl apply -f - >/dev/null <<EOT
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: e2e-smoke-slice}
spec:
  driver: e2e-smoke.example.com
  nodeName: localhost
  pool: {name: localhost, generation: 1, resourceSliceCount: 1}
  devices:
  - name: dev0
    allowMultipleAllocations: true
    capacity:
      size:
        value: 10Gi
        requestPolicy: {default: 1Gi, validRange: {min: 1Gi}}
    taints:
    - {key: example.com/e2e-smoke, value: "yes", effect: NoSchedule}
EOT
	local got
	got=$(kubectl get resourceslice e2e-smoke-slice -o jsonpath='{.spec.devices[0].allowMultipleAllocations}/{.spec.devices[0].capacity.size.requestPolicy.default}/{.spec.devices[0].taints[0].effect}')
	[[ $got == true/1Gi/NoSchedule ]] || { log "read back: $got"; return 1; }
}
check "ResourceSlice keeps allowMultipleAllocations, capacity requestPolicy (DRAConsumableCapacity) and device taints (DRADeviceTaints)" slice_fields
cleanup

# --- DRA end to end: fakedra (a host process) publishes devices; a claim and an extended resource
# get one each through the scheduler, the kubelet prepares them and containerd injects the CDI env.
dra_pod() { # NAME CLAIM-YAML RESOURCES-YAML
	kubectl apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  $2
  containers:
  - name: c
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo device=\$FAKEDRA_DEVICE claim=\$FAKEDRA_CLAIM"]
    resources: $3
EOT
}
dra_e2e() {
	[[ -x $E2E_BIN/fakedra ]] || { log "fakedra missing: run build.sh"; return 1; }
	setsid "$E2E_BIN/fakedra" --kubeconfig="$KUBECONFIG" --node=localhost --driver="$DRIVER" \
		--cdi-dir=/var/run/cdi </dev/null >"$E2E_LOGS/fakedra.log" 2>&1 &
	fakedra_pid=$!
	wait_for 60 "fakedra's ResourceSlice" sh -c "kubectl get resourceslices --field-selector spec.driver=$DRIVER -o name | grep -q ." ||
		{ tail -20 "$E2E_LOGS/fakedra.log" >&2; return 1; }
	kubectl apply -f - >/dev/null <<EOT
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: $DRIVER}
spec:
  extendedResourceName: example.com/fakedra
  selectors:
  - cel: {expression: 'device.driver == "$DRIVER"'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: e2e-smoke, namespace: default}
spec:
  devices:
    requests:
    - name: dev
      exactly: {deviceClassName: $DRIVER}
EOT
	dra_pod e2e-smoke-claim "resourceClaims: [{name: dev, resourceClaimName: e2e-smoke}]" "{claims: [{name: dev}]}"
	dra_pod e2e-smoke-extended "" "{limits: {example.com/fakedra: 1}}"
	run_to_completion e2e-smoke-claim && run_to_completion e2e-smoke-extended || return 1
	grep -q '^device=dev-[0-9] claim=default/e2e-smoke$' <<<"$(kubectl logs e2e-smoke-claim)" || return 1
	grep -q '^device=dev-[0-9] claim=default/' <<<"$(kubectl logs e2e-smoke-extended)" || return 1
	kubectl delete pod e2e-smoke-claim e2e-smoke-extended --wait=true --timeout=60s >/dev/null
	kubectl delete resourceclaim e2e-smoke --wait=true --timeout=60s >/dev/null
	# unprepared: fakedra removed its CDI specs again
	wait_for 30 "CDI specs removed" sh -c '! ls /var/run/cdi/fakedra-*.json >/dev/null 2>&1' || return 1
}
check "DRA: claim and extended-resource pods got fakedra devices via CDI, specs removed after" dra_e2e
cleanup

log "smoke done in $((SECONDS - T0))s"
echo "smoke: $pass passed, $fail failed"
((fail == 0))
