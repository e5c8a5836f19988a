#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# demo.sh — `make demo`, the "run the product" command. On the local cluster (make cluster-up) with the image
# and the chart in its registry (make chart-push): installs the chart from oci:// as a user would, starts an
# emulated Session Manager with one managed instance that serves a small web app on its loopback, applies a
# PortForward to it, waits for Ready and proves a pod reaches the app through http://web.ssmtunnel-demo.svc.
# Everything keeps running afterwards. Idempotent: run it again to redeploy. Tear down with `make cluster-down`.
#
# Environment (the Makefile sets them): KUBE_BIN (folder with kubectl), IMG (image reference), REGISTRY,
# CHART_VERSION, HELM.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
: "${KUBE_BIN:?set KUBE_BIN (run through make demo)}"
: "${IMG:?set IMG (run through make demo)}"
: "${HELM:?set HELM (run through make demo)}"
: "${REGISTRY:?set REGISTRY (run through make demo)}"
: "${CHART_VERSION:?set CHART_VERSION (run through make demo)}"
GO=${GO:-go}
export KUBECONFIG=${KUBECONFIG:-$root/_work/cluster/admin.kubeconfig}
kubectl() { "$KUBE_BIN/kubectl" "$@"; }
helm() { "$HELM" "$@"; }

release=ssmtunnel
ns_operator=ssmtunnel-system
ns_aws=ssmtunnel-demo-aws # the emulated AWS side: Session Manager and one managed instance
ns_app=ssmtunnel-demo     # where applications and their PortForwards live
instance=i-0123456789abcdef0
repo=${IMG%:*}
tag=${IMG##*:}
web_img=$repo-demo-web:$tag
work=$root/_work/demo
mkdir -p "$work"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }
# On failure, show what the cluster looked like.
trap 'rc=$?; if ((rc != 0)); then echo "demo: failed; state of the demo namespaces:" >&2;
  kubectl get pods,pf,deploy,svc -n "$ns_app" -o wide 2>&1 | sed "s/^/  /" >&2 || true;
  kubectl get pods -n "$ns_aws" -o wide 2>&1 | sed "s/^/  /" >&2 || true;
  kubectl get events -n "$ns_app" --sort-by=.lastTimestamp 2>&1 | tail -20 | sed "s/^/  /" >&2 || true;
  kubectl logs -n "$ns_operator" deploy/$release --tail=30 2>&1 | sed "s/^/  /" >&2 || true; fi' EXIT

[[ -s $KUBECONFIG ]] || die "$KUBECONFIG not found: run 'make cluster-up' first"
kubectl get --raw /readyz >/dev/null || die "the API server does not answer: run 'make cluster-up'"

say "Building the demo web app image $web_img (test/e2e/webapp) and pushing it to $REGISTRY"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -o "$work/webapp" ./test/e2e/webapp
"$GO" run ./hack/imagebuild --tag "$web_img" --layout "$work/webapp-image" --platform linux/amd64 --user 65532 \
  --file "/webapp=$work/webapp" --entrypoint /webapp >/dev/null
"$GO" run ./hack/imagebuild push --layout "$work/webapp-image" --to "$web_img" --plain-http

say "Namespaces (Pod Security: restricted)"
for ns in "$ns_operator" "$ns_aws" "$ns_app"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
done
# Pods are refused until a new namespace's default ServiceAccount exists.
for ns in "$ns_operator" "$ns_aws" "$ns_app"; do
  for _ in $(seq 1 150); do kubectl get serviceaccount default -n "$ns" >/dev/null 2>&1 && break; sleep 0.2; done
done

say "Emulated Session Manager with managed instance $instance (a web app on the instance's 127.0.0.1:8080)"
kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssm-emulator
  namespace: $ns_aws
  labels: {app.kubernetes.io/name: ssm-emulator}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: ssm-emulator}
  template:
    metadata:
      labels: {app.kubernetes.io/name: ssm-emulator}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: emulator
          image: $IMG
          imagePullPolicy: IfNotPresent
          command: [/ssm-emulator, --listen, "0.0.0.0:4566", --instance, $instance]
          ports: [{name: ssm, containerPort: 4566}]
          readinessProbe:
            tcpSocket: {port: ssm}
            periodSeconds: 1
          securityContext: &restricted
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
        - name: web
          image: $web_img
          imagePullPolicy: IfNotPresent
          command: [/webapp, serve, --listen, "127.0.0.1:8080"]
          securityContext: *restricted
---
apiVersion: v1
kind: Service
metadata:
  name: ssm-emulator
  namespace: $ns_aws
spec:
  selector: {app.kubernetes.io/name: ssm-emulator}
  ports: [{name: ssm, port: 4566, targetPort: ssm}]
EOF
kubectl rollout status -n "$ns_aws" deployment/ssm-emulator --timeout=180s

say "Installing the chart: helm upgrade --install $release oci://$REGISTRY/charts/ssmtunnel --version $CHART_VERSION"
helm upgrade --install "$release" "oci://$REGISTRY/charts/ssmtunnel" --version "$CHART_VERSION" --plain-http \
  --namespace "$ns_operator" \
  --set aws.region=us-east-1 \
  --set aws.endpointURL="http://ssm-emulator.$ns_aws.svc:4566" \
  --wait --timeout 3m

say "Credentials for the tunnel pods (fake keys: the emulator checks that requests are signed, not by whom)"
kubectl create secret generic ssmtunnel-aws-credentials -n "$ns_app" \
  --from-literal=AWS_ACCESS_KEY_ID=AKIADEMOFAKEKEY00000 \
  --from-literal=AWS_SECRET_ACCESS_KEY=demo-fake-secret-access-key \
  --dry-run=client -o yaml | kubectl apply -f -

say "A PortForwardPolicy lets namespace $ns_app reach $instance port 8080 (the chart denies namespaces without one)"
kubectl apply -f - <<EOF
apiVersion: ssmtunnel.io/v1alpha1
kind: PortForwardPolicy
metadata:
  name: demo
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: $ns_app
  instanceIDs: [$instance]
  remotePorts: ["8080"]
EOF

say "Applying a PortForward: port 80 of Service web.$ns_app -> port 8080 on $instance"
cat >"$work/portforward.yaml" <<EOF
apiVersion: ssmtunnel.io/v1alpha1
kind: PortForward
metadata:
  name: web
  namespace: $ns_app
spec:
  target:
    instanceID: $instance
  ports:
    - name: http
      port: 80
      remotePort: 8080
  replicas: 2
EOF
cat "$work/portforward.yaml"
start=$(date +%s%N)
# The operator turns the policy into an admission policy, which the API server loads a moment later.
for _ in $(seq 1 60); do kubectl apply --dry-run=server -f "$work/portforward.yaml" >/dev/null 2>&1 && break; sleep 0.5; done
kubectl apply -f "$work/portforward.yaml"
kubectl wait -n "$ns_app" portforward/web --for=condition=Ready --timeout=180s
ready=$(date +%s%N)
ms=$(((ready - start) / 1000000))
printf 'PortForward Ready %d.%03d s after kubectl apply\n' $((ms / 1000)) $((ms % 1000))

say "kubectl get pf -n $ns_app -o wide"
kubectl get pf -n "$ns_app" -o wide

# Ready means the tunnel pods are; kube-proxy programs the Service's address up to one sync later. This
# machine is the node, so a connect from here goes through the same rules as a pod's.
ip=$(kubectl get service -n "$ns_app" web -o jsonpath='{.spec.clusterIP}')
for _ in $(seq 1 60); do timeout 1 bash -c "</dev/tcp/$ip/80" 2>/dev/null && break; sleep 0.5; done

say "A pod fetches http://web.$ns_app.svc/ through the tunnel"
run_client() { # NAME ARGS...: run the demo client in a restricted pod, print its output
  local name=$1
  shift
  kubectl delete pod -n "$ns_app" "$name" --ignore-not-found --wait >/dev/null
  local args=""
  for a in "$@"; do args+="\"$a\","; done
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $ns_app
  labels: {app: web-client}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: client
      image: $web_img
      imagePullPolicy: IfNotPresent
      command: [/webapp, ${args%,}]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
EOF
  kubectl wait -n "$ns_app" "pod/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s >/dev/null ||
    { kubectl logs -n "$ns_app" "$name" >&2 || true; die "client pod $name did not succeed"; }
  kubectl logs -n "$ns_app" "$name"
  kubectl delete pod -n "$ns_app" "$name" --wait=false >/dev/null
}
run_client demo-get get --url "http://web.$ns_app.svc/"
say "100 concurrent requests of 32 KiB, every byte checked"
run_client demo-load load --url "http://web.$ns_app.svc" --requests 100 --concurrency 100 --size 32768

trap - EXIT
cat <<EOF

$(printf '\033[1m')ssmtunnel is running.$(printf '\033[0m')
  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$KUBE_BIN/kubectl

  kubectl get pf -A -o wide                          # PortForwards and their addresses
  kubectl describe pf -n $ns_app web                 # conditions and events
  kubectl get pods -n $ns_app -l app.kubernetes.io/instance=web
  kubectl logs -n $ns_operator deploy/$release       # the operator
  kubectl scale pf -n $ns_app web --replicas=3       # scale the tunnel pods
  kubectl -n $ns_app port-forward svc/web 8080:80 &  # then: curl http://127.0.0.1:8080/
  $work/webapp get --url http://127.0.0.1:8080/

Your own PortForward: edit $work/portforward.yaml (instance $instance, ports 8080 on its loopback) and
kubectl apply -f it. Emulated AWS lives in namespace $ns_aws.

Tear down: make cluster-down   (or only the product: helm uninstall $release -n $ns_operator)
EOF
