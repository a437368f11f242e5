#!/usr/bin/env bash
# Tear the e2e cluster down and leave nothing behind: pods and their workloads, processes, containers
# and shims, mounts, network namespaces, the CNI bridge, kubepods cgroups, iptables chains, the
# service-IP guard, sysctls, /var/lib/kubelet, /run/containerd, /var/log/pods, and the state dir
# (logs/ and logs.prev/ are kept for post-mortems unless --purge). Safe to run when nothing is up; run it twice if you like.
# Usage: down.sh [--purge]
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PURGE=0
[[ ${1:-} == --purge ]] && PURGE=1
[[ $(id -u) == 0 ]] || die "run as root"
T0=$SECONDS
SERVICE_IP=10.96.0.1
if [[ -d $E2E_STATE ]]; then
	exec 9>"$E2E_STATE/.lock"
	flock -w 120 9 || die "another up.sh/down.sh holds $E2E_STATE/.lock"
fi

alive() { # NAME BIN: pid of our running component, if any
	local f=$E2E_PIDS/$1.pid pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ -n $pid && $(exe_of "$pid") == "$E2E_BIN/$2" ]] && echo "$pid"
}
stop() { # NAME BIN [SECONDS]: SIGTERM, then SIGKILL after SECONDS
	local pid i
	pid=$(alive "$1" "$2") || { rm -f "$E2E_PIDS/$1.pid"; return 0; }
	log "stopping $1 (pid $pid)"
	kill "$pid" 2>/dev/null
	for ((i = 0; i < ${3:-15} * 10; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
	[[ -d /proc/$pid ]] && { log "$1 did not stop, killing"; kill -9 "$pid" 2>/dev/null; sleep 0.5; }
	rm -f "$E2E_PIDS/$1.pid"
}

# 1. Let the kubelet stop the workloads while everything still runs, so kubelet plugins (our DRA
#    driver) unprepare their claims and remove their CDI specs: first everything but DaemonSet pods,
#    then the DaemonSets (the drivers), then whatever is left. Bounded; step 2 kills what remains.
if alive apiserver kube-apiserver >/dev/null && alive kubelet kubelet >/dev/null; then
	export KUBECONFIG=$KUBECONFIG_ADMIN
	k() { timeout 100 kubectl --request-timeout=20s "$@" 2>/dev/null; }
	pods=$(k get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.ownerReferences[0].kind}{"\n"}{end}' |
		awk '$2 != "DaemonSet" {print $1}')
	if [[ -n $pods ]]; then
		log "deleting $(wc -l <<<"$pods") pod(s)"
		k delete deployments,replicasets,statefulsets,jobs,cronjobs,replicationcontrollers --all -A --wait=false >/dev/null
		while IFS=/ read -r ns name; do
			k -n "$ns" delete pod "$name" --wait=false --grace-period="${E2E_DOWN_GRACE:-5}" >/dev/null
		done <<<"$pods"
		while IFS=/ read -r ns name; do
			k -n "$ns" wait --for=delete "pod/$name" --timeout=60s >/dev/null
		done <<<"$pods"
	fi
	if [[ -n $(k get daemonsets -A -o name) ]]; then
		log "deleting daemonsets"
		k delete daemonsets --all -A --wait=true --timeout=60s >/dev/null
	fi
	k delete pods --all -A --wait=true --timeout=60s >/dev/null
fi

# 2. Stop the kubelet, then every container the node runs (anything left in the kubepods cgroups).
stop kubelet kubelet 20
kill_kubepods() { # SIGKILL everything in a kubepods cgroup; true if there was something
	local pids
	pids=$(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
	[[ -n $pids ]] && kill -9 $pids 2>/dev/null
	[[ -n $pids ]]
}
if [[ -S $CONTAINERD_SOCK ]] && alive containerd containerd >/dev/null; then
	export CONTAINERD_ADDRESS=$CONTAINERD_SOCK
	# pod containers, and any a test started itself with ctr, in every containerd namespace
	for ns in $(timeout 20 ctr namespaces ls -q 2>/dev/null); do
		for t in $(timeout 20 ctr -n "$ns" task ls -q 2>/dev/null); do timeout 10 ctr -n "$ns" task kill -s SIGKILL "$t" >/dev/null 2>&1; done
	done
	kill_kubepods && sleep 1
	for ns in $(timeout 20 ctr namespaces ls -q 2>/dev/null); do
		for t in $(timeout 20 ctr -n "$ns" task ls -q 2>/dev/null); do timeout 10 ctr -n "$ns" task delete -f "$t" >/dev/null 2>&1; done
	done
fi
kill_kubepods && sleep 1

# 3. containerd and its shims (identified by our socket on their command line), then the control plane.
stop containerd containerd 15
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null); do
	[[ $(exe_of "$pid") == "$E2E_BIN/containerd-shim-runc-v2" ]] && kill -9 "$pid" 2>/dev/null
done
kill_kubepods
# the three control-plane components at once, then etcd
for c in scheduler:kube-scheduler controller-manager:kube-controller-manager apiserver:kube-apiserver; do
	stop "${c%%:*}" "${c#*:}" 15 &
done
wait
stop etcd etcd 15
# anything still running from our binaries (e.g. a pid file lost in a crash)
for pid in $(pgrep -f "^$E2E_BIN/" 2>/dev/null); do
	[[ $(exe_of "$pid") == "$E2E_BIN/"* ]] && { log "killing stray $(cat /proc/$pid/comm 2>/dev/null) ($pid)"; kill -9 "$pid" 2>/dev/null; }
done

# 4. Mounts (container rootfs, shm, network namespaces, kubelet volumes and its rshared root).
for _ in 1 2 3; do
	mounts=$(awk -v a="$E2E_STATE/" -v b="$KUBELET_ROOT" -v c=/run/containerd/ \
		'{m=$2; gsub(/\\040/," ",m)} index(m,a)==1 || m==b || index(m,b"/")==1 || index(m,c)==1 {print m}' /proc/self/mounts | sort -r -u)
	[[ -z $mounts ]] && break
	while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done <<<"$mounts"
done
# (pod network namespaces are under the state dir: netns_mounts_under_state_dir. /run/netns/cni-*
# belong to other CNI users on the machine, such as podman, and are left alone.)

# 5. Network: pod veths, the CNI bridge, the service-IP guard.
if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
	for v in $(ip -o link show master "$CNI_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null; done
	ip link del "$CNI_BRIDGE" 2>/dev/null
fi
grep -q " $SERVICE_IP/32" <<<"$(ip -o addr show dev lo)" && ip addr del "$SERVICE_IP/32" dev lo
# iptables: every KUBE-* chain the kubelet made and our E2E-* chains, IPv4 and IPv6
clean_iptables() {
	local ipt=$1 t rule ch
	command -v "$ipt" >/dev/null || return 0
	for t in filter nat mangle raw; do
		"$ipt" -t "$t" -S >/dev/null 2>&1 || continue
		# drop the jumps into the chains, then the chains
		while read -r rule; do
			[[ -n $rule ]] && eval "$ipt -t $t ${rule/-A /-D }" 2>/dev/null
		done < <("$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A .* -j (KUBE-|E2E-)')
		for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|E2E-)/ {print $2}'); do "$ipt" -t "$t" -F "$ch" 2>/dev/null; done
		for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|E2E-)/ {print $2}'); do "$ipt" -t "$t" -X "$ch" 2>/dev/null; done
	done
}
for ipt in iptables ip6tables; do clean_iptables "$ipt"; done

# 6. cgroups the kubelet made (cgroupfs driver; every v1 hierarchy and the v2 one), deepest first.
for _ in 1 2 3 4 5; do
	left=0
	for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d $h ]] || continue
		find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
		[[ -d $h ]] && left=1
	done
	((left)) || break
	kill_kubepods
	sleep 1
done

# 7. Kernel settings the kubelet changed (the values put back stay in logs/ for check-clean.sh).
if [[ -f $E2E_STATE/sysctl.orig ]]; then
	while IFS='=' read -r k v; do echo "$v" >"/proc/sys/$k" 2>/dev/null; done <"$E2E_STATE/sysctl.orig"
	mkdir -p "$E2E_LOGS" && cp "$E2E_STATE/sysctl.orig" "$E2E_LOGS/sysctl.orig"
fi

# 8. Loop devices backed by files of the cluster (it makes none itself; tests clean up their own).
for dev in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v a="$E2E_STATE/" -v b="$KUBELET_ROOT/" 'index($2,a)==1 || index($2,b)==1 {print $1}'); do
	# (a test's swap device: detaching an active swap device only marks it autoclear and leaves it)
	if grep -q "^$dev " /proc/swaps; then log "swapoff $dev"; swapoff "$dev" || true; fi
	# partitions added from user space (partx -a) leave their /dev nodes behind unless removed the same way
	partx -d "$dev" 2>/dev/null || true
	log "detaching $dev"
	losetup -d "$dev"
done

# 9. Files: node dirs the kubelet and containerd hard-code, dirs up.sh created, the state dir.
# Never rm -rf through a mount: a leftover bind mount could point anywhere on the host.
safe_rm() {
	local d=$1
	[[ -e $d || -L $d ]] || return 0
	if awk -v d="$d" '{m=$2; gsub(/\\040/," ",m)} m==d || index(m,d"/")==1 {f=1} END {exit !f}' /proc/self/mounts; then
		log "WARNING: $d still has mounts, left in place"
		return 1
	fi
	rm -rf --one-file-system "$d"
}
# libcni's result cache is shared with any other CNI user on the machine: only our network's entries
# and the loopback ones of containerd's CRI (normally already gone: the CNI DEL of each sandbox drops them)
rm -f /var/lib/cni/results/e2e-* /var/lib/cni/results/cni-loopback-* 2>/dev/null
if [[ -f $E2E_STATE/created.txt ]]; then
	while read -r d; do
		[[ -n $d && -e $d ]] || continue
		case $d in
		/var/lib/cni) rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null ;; # if nobody else uses it
		/run/mount) # libmount's utab: only while it records nothing (another tool may be using it)
			[[ -z $(find /run/mount -type f -size +0 2>/dev/null) ]] && safe_rm /run/mount ;;
		*)
			# CDI specs a kubelet plugin did not remove (it should, when its claims are unprepared)
			left=$(find "$d" -mindepth 1 -maxdepth 1 2>/dev/null | head -5)
			[[ -n $left ]] && log "WARNING: removing $d, which still holds: $(echo $left)"
			safe_rm "$d"
			;;
		esac
	done <"$E2E_STATE/created.txt"
fi
for d in "$KUBELET_ROOT" /run/containerd /var/log/pods /var/log/containers; do safe_rm "$d"; done
if [[ -d $E2E_STATE ]]; then
	for d in "$E2E_STATE"/* "$E2E_STATE"/.[!.]*; do
		[[ -e $d ]] || continue
		case ${d##*/} in
		.lock) ;;
		logs | logs.prev) ((PURGE)) && safe_rm "$d" ;;
		*) safe_rm "$d" ;;
		esac
	done
	((PURGE)) && rm -f "$E2E_STATE/.lock" && rmdir "$E2E_STATE" 2>/dev/null
fi
if ((PURGE)); then
	log "cluster down in $((SECONDS - T0))s, state purged"
else
	log "cluster down in $((SECONDS - T0))s; its logs stay in $E2E_LOGS (down.sh --purge removes them)"
fi
