# shellcheck shell=bash
# Shared settings and helpers of hack/cluster-up.sh, hack/cluster-down.sh and
# hack/cluster-smoke.sh. Sourced, not run. The facts behind each setting are in
# docs/local-cluster.md of the project's shared docs (summarised in hack/README.md).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# State, logs, PKI and kubeconfigs. Fixed by the project contract: _work/cluster.
W=${CLUSTER_DIR:-$ROOT/_work/cluster}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
KUBE_BIN=${KUBE_BIN:-$ROOT/bin/k8s/$KUBE_VERSION}
[[ $KUBE_BIN == /* ]] || KUBE_BIN=$ROOT/$KUBE_BIN
# Images of the cluster's own pods (pause, coredns), cached across bring-ups.
IMAGE_CACHE=${IMAGE_CACHE:-$ROOT/bin/images}

NODE_NAME=${NODE_NAME:-ssmtunnel-node}
# The node IP: a /32 on lo (this kernel has no dummy netdev; the kubelet refuses loopback
# node IPs and the kubernetes Service refuses 127/8 endpoints).
NODE_IP=${NODE_IP:-10.199.0.1}
POD_CIDR=10.244.0.0/16     # --cluster-cidr
NODE_POD_CIDR=10.244.0.0/24 # the first /24 the node-ipam controller hands out = bridge subnet
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
APISERVER_PORT=6443
PAUSE_IMAGE=localhost/pause:v1
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
COREDNS_IMAGE=localhost/coredns:$COREDNS_VERSION
EGRESS_CHAIN=SSMTUNNEL-EGRESS
# The OCI registry the cluster pulls our images from (CNCF distribution, plain HTTP on loopback), and its
# storage, which outlives the cluster so a second bring-up finds what was pushed before.
REGISTRY=${REGISTRY:-127.0.0.1:5000}
REGISTRY_BIN=${REGISTRY_BIN:-}
REGISTRY_DATA=${REGISTRY_DATA:-$ROOT/_work/registry}

KUBECONFIG_ADMIN=$W/admin.kubeconfig
SOCK=$W/run/containerd.sock
HOST_STATE=$W/host # what the host looked like before bring-up

# Paths outside the work dir that components write to no matter what they are told.
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/netns /run/containerd
	/usr/libexec/kubernetes /etc/cni /opt/cni /opt/containerd /var/lib/containerd /run/runc /etc/kubernetes)
# Sysctls the kubelet and kube-proxy change, plus ip_forward (the bridge plugin sets it).
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
	kernel.keys.root_maxbytes net.ipv4.ip_forward net.netfilter.nf_conntrack_tcp_timeout_established
	net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_max
	net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# Components in start order; stopped in reverse.
COMPONENTS=(registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "cluster: $*" >&2; }
die() {
	echo "cluster: ERROR: $*" >&2
	exit 1
}

kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_k8s() { ctr -a "$SOCK" -n k8s.io "$@"; }

# pid_of NAME prints the recorded PID of a component if that process is still ours.
pid_of() {
	local f=$W/pids/$1.pid pid exe
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	# Guard against PID reuse: the process must still run the binary we started.
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe% (deleted)} == "$(<"$W/pids/$1.exe")" ]] || return 1
	echo "$pid"
}

# start NAME BINARY ARGS...: runs a component in its own session, logs to logs/NAME.log,
# records its PID and binary.
start() {
	local name=$1 bin=$2
	shift 2
	mkdir -p "$W/logs" "$W/pids"
	# 8>&-: the component must not inherit (and hold forever) the cluster lock.
	nohup setsid "$bin" "$@" >>"$W/logs/$name.log" 2>&1 </dev/null 8>&- &
	echo $! >"$W/pids/$name.pid"
	readlink -f "$bin" >"$W/pids/$name.exe"
	log "$name started (pid $!, log $W/logs/$name.log)"
}

# stop NAME [TIMEOUT]: SIGTERM by recorded PID, SIGKILL after TIMEOUT seconds (default 10).
stop() {
	local name=$1 timeout=${2:-10} pid i
	if pid=$(pid_of "$name"); then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < timeout * 10; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		if [[ -d /proc/$pid ]]; then
			log "$name (pid $pid) did not stop in ${timeout}s, killing"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				[[ -d /proc/$pid ]] || break
				sleep 0.1
			done
		fi
	fi
	rm -f "$W/pids/$name.pid" "$W/pids/$name.exe"
}

# wait_for DESCRIPTION TIMEOUT COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
	local what=$1 timeout=$2 deadline
	shift 2
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "timed out after ${timeout}s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

apiserver_ready() {
	curl -sf --max-time 2 --cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key" \
		"https://$NODE_IP:$APISERVER_PORT/readyz" >/dev/null
}

node_ready() {
	[[ $(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
