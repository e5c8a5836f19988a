#!/usr/bin/env bash
# cluster-smoke.sh: proves the local cluster (hack/cluster-up.sh) works end to end.
#
#   1. builds hack/smoke into an image with hack/imagebuild and imports it into containerd;
#   2. runs it as a 2-replica Deployment behind a ClusterIP Service;
#   3. from a client pod, GETs the Service by full DNS name (<svc>.<ns>.svc.cluster.local),
#      by short name (<svc>.<ns>.svc) and by ClusterIP, and checks that pod egress beyond the
#      node is rejected;
#   4. checks kubectl logs and kubectl exec.
# Leaves nothing behind (deletes its namespace). Exit status 0 means every check passed.
set -euo pipefail
# shellcheck source=hack/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

NS=${SMOKE_NAMESPACE:-smoke}
IMG=localhost/smoke:v1
START=$SECONDS
fail() {
	log "SMOKE FAILED: $*"
	kubectl -n "$NS" get pods -o wide >&2 || true
	kubectl -n "$NS" get events --sort-by=.lastTimestamp >&2 || true
	exit 1
}

[[ -f $KUBECONFIG_ADMIN ]] || die "no cluster: run hack/cluster-up.sh first"
mkdir -p "$IMAGE_CACHE"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$IMAGE_CACHE/smoke" ./hack/smoke)
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$IMAGE_CACHE/imagebuild" ./hack/imagebuild)
"$IMAGE_CACHE/imagebuild" --tag "$IMG" --tar "$IMAGE_CACHE/smoke-v1.tar" --user 65532 \
	--file "/smoke=$IMAGE_CACHE/smoke" --entrypoint /smoke >/dev/null
"$ROOT/hack/cluster-up.sh" import "$IMAGE_CACHE/smoke-v1.tar"

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
wait_for "ServiceAccount $NS/default" 60 kubectl -n "$NS" get serviceaccount default || fail "no default ServiceAccount"

kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
      - name: web
        image: $IMG
        imagePullPolicy: Never
        args: [serve, ":8080"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
kubectl -n "$NS" rollout status deployment/web --timeout=90s >/dev/null || fail "web Deployment not ready"
CLUSTER_IP=$(kubectl -n "$NS" get service web -o jsonpath='{.spec.clusterIP}')

kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true}
  containers:
  - name: client
    image: $IMG
    imagePullPolicy: Never
    args: [get, "http://web.$NS.svc.$CLUSTER_DOMAIN/", "http://web.$NS.svc/", "http://$CLUSTER_IP/"]
EOF
phase() { kubectl -n "$NS" get pod client -o jsonpath='{.status.phase}'; }
done_phase() { [[ $(phase) == Succeeded || $(phase) == Failed ]]; }
wait_for "client pod" 90 done_phase || fail "client pod did not finish"
out=$(kubectl -n "$NS" logs client) || fail "kubectl logs failed"
echo "$out"
[[ $(phase) == Succeeded ]] || fail "client pod failed"
[[ $(grep -c '^GET .*: hello from web-' <<<"$out") -eq 3 ]] || fail "expected 3 answers from web pods"

# kubectl exec (apiserver -> kubelet -> containerd streaming) and pod egress blocked.
webpod=$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$NS" exec "$webpod" -- /smoke get "http://web.$NS.svc/" || fail "kubectl exec failed"
rejected() { iptables -w -t filter -L "$EGRESS_CHAIN" -v -n -x | awk '$3=="REJECT"{n+=$1} END{print n+0}'; }
before=$(rejected)
kubectl -n "$NS" exec "$webpod" -- /smoke blocked "http://198.51.100.1/" || fail "pod egress is not blocked"
after=$(rejected)
((after > before)) || fail "the egress request failed, but not through the $EGRESS_CHAIN REJECT rule"
log "pod egress rejected by $EGRESS_CHAIN ($before -> $after packets)"

kubectl delete namespace "$NS" --wait=false >/dev/null
log "smoke test passed in $((SECONDS - START))s"
