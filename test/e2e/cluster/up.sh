#!/usr/bin/env bash
# Start a single-node Kubernetes cluster on 127.0.0.1 from the binaries build.sh made:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CDI on), kubelet (node "localhost").
# Idempotent: components already running are left alone. Undo with down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl containerd containerd-shim-runc-v2 ctr; do
	[[ -x $E2E_BIN/$b ]] || die "$E2E_BIN/$b missing: run build.sh (make e2e-build) first"
done
for b in runc openssl iptables ip /usr/lib/cni/bridge; do
	command -v "$b" >/dev/null || die "$b missing: run build.sh (it installs the Debian packages)"
done
T0=$SECONDS
SERVICE_IP=10.96.0.1
mkdir -p "$E2E_STATE"
chmod 700 "$E2E_STATE"
exec 9>"$E2E_STATE/.lock"
flock -n 9 || die "another up.sh/down.sh is running"
# a fresh cycle (nothing running): keep the previous cycle's logs in logs.prev
if [[ -d $E2E_LOGS && ! -d $E2E_PIDS ]]; then
	rm -rf "$E2E_STATE/logs.prev"
	mv "$E2E_LOGS" "$E2E_STATE/logs.prev"
fi
mkdir -p "$E2E_LOGS" "$E2E_PIDS" "$E2E_STATE/etc" "$E2E_STATE/cni/net.d" "$CONTAINERD_ROOT" "$CONTAINERD_STATE"
install -d -m 700 "$E2E_STATE/etcd"

# Things created outside the state dir are noted in created.txt, so down.sh removes only those.
note_created() { grep -qxF "$1" "$E2E_STATE/created.txt" 2>/dev/null || echo "$1" >>"$E2E_STATE/created.txt"; }
# (/var/lib/cni: the CNI result cache; /run/mount: libmount's utab, first written by the kubelet's mounts)
for d in "${CDI_DIRS[@]}" /var/lib/cni /run/mount; do [[ -e $d ]] || note_created "$d"; done
mkdir -p "${CDI_DIRS[@]}"

# --- process helpers ---------------------------------------------------------------------------
# running NAME: the process recorded in pids/NAME.pid is alive and is still our binary.
running() {
	local f=$E2E_PIDS/$1.pid pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	[[ $(exe_of "$pid") == "$E2E_BIN/$2" ]]
}
# start NAME BINARY ARGS...: run BINARY in its own session, log to logs/NAME.log, pid in pids/NAME.pid.
start() {
	local name=$1 bin=$2
	shift 2
	if running "$name" "$bin"; then
		log "$name: already running (pid $(<"$E2E_PIDS/$name.pid"))"
		return
	fi
	log "$name: starting"
	echo "=== $(date -Is) start $bin $*" >>"$E2E_LOGS/$name.log"
	# setsid: the cluster outlives the shell, make and CI step that started it; 9>&-: not our lock
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$E2E_PIDS/$name.pid" \
		"$E2E_BIN/$bin" "$@" </dev/null >>"$E2E_LOGS/$name.log" 2>&1 9>&- &
	local i
	for ((i = 0; i < 50; i++)); do [[ -s $E2E_PIDS/$name.pid ]] && break; sleep 0.1; done
}
# await SECONDS NAME LOGNAME CMD...: wait for CMD; on timeout show the component's log and fail.
await() {
	local secs=$1 what=$2 logname=$3
	shift 3
	wait_for "$secs" "$what" "$@" && return
	log "last lines of $E2E_LOGS/$logname.log:"
	tail -n 40 "$E2E_LOGS/$logname.log" >&2 || true
	exit 1
}
port_free_or_ours() { # PORT NAME BIN: fail early when some other program holds our port
	local port=$1
	if ! running "$2" "$3" && [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
		die "127.0.0.1:$port is taken by another program ($(ss -Hltnp "sport = :$port" | head -1))"
	fi
}
render() { # SRC DST: fill in the @VAR@ placeholders
	local cdi
	cdi=$(printf "'%s', " "${CDI_DIRS[@]}")
	sed -e "s#@E2E_STATE@#$E2E_STATE#g" -e "s#@E2E_PKI@#$E2E_PKI#g" \
		-e "s#@CONTAINERD_ROOT@#$CONTAINERD_ROOT#g" -e "s#@CONTAINERD_STATE@#$CONTAINERD_STATE#g" \
		-e "s#@CONTAINERD_SOCK@#$CONTAINERD_SOCK#g" -e "s#@PAUSE_IMAGE@#$PAUSE_IMAGE#g" \
		-e "s#@CDI_DIRS@#${cdi%, }#g" -e "s#@CNI_BRIDGE@#$CNI_BRIDGE#g" -e "s#@POD_SUBNET@#$POD_SUBNET#g" \
		"$E2E_DIR/etc/$1" >"$E2E_STATE/etc/.render.tmp"
	# replace only on change, atomically: containerd reloads the CNI config on every write
	if cmp -s "$E2E_STATE/etc/.render.tmp" "$2"; then
		rm -f "$E2E_STATE/etc/.render.tmp"
	else
		mv "$E2E_STATE/etc/.render.tmp" "$2"
	fi
}
fg=()
[[ -n $E2E_FEATURE_GATES ]] && fg=(--feature-gates="$E2E_FEATURE_GATES")

for p in 2379:etcd:etcd 6443:apiserver:kube-apiserver 10257:controller-manager:kube-controller-manager \
	10259:scheduler:kube-scheduler 10250:kubelet:kubelet; do
	IFS=: read -r port name bin <<<"$p"
	port_free_or_ours "$port" "$name" "$bin"
done

# --- PKI and kubeconfigs -----------------------------------------------------------------------
SERVICE_IP=$SERVICE_IP "$E2E_DIR/pki.sh" "$E2E_PKI"
for n in admin scheduler controller-manager kubelet; do
	kc=$E2E_STATE/$n.kubeconfig
	[[ -f $kc ]] && continue
	kubectl config --kubeconfig="$kc" set-cluster e2e --server=https://127.0.0.1:6443 \
		--certificate-authority="$E2E_PKI/ca.crt" --embed-certs=true >/dev/null
	kubectl config --kubeconfig="$kc" set-credentials "$n" --client-certificate="$E2E_PKI/$n.crt" \
		--client-key="$E2E_PKI/$n.key" --embed-certs=true >/dev/null
	kubectl config --kubeconfig="$kc" set-context e2e --cluster=e2e --user="$n" >/dev/null
	kubectl config --kubeconfig="$kc" use-context e2e >/dev/null
done
export KUBECONFIG=$KUBECONFIG_ADMIN

# --- loopback-only guard for the "kubernetes" Service ----------------------------------------------
# There is no kube-proxy. In-cluster clients (KUBERNETES_SERVICE_HOST=10.96.0.1) would send their
# traffic to the default gateway; instead the service IP lives on lo and is DNATed to the apiserver,
# and anything else in the service range is rejected, so nothing leaves the machine.
grep -q " $SERVICE_IP/32" <<<"$(ip -o addr show dev lo)" || ip addr add "$SERVICE_IP/32" dev lo
if ! iptables -t nat -S E2E-SERVICES >/dev/null 2>&1; then
	iptables -t nat -N E2E-SERVICES
	iptables -t nat -A E2E-SERVICES -d "$SERVICE_IP/32" -p tcp --dport 443 -j DNAT --to-destination 127.0.0.1:6443
	iptables -t nat -I OUTPUT -m comment --comment power-dev-plugin-e2e -j E2E-SERVICES
	iptables -N E2E-GUARD
	# (10.96.0.1 itself is local: the apiserver's replies, un-DNATed only after this chain, go to it)
	iptables -A E2E-GUARD -d "$SERVICE_IP/32" -j RETURN
	iptables -A E2E-GUARD -d "$SERVICE_CIDR" -j REJECT
	iptables -I OUTPUT -m comment --comment power-dev-plugin-e2e -j E2E-GUARD
fi

# --- etcd ------------------------------------------------------------------------------------------
start etcd etcd --name e2e --data-dir "$E2E_STATE/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster e2e=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
	--unsafe-no-fsync --log-level warn
await 60 etcd etcd curl -sf http://127.0.0.1:2379/health

# --- control plane ---------------------------------------------------------------------------------
P=$E2E_PKI
start apiserver kube-apiserver \
	--advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port=6443 \
	--endpoint-reconciler-type=none \
	--etcd-servers=http://127.0.0.1:2379 \
	--tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
	--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=Hostname \
	--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
	--runtime-config="$E2E_RUNTIME_CONFIG" "${fg[@]}" --v=1
await 120 kube-apiserver apiserver kubectl get --raw /readyz

start controller-manager kube-controller-manager \
	--kubeconfig="$E2E_STATE/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$E2E_STATE/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$E2E_STATE/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10257 \
	--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
	--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
	--use-service-account-credentials=true --controllers='*,-nodeipam' --leader-elect=false "${fg[@]}" --v=1
start scheduler kube-scheduler \
	--kubeconfig="$E2E_STATE/scheduler.kubeconfig" \
	--authentication-kubeconfig="$E2E_STATE/scheduler.kubeconfig" \
	--authorization-kubeconfig="$E2E_STATE/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false "${fg[@]}" --v=1

# --- containerd ------------------------------------------------------------------------------------
render containerd.toml "$E2E_STATE/etc/containerd.toml"
render cni.conflist "$E2E_STATE/cni/net.d/10-e2e.conflist"
# Nothing may be pulled from outside: every registry request goes to a dead loopback proxy.
(
	unset http_proxy https_proxy no_proxy all_proxy ALL_PROXY
	export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=''
	start containerd containerd --config "$E2E_STATE/etc/containerd.toml"
)
export CONTAINERD_ADDRESS=$CONTAINERD_SOCK CONTAINERD_NAMESPACE=k8s.io
await 60 containerd containerd ctr version
for img in pause busybox; do
	ctr image import --local "$E2E_IMAGES/$img.tar" >/dev/null 2>&1 || ctr image import "$E2E_IMAGES/$img.tar" >/dev/null
done

# --- kubelet ---------------------------------------------------------------------------------------
# The kubelet raises kernel.panic, kernel.panic_on_oops, vm.overcommit_memory, ... when it starts;
# keep the machine's values (recorded once per up/down cycle) and put them back once it is up.
if [[ ! -f $E2E_STATE/sysctl.orig ]]; then
	for k in kernel/panic kernel/panic_on_oops vm/overcommit_memory vm/panic_on_oom \
		kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward net/ipv6/conf/all/forwarding; do
		if [[ -f /proc/sys/$k ]]; then echo "$k=$(</proc/sys/$k)"; fi
	done >"$E2E_STATE/sysctl.orig"
fi
render kubelet.yaml "$E2E_STATE/etc/kubelet.yaml"
start kubelet kubelet --config="$E2E_STATE/etc/kubelet.yaml" --kubeconfig="$E2E_STATE/kubelet.kubeconfig" \
	--hostname-override=localhost --root-dir="$KUBELET_ROOT" "${fg[@]}" --v=2
await 120 node-registration kubelet kubectl get node localhost
await 180 node-ready kubelet kubectl wait --for=condition=Ready node/localhost --timeout=5s
while IFS='=' read -r k v; do echo "$v" >"/proc/sys/$k" || log "WARNING: could not restore $k=$v"; done <"$E2E_STATE/sysctl.orig"

# pods can be created once the default ServiceAccount and the root CA ConfigMap exist
await 60 default-serviceaccount controller-manager kubectl -n default get serviceaccount default
await 60 kube-root-ca controller-manager kubectl -n default get configmap kube-root-ca.crt

cat >"$E2E_STATE/env" <<EOT
# source this file to use the e2e cluster
export KUBECONFIG=$KUBECONFIG_ADMIN
export CONTAINERD_ADDRESS=$CONTAINERD_SOCK
export CONTAINERD_NAMESPACE=k8s.io
export PATH=$E2E_BIN:\$PATH
EOT
log "cluster up in $((SECONDS - T0))s ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1), node localhost Ready)"
cat >&2 <<EOT

  export KUBECONFIG=$KUBECONFIG_ADMIN   # or: source $E2E_STATE/env
  $E2E_BIN/kubectl get nodes
  images:  ctr -a $CONTAINERD_SOCK -n k8s.io image import IMAGE.tar   (nothing is ever pulled)
  logs:    $E2E_LOGS/   (etcd, apiserver, controller-manager, scheduler, containerd, kubelet)
  stop:    $E2E_DIR/down.sh   (make e2e-down)

EOT
