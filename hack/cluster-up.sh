#!/usr/bin/env bash
# cluster-up.sh: starts a real single-node Kubernetes cluster on this machine from the binaries
# that hack/build-kube.sh built (KUBE_BIN, default bin/k8s/v1.37.2): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, a private containerd with runc
# and the CNI bridge+portmap plugins, and CoreDNS as a pod. Everything lives under
# _work/cluster; the admin kubeconfig is _work/cluster/admin.kubeconfig. An OCI registry (REGISTRY,
# default 127.0.0.1:5000; its storage in _work/registry) serves the cluster's images.
#
#   hack/cluster-up.sh                    bring the cluster up (idempotent: seconds if already up)
#   hack/cluster-up.sh import IMAGE.tar…  import image tarballs into the cluster's containerd
#   hack/cluster-down.sh                  stop it and restore the host
#
# What the host looked like before (sysctls, paths, iptables chains, nft tables, cgroups,
# the node IP on lo) is recorded in _work/cluster/host so cluster-down.sh removes exactly
# what bring-up created. Needs root and the packages of hack/install-deps.sh.
set -euo pipefail
# shellcheck source=hack/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (it runs the kubelet, containerd and iptables)"

# import_images TAR...: imports image tarballs (hack/imagebuild output, docker-archive or OCI
# layout) into containerd namespace k8s.io, the only one the kubelet sees.
import_images() {
	local t
	[[ -S $SOCK ]] || die "containerd of the cluster is not running ($SOCK); run hack/cluster-up.sh first"
	for t in "$@"; do
		[[ -f $t ]] || die "image tarball $t not found"
		ctr_k8s images import "$t" >/dev/null || die "import of $t failed"
		log "imported $t"
	done
}

if [[ ${1:-} == import ]]; then
	shift
	[[ $# -gt 0 ]] || die "usage: $0 import IMAGE.tar [IMAGE.tar...]"
	import_images "$@"
	exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [import IMAGE.tar...]"

mkdir -p "$(dirname "$W")"
exec 8>"$(dirname "$W")/cluster.lock"
flock 8

START=$SECONDS

all_running() {
	local c
	for c in "${COMPONENTS[@]}"; do
		pid_of "$c" >/dev/null || return 1
	done
}

# Idempotent: a healthy running cluster is left alone.
if [[ -d $HOST_STATE ]]; then
	if all_running && apiserver_ready && node_ready; then
		log "already up (node $NODE_NAME Ready)"
		echo "KUBECONFIG=$KUBECONFIG_ADMIN"
		exit 0
	fi
	log "a previous cluster is partly running or broken; tearing it down first"
	flock -u 8
	"$ROOT/hack/cluster-down.sh"
	flock 8
fi

# ---------------------------------------------------------------------------------------
# Preflight.
for b in kube-apiserver etcd kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns; do
	[[ -x $KUBE_BIN/$b ]] || die "$KUBE_BIN/$b missing: run 'make kube-bins' (hack/build-kube.sh $KUBE_VERSION $KUBE_BIN)"
done
[[ -n $REGISTRY_BIN && -x $REGISTRY_BIN ]] ||
	die "the registry binary ${REGISTRY_BIN:-(REGISTRY_BIN unset)} is missing: run 'make cluster-up', which builds it"
[[ $REGISTRY == 127.0.0.1:* || $REGISTRY == localhost:* ]] ||
	die "REGISTRY=$REGISTRY: the local registry listens on loopback only (127.0.0.1:PORT)"
for c in containerd containerd-shim-runc-v2 runc ctr iptables ip6tables conntrack openssl ip nft curl go; do
	command -v "$c" >/dev/null || die "$c not found: run hack/install-deps.sh"
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/portmap && -x /usr/lib/cni/host-local ]] ||
	die "CNI plugins missing in /usr/lib/cni: run hack/install-deps.sh"
for port in "$REGISTRY" "127.0.0.1:$ETCD_PORT" "127.0.0.1:$ETCD_PEER_PORT" "$NODE_IP:$APISERVER_PORT" "$NODE_IP:10250" \
	127.0.0.1:10248 127.0.0.1:10249 127.0.0.1:10256 127.0.0.1:10257 127.0.0.1:10259; do
	if ss -Hltn "sport = :${port##*:}" | awk '{print $4}' | grep -qE "^(\*|0\.0\.0\.0|\[::\]|${port%:*}):${port##*:}$"; then
		die "port $port is already in use; stop what listens there (ss -ltnp)"
	fi
done
if ip link show cni0 >/dev/null 2>&1; then
	die "a cni0 bridge already exists (another cluster?); remove it or run hack/cluster-down.sh"
fi

# ---------------------------------------------------------------------------------------
# Record the host before touching it.
if [[ -d $W ]] && grep -q " $W/" /proc/self/mounts; then
	die "mounts remain under $W from an earlier run without host state; unmount them first"
fi
rm -rf --one-file-system "$W"
mkdir -p "$HOST_STATE" "$W/logs" "$W/pids" "$W/run" "$W/pki" "$W/configs"
for s in "${SYSCTLS[@]}"; do
	v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v" >>"$HOST_STATE/sysctl"
done
for p in "${HOST_PATHS[@]}"; do
	[[ -e $p ]] || echo "$p" >>"$HOST_STATE/paths-created"
done
touch "$HOST_STATE/sysctl" "$HOST_STATE/paths-created"
for fam in 4 6; do
	ipt=iptables
	[[ $fam == 6 ]] && ipt=ip6tables
	for t in filter nat mangle raw; do
		# -S lists "-N CHAIN" for user chains; builtin chains are "-P".
		"$ipt" -w -t "$t" -S 2>/dev/null | awk '$1=="-N"{print $2}' >"$HOST_STATE/chains-$fam-$t" || true
	done
done
nft list tables >"$HOST_STATE/nft-tables" 2>/dev/null || true
for cg in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
	[[ -e $cg ]] && echo "$cg" >>"$HOST_STATE/cgroups-existing"
done
touch "$HOST_STATE/cgroups-existing"
ls /run/netns >"$HOST_STATE/netns-existing" 2>/dev/null || true
if ! ip -4 addr show dev lo | grep -qw "$NODE_IP/32"; then
	ip addr add "$NODE_IP/32" dev lo
	touch "$HOST_STATE/lo-addr-added"
fi

# ---------------------------------------------------------------------------------------
# PKI: EC P-256, 10 years, openssl only.
PKI=$W/pki
# cert NAME SIGNER CN O EKU [SAN]: key and cert signed by SIGNER (ca or front-proxy-ca).
cert() {
	local name=$1 signer=$2 cn=$3 o=$4 eku=$5 san=${6:-} subj="/CN=$3"
	[[ -n $o ]] && subj="/O=$o/CN=$cn"
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
	openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n $san ]] && echo "subjectAltName=$san"
	} >"$PKI/$name.ext"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$signer.crt" -CAkey "$PKI/$signer.key" \
		-CAcreateserial -CAserial "$PKI/$signer.srl" -days 3650 -sha256 -extfile "$PKI/$name.ext" \
		-out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
ca() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$1.key" 2>/dev/null
	openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$PKI/$1.crt" 2>/dev/null
}
(
	umask 077
	ca ca ssmtunnel-local-ca
	ca front-proxy-ca ssmtunnel-local-front-proxy-ca
	cert apiserver ca kube-apiserver "" serverAuth \
		"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,IP:$NODE_IP"
	cert apiserver-kubelet-client ca kube-apiserver-kubelet-client system:masters clientAuth
	cert admin ca kubernetes-admin system:masters clientAuth
	cert kube-controller-manager ca system:kube-controller-manager "" clientAuth
	cert kube-scheduler ca system:kube-scheduler "" clientAuth
	cert kube-proxy ca system:kube-proxy "" clientAuth
	cert kubelet ca "system:node:$NODE_NAME" system:nodes clientAuth
	cert kubelet-serving ca "system:node:$NODE_NAME" system:nodes serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
	cert front-proxy-client front-proxy-ca front-proxy-client "" clientAuth
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
)

# kubeconfig NAME FILE: a kubeconfig using the client cert NAME.
kubeconfig() {
	cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ssmtunnel
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$NODE_IP:$APISERVER_PORT
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: ssmtunnel
  context:
    cluster: ssmtunnel
    user: $1
    namespace: default
current-context: ssmtunnel
EOF
	chmod 600 "$2"
}
kubeconfig admin "$KUBECONFIG_ADMIN"
for c in kube-controller-manager kube-scheduler kube-proxy kubelet; do
	kubeconfig "$c" "$W/configs/$c.kubeconfig"
done

# ---------------------------------------------------------------------------------------
# Images of the cluster's own pods, built with hack/imagebuild and imported: the kubelet needs the pause
# image before anything can be pulled. Our own images come from the registry below.
mkdir -p "$IMAGE_CACHE"
newer() { [[ ! -e $1 ]] || [[ -n $(find "${@:2}" -newer "$1" -print -quit 2>/dev/null) ]]; }
if newer "$IMAGE_CACHE/imagebuild" "$ROOT/hack/imagebuild"; then
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$IMAGE_CACHE/imagebuild" ./hack/imagebuild)
fi
if newer "$IMAGE_CACHE/pause-v1.tar" "$ROOT/hack/pause" "$IMAGE_CACHE/imagebuild"; then
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$IMAGE_CACHE/pause" ./hack/pause)
	"$IMAGE_CACHE/imagebuild" --tag "$PAUSE_IMAGE" --tar "$IMAGE_CACHE/pause-v1.tar" --user 65535 --no-passwd \
		--file "/pause=$IMAGE_CACHE/pause" --entrypoint /pause >/dev/null
fi
COREDNS_TAR=$IMAGE_CACHE/coredns-$COREDNS_VERSION.tar
if newer "$COREDNS_TAR" "$KUBE_BIN/coredns" "$IMAGE_CACHE/imagebuild"; then
	"$IMAGE_CACHE/imagebuild" --tag "$COREDNS_IMAGE" --tar "$COREDNS_TAR" --user 65532 \
		--file "/coredns=$KUBE_BIN/coredns" --entrypoint /coredns >/dev/null
fi

# ---------------------------------------------------------------------------------------
# The OCI registry (CNCF distribution): `make push` and `make chart-push` put images and the chart there,
# and containerd pulls from it as a cluster pulls from ECR.
mkdir -p "$REGISTRY_DATA"
cat >"$W/configs/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
start registry "$REGISTRY_BIN" serve "$W/configs/registry.yml"
log "registry: http://$REGISTRY, storage $REGISTRY_DATA"

# ---------------------------------------------------------------------------------------
# containerd (private instance) + CNI. The CNI config must exist before containerd starts.
mkdir -p "$W/cni/net.d" "$W/cni/ipam" "$W/containerd" "$W/run/runc"
cat >"$W/cni/net.d/10-ssmtunnel.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ssmtunnel",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$W/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
# containerd pulls from the local registry over plain HTTP (hosts.toml in the registry's host directory).
mkdir -p "$W/containerd/certs.d/$REGISTRY"
cat >"$W/containerd/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$W/configs/containerd.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
oom_score = 0

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$W/run/containerd-ttrpc.sock"

[debug]
  level = "warn"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$W/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # No CAP_SYS_RESOURCE here: runc cannot set the sandbox's oom_score_adj of -998.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$W/run/runc"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$W/containerd/certs.d"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$W/cni/net.d"
      max_conf_num = 1
EOF
start containerd "$(command -v containerd)" --config "$W/configs/containerd.toml"

# ---------------------------------------------------------------------------------------
# etcd: plain HTTP on loopback, throwaway data.
start etcd "$KUBE_BIN/etcd" --name ssmtunnel --data-dir "$W/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "ssmtunnel=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn

wait_for "registry" 30 curl -sf --max-time 2 "http://$REGISTRY/v2/" || die "the registry did not start; see $W/logs/registry.log"
wait_for "containerd" 30 ctr -a "$SOCK" version || die "containerd did not start; see $W/logs/containerd.log"
import_images "$IMAGE_CACHE/pause-v1.tar" "$COREDNS_TAR"
wait_for "etcd" 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not start; see $W/logs/etcd.log"

# ---------------------------------------------------------------------------------------
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
	--bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
	--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
	--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
	--requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
	--requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
	--requestheader-username-headers=X-Remote-User \
	--proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
	--allow-privileged=true --profiling=false
wait_for "kube-apiserver" 90 apiserver_ready || die "kube-apiserver not ready; see $W/logs/kube-apiserver.log"

# ---------------------------------------------------------------------------------------
mkdir -p "$W/volume-plugins"
start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
	--kubeconfig="$W/configs/kube-controller-manager.kubeconfig" \
	--authentication-kubeconfig="$W/configs/kube-controller-manager.kubeconfig" \
	--authorization-kubeconfig="$W/configs/kube-controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false \
	--allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
	--use-service-account-credentials=true \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
	--flex-volume-plugin-dir="$W/volume-plugins" --profiling=false
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
	--kubeconfig="$W/configs/kube-scheduler.kubeconfig" \
	--authentication-kubeconfig="$W/configs/kube-scheduler.kubeconfig" \
	--authorization-kubeconfig="$W/configs/kube-scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --profiling=false

# ---------------------------------------------------------------------------------------
# kubelet. Pods without CoreDNS-resolvable names get nameserver 127.0.0.1 (their own
# loopback): nothing in a pod ever asks the host's resolver.
echo "nameserver 127.0.0.1" >"$W/configs/resolv.conf"
mkdir -p "$W/kubelet" "$W/pod-logs"
cat >"$W/configs/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host: the 1.37 kubelet refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
resolvConf: $W/configs/resolv.conf
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
podLogsDir: $W/pod-logs
volumePluginDir: $W/volume-plugins
# Images cannot be pulled again here: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
oomScoreAdj: 0
protectKernelDefaults: false
EOF
start kubelet "$KUBE_BIN/kubelet" --config="$W/configs/kubelet.yaml" \
	--kubeconfig="$W/configs/kubelet.kubeconfig" --root-dir="$W/kubelet" \
	--hostname-override="$NODE_NAME" --node-ip="$NODE_IP"

cat >"$W/configs/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $W/configs/kube-proxy.kubeconfig
mode: ${PROXY_MODE:-iptables}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
# No bindAddress: it is not a listen address but kube-proxy's idea of the node IP.
nodePortAddresses: [primary]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
oomScoreAdj: 0
EOF
start kube-proxy "$KUBE_BIN/kube-proxy" --config="$W/configs/kube-proxy.yaml"

# ---------------------------------------------------------------------------------------
# Pod egress is blocked: pods reach each other, Services and the host, nothing beyond.
iptables -w -N "$EGRESS_CHAIN"
iptables -w -A "$EGRESS_CHAIN" -m limit --limit 6/min --limit-burst 5 -j LOG --log-prefix "ssmtunnel-egress: "
iptables -w -A "$EGRESS_CHAIN" -p tcp -j REJECT --reject-with tcp-reset
iptables -w -A "$EGRESS_CHAIN" -j REJECT --reject-with icmp-port-unreachable
iptables -w -I FORWARD 1 -i cni0 ! -o cni0 -m comment --comment "ssmtunnel local cluster: no pod egress" -j "$EGRESS_CHAIN"

wait_for "node $NODE_NAME Ready" 120 node_ready || die "node not Ready; see $W/logs/kubelet.log"

# ---------------------------------------------------------------------------------------
# CoreDNS, without a forward plugin: cluster names only.
cat >"$W/configs/coredns.yaml" <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $DNS_SVC_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
kubectl apply -f "$W/configs/coredns.yaml" >/dev/null

# Pods created before the default ServiceAccount exists are rejected.
wait_for "ServiceAccount default/default" 60 kubectl get serviceaccount default -n default ||
	die "no default ServiceAccount; see $W/logs/kube-controller-manager.log"
wait_for "CoreDNS ready" 90 kubectl -n kube-system rollout status deployment/coredns --timeout=2s ||
	die "CoreDNS not ready; kubectl -n kube-system describe pod -l k8s-app=kube-dns"

log "up in $((SECONDS - START))s: node $NODE_NAME Ready, $("$KUBE_BIN/kubectl" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -1)"
echo "KUBECONFIG=$KUBECONFIG_ADMIN"
