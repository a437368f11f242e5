#!/usr/bin/env bash
# Show the e2e cluster: its processes, nodes and pods. Exits 1 when the cluster is not up.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export KUBECONFIG=$KUBECONFIG_ADMIN
up=1
for c in etcd:etcd apiserver:kube-apiserver controller-manager:kube-controller-manager scheduler:kube-scheduler \
	containerd:containerd kubelet:kubelet; do
	name=${c%%:*} bin=${c#*:} pid=
	[[ -f $E2E_PIDS/$name.pid ]] && pid=$(<"$E2E_PIDS/$name.pid")
	if [[ -n $pid && $(exe_of "$pid") == "$E2E_BIN/$bin" ]]; then
		printf '%-20s running (pid %s)\n' "$name" "$pid"
	else
		printf '%-20s not running\n' "$name"
		up=0
	fi
done
if [[ -f $KUBECONFIG ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
	echo
	kubectl get nodes -o wide
	echo
	kubectl get pods -A -o wide
else
	echo "apiserver not reachable (KUBECONFIG=$KUBECONFIG)"
	up=0
fi
((up))
