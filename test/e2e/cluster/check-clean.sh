#!/usr/bin/env bash
# After down.sh: check that the e2e cluster left nothing on the machine. Prints what it finds;
# exits 1 if anything is left. Meant for CI after `make e2e-down`, and for changes to down.sh.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
left=0
found() { log "left behind: $*"; left=$((left + 1)); }

for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	exe=$(exe_of "$pid") || continue
	[[ $exe == "$E2E_BIN/"* ]] && found "process $pid $exe"
done
while read -r m; do
	[[ -n $m ]] && found "mount $m"
done < <(awk -v a="$E2E_STATE/" -v b="$KUBELET_ROOT" -v c=/run/containerd/ \
	'{m=$2} index(m,a)==1 || m==b || index(m,b"/")==1 || index(m,c)==1 {print m}' /proc/self/mounts)
for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do [[ -d $h ]] && found "cgroup $h"; done
while read -r l; do found "$l"; done < <(
	for ipt in iptables ip6tables; do
		for t in filter nat mangle raw; do
			"$ipt" -t "$t" -S 2>/dev/null | awk -v i="$ipt" -v t="$t" '/^-N (KUBE-|E2E-)/ {print i, "-t", t, "chain", $2}'
		done
	done
)
ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && found "link $CNI_BRIDGE"
grep -q "master $CNI_BRIDGE" <<<"$(ip -o link show type veth 2>/dev/null)" && found "veths on $CNI_BRIDGE"
grep -q ' 10.96.0.1/32' <<<"$(ip -o addr show dev lo)" && found "10.96.0.1 on lo"
for d in "$KUBELET_ROOT" /run/containerd /var/log/pods /var/log/containers "$E2E_STATE/containerd" "$E2E_STATE/etcd"; do
	[[ -e $d ]] && found "$d"
done
while read -r l; do found "loop device $l"; done < <(losetup -n -O NAME,BACK-FILE 2>/dev/null |
	awk -v a="$E2E_STATE/" -v b="$KUBELET_ROOT/" 'index($2,a)==1 || index($2,b)==1')
if [[ -f $E2E_LOGS/sysctl.orig ]]; then
	while IFS='=' read -r k v; do
		[[ $(</proc/sys/$k) == "$v" ]] || found "sysctl $k=$(</proc/sys/$k), was $v"
	done <"$E2E_LOGS/sysctl.orig"
fi
if ((left)); then
	log "$left thing(s) left behind"
	exit 1
fi
log "clean: nothing of the e2e cluster is left"
