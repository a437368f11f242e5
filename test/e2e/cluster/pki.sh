#!/usr/bin/env bash
# pki.sh DIR: a CA and the certificates of the e2e cluster (openssl only). Idempotent: keeps an existing CA.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077
[[ -f ca.key ]] || openssl genrsa -out ca.key 2048 2>/dev/null
[[ -f ca.crt ]] || openssl req -x509 -new -key ca.key -subj "/CN=power-dev-plugin-e2e-ca" -days 3650 -out ca.crt
cat >ext.cnf <<EOT
[server]
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:@SERVICE_IP@
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
[client]
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOT
sed -i "s/@SERVICE_IP@/${SERVICE_IP:-10.96.0.1}/" ext.cnf
# cert NAME CN O EXT
cert() {
	[[ -f $1.crt ]] && return
	openssl genrsa -out "$1.key" 2048 2>/dev/null
	openssl req -new -key "$1.key" -subj "/CN=$2${3:+/O=$3}" -out "$1.csr"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
		-extfile ext.cnf -extensions "$4" -out "$1.crt" 2>/dev/null
	rm -f "$1.csr"
}
cert apiserver kube-apiserver "" server
cert kubelet system:node:localhost system:nodes server # serving and client cert of node "localhost"
cert admin kubernetes-admin system:masters client
cert scheduler system:kube-scheduler "" client
cert controller-manager system:kube-controller-manager "" client
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
[[ -f sa.key ]] || openssl genrsa -out sa.key 2048 2>/dev/null
[[ -f sa.pub ]] || openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
