#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# test-chart.sh HELM KUSTOMIZE — the install manifests' checks (`make test-chart`):
#   1. helm lint --strict, with default and non-default values;
#   2. helm template with default values and with charts/ssmtunnel/ci/*-values.yaml, checking what renders
#      (with the Prometheus Operator APIs for the ServiceMonitor, PodMonitor and PrometheusRule);
#   3. bad values rejected by values.schema.json (or the templates) with a message naming the bad key;
#   4. kustomize build config/default, plain and with the prometheus and network-policy parts enabled;
#   5. consistency (test/e2e/chart_test.go, build tag "chart"): the chart's RBAC equals config/rbac/role.yaml,
#      its CRDs equal config/crd/bases, every manager flag the chart or kustomize passes exists in
#      cmd/manager, the operator pod is restricted, and the monitoring objects select the tunnel pods, carry
#      the dashboard's JSON and the rule file's alerts (test/e2e/monitoring_chart_test.go);
#   6. the CRDs' descriptions have no hard line breaks inside a paragraph (go test ./hack/unwrapdesc).
# Any failure stops the script with a message and a non-zero exit.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 HELM KUSTOMIZE (make test-chart passes both)" >&2
  exit 2
fi
HELM=$(realpath -e "$1" 2>/dev/null || command -v "$1" || echo "$1")
KUSTOMIZE=$(realpath -e "$2" 2>/dev/null || command -v "$2" || echo "$2")
for tool in "$HELM" "$KUSTOMIZE"; do
  [[ -x $tool ]] || { echo "test-chart: $tool is not an executable: run 'make helm kustomize'" >&2; exit 2; }
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
chart=charts/ssmtunnel
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GO=${GO:-go}

failures=0
step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok   %s\n' "$*"; }
fail() { printf '   FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }
die() { printf 'test-chart: FAIL: %s\n' "$*" >&2; exit 1; }

# expect FILE PATTERN DESCRIPTION: the rendered FILE must contain PATTERN (extended regexp).
expect() {
  if grep -Eq -- "$2" "$1"; then ok "$3"; else fail "$3: /$2/ not found in $(basename "$1")"; fi
}
# expect_not FILE PATTERN DESCRIPTION
expect_not() {
  if grep -Eq -- "$2" "$1"; then fail "$3: /$2/ unexpectedly found in $(basename "$1")"; else ok "$3"; fi
}

[[ -d $chart/crds ]] && compgen -G "$chart/crds/*.yaml" >/dev/null ||
  die "$chart/crds is empty: run 'make manifests' (it copies config/crd/bases into the chart)"

step "helm lint"
# The source chart has no image registry (the published one has it set): every render names one.
reg=(--set image.registry=127.0.0.1:5000)
"$HELM" lint --strict "$chart" "${reg[@]}" || die "helm lint failed with default values"
for f in "$chart"/ci/*-values.yaml; do
  case $f in *full-values.yaml | *monitoring-values.yaml) continue ;; esac # need the Prometheus Operator APIs; rendered below
  "$HELM" lint --strict "$chart" "${reg[@]}" -f "$f" || die "helm lint failed with $f"
done
ok "lint"

step "helm template: default values"
out=$tmp/default.yaml
"$HELM" template ssmtunnel "$chart" --namespace ssmtunnel-system --include-crds "${reg[@]}" >"$out" ||
  die "helm template with default values failed"
expect "$out" '^kind: CustomResourceDefinition$' "CRD rendered"
expect "$out" '^  name: portforwards\.ssmtunnel\.io$' "PortForward CRD"
expect "$out" '^  name: portforwardpolicies\.ssmtunnel\.io$' "PortForwardPolicy CRD"
expect "$out" '- --policy-default=deny$' "namespaces without a policy are denied by default"
expect "$out" '- --default-clients=namespace$' "PortForwards without allowedClients admit their namespace only"
expect "$out" '^  name: ssmtunnel-operator-deployments$' "admission policy fencing the operator's Deployments"
expect "$out" '^kind: Deployment$' "operator Deployment"
expect "$out" '^kind: ServiceAccount$' "operator ServiceAccount"
expect "$out" '^  name: ssmtunnel-manager$' "manager ClusterRole/Binding named after the release"
expect "$out" '^  name: ssmtunnel-leader-election$' "leader-election Role"
expect "$out" '^  name: ssmtunnel-metrics$' "metrics Service"
expect "$out" '- --leader-elect$' "leader election on"
expect "$out" '- --metrics-secure=true$' "secure metrics"
expect "$out" '- --metrics-bind-address=:8443$' "metrics on :8443"
expect "$out" '- --health-probe-bind-address=:8081$' "probes on :8081"
expect "$out" 'image: "127\.0\.0\.1:5000/ssmtunnel:0\.1\.0"$' "image tag defaults to appVersion"
expect "$out" '- --tunnel-image=127\.0\.0\.1:5000/ssmtunnel:0\.1\.0$' "tunnels run the operator image"
expect "$out" 'readOnlyRootFilesystem: true' "read-only root file system"
expect "$out" 'runAsNonRoot: true' "non-root"
expect "$out" 'type: RuntimeDefault' "seccomp RuntimeDefault"
expect "$out" '^ +- ALL$' "drops ALL capabilities"
expect_not "$out" 'kind: ServiceMonitor' "no ServiceMonitor by default"
expect_not "$out" '^  - secrets$' "no access to Secrets"
expect_not "$out" 'aws-endpoint-url' "no endpoint override by default"

step "helm template: a tag of digits only, given with --set-string"
out=$tmp/digits.yaml
"$HELM" template ssmtunnel "$chart" "${reg[@]}" --set-string image.tag=6665882 >"$out" ||
  die "helm template with --set-string image.tag=6665882 failed"
expect "$out" 'image: "127\.0\.0\.1:5000/ssmtunnel:6665882"$' "operator image keeps the digits"
expect "$out" '- --tunnel-image=127\.0\.0\.1:5000/ssmtunnel:6665882$' "tunnel image keeps the digits"

step "helm template: an image digest pins operator and tunnels"
out=$tmp/digest.yaml
digest=sha256:$(printf '%064d' 7)
"$HELM" template ssmtunnel "$chart" "${reg[@]}" --set image.tag=v1.2.3 --set image.digest="$digest" >"$out" ||
  die "helm template with image.digest failed"
expect "$out" "image: \"127\\.0\\.0\\.1:5000/ssmtunnel:v1\\.2\\.3@$digest\"\$" "operator image by digest"
expect "$out" "- --tunnel-image=127\\.0\\.0\\.1:5000/ssmtunnel:v1\\.2\\.3@$digest\$" "tunnel image by digest"

# The Prometheus Operator's APIs, for the ServiceMonitor, PodMonitor and PrometheusRule.
monitoring_apis=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule)

step "helm template: ci/full-values.yaml"
out=$tmp/full.yaml
"$HELM" template rel "$chart" --namespace platform -f "$chart/ci/full-values.yaml" "${monitoring_apis[@]}" >"$out" ||
  die "helm template with ci/full-values.yaml failed"
expect "$out" '- --default-clients=all$' "defaultClients all"
expect "$out" '- --metrics-from-namespaces=monitoring,observability$' "metrics port narrowed to the named namespaces"
expect "$out" '^kind: PodMonitor$' "PodMonitor when enabled"
expect "$out" '^kind: PrometheusRule$' "PrometheusRule when enabled"
expect "$out" 'example\.com/dashboard: "ssmtunnel"$' "dashboard sidecar label key and value"
expect "$out" 'runbook_url: https://wiki\.example\.com/ssmtunnel/runbook#ssmtunnelportforwardnotready$' "runbook URLs"
expect_not "$out" 'alert: SSMTunnelResumeStorm$' "disabled alert left out"
expect "$out" '^kind: ServiceMonitor$' "ServiceMonitor when enabled"
expect "$out" 'release: prometheus' "ServiceMonitor labels"
expect "$out" '^  name: tunnels$' "fullnameOverride"
expect "$out" 'replicas: 2$' "operator replicas"
expect "$out" 'image: "registry\.example\.com/platform/ssmtunnel:v1\.2\.3"$' "operator image"
expect "$out" 'imagePullPolicy: Always$' "pull policy"
expect "$out" '- --tunnel-image=registry\.example\.com/platform/ssmtunnel-tunnel:v1\.2\.3-tunnel$' "tunnel image override"
expect "$out" '- --aws-endpoint-url=https://vpce-0123456789abcdef0-abcdefgh\.ssm\.eu-west-1\.vpce\.amazonaws\.com$' "endpoint URL flag"
expect "$out" 'eks\.amazonaws\.com/role-arn: arn:aws:iam::111122223333:role/ssmtunnel-operator' "operator IRSA annotation"
expect "$out" '- --tunnel-service-account-annotations=eks\.amazonaws\.com/role-arn=arn:aws:iam::111122223333:role/ssmtunnel-tunnel$' "tunnel IRSA role passed on"
expect "$out" '- --default-tunnel-service-account=app-tunnel$' "tunnel ServiceAccount name"
expect "$out" '- --tunnel-credentials-secret=team-aws-keys$' "tunnel credentials Secret"
expect "$out" '- --drain-timeout=45s$' "drain timeout"
expect "$out" '- --default-region=eu-west-1$' "default region"
expect "$out" '- --watch-namespaces=team-a,team-b$' "watched namespaces"
expect "$out" '- --metrics-bind-address=:9443$' "metrics port"
expect "$out" 'containerPort: 9081$' "health port"
expect "$out" 'name: operator-aws$' "operator credentials Secret"
expect "$out" 'priorityClassName: system-cluster-critical' "priority class"
expect "$out" 'key: dedicated' "tolerations"

step "helm template: ci/monitoring-values.yaml (dashboard, alerts and PodMonitor with default settings)"
out=$tmp/monitoring.yaml
"$HELM" template ssmtunnel "$chart" --namespace ssmtunnel-system "${reg[@]}" -f "$chart/ci/monitoring-values.yaml" "${monitoring_apis[@]}" >"$out" ||
  die "helm template with ci/monitoring-values.yaml failed"
expect "$out" '^kind: PodMonitor$' "PodMonitor"
expect "$out" '^  name: ssmtunnel-tunnels$' "PodMonitor named after the release"
expect "$out" '^      app\.kubernetes\.io/component: tunnel$' "PodMonitor selects tunnel pods"
expect "$out" '^    any: true$' "PodMonitor in every namespace"
expect "$out" 'targetLabel: portforward$' "portforward label from the pod's instance label"
expect "$out" 'targetLabel: namespace$' "namespace label"
expect "$out" 'sourceLabels: \[exported_namespace\]$' "operator series keep the PortForward's namespace"
expect "$out" '^kind: ConfigMap$' "dashboard ConfigMap"
expect "$out" '^    grafana_dashboard: "1"$' "Grafana sidecar label"
expect "$out" '^  ssmtunnel\.json: \|-$' "dashboard JSON"
expect "$out" '^kind: PrometheusRule$' "PrometheusRule"
expect "$out" 'alert: SSMTunnelPortForwardNotReady$' "not-ready alert"
expect_not "$out" 'runbook_url' "no runbook_url without prometheusRule.runbookURL"
out=$tmp/default.yaml
expect_not "$out" 'kind: PodMonitor' "no PodMonitor by default"
expect_not "$out" 'kind: PrometheusRule' "no PrometheusRule by default"
expect_not "$out" 'grafana_dashboard' "no dashboard by default"

step "helm template: ci/no-metrics-values.yaml"
out=$tmp/nometrics.yaml
"$HELM" template ssmtunnel "$chart" "${reg[@]}" -f "$chart/ci/no-metrics-values.yaml" >"$out" ||
  die "helm template with ci/no-metrics-values.yaml failed"
expect "$out" '- --metrics-bind-address=0$' "metrics off"
expect_not "$out" 'leader-elect' "leader election off"
expect_not "$out" 'kind: Role$' "no leader-election Role"
expect_not "$out" 'name: ssmtunnel-metrics' "no metrics Service or RBAC"

step "bad values are refused with a message naming the key"
# reject EXPECTED-MESSAGE HELM-ARGS...: rendering must fail and print EXPECTED-MESSAGE.
reject() {
  local want=$1
  shift
  local out
  if out=$("$HELM" template bad "$chart" "${reg[@]}" "$@" 2>&1); then
    fail "accepted $*"
    return
  fi
  if grep -qF -- "$want" <<<"$out"; then
    ok "refused $* -> $(grep -F -- "$want" <<<"$out" | head -1 | sed 's/^[- ]*//')"
  else
    fail "refused $* but without '$want'; helm said: $out"
  fi
}
reject "image.tag: \"latest\" is refused" --set image.tag=latest
reject "image.registry is empty: set it to the registry holding the ssmtunnel image" --set image.registry=
reject "/image/digest" --set image.digest=sha256:abc
reject "/image/pullPolicy" --set image.pullPolicy=Sometimes
reject "/image/repository" --set image.repository=
reject "/aws/region" --set aws.region=Europe
reject "/aws/endpointURL" --set aws.endpointURL=vpce.example.com
reject "/replicaCount" --set replicaCount=0
reject "/metrics/port" --set metrics.port=70000
reject "/healthProbe/port" --set healthProbe.port=0
reject "/logLevel" --set logLevel=verbose
reject "/policy/default" --set policy.default=maybe
reject "/tunnel/defaultClients" --set tunnel.defaultClients=some
reject "/tunnelServiceAccount/name" --set tunnelServiceAccount.name=Bad_Name
reject "/tunnelServiceAccount/annotations/eks.amazonaws.com~1role-arn" \
  --set 'tunnelServiceAccount.annotations.eks\.amazonaws\.com/role-arn=12'
reject "/tunnel/drainTimeout" --set tunnel.drainTimeout=20
reject "/tunnelServiceAccount/annotations/a" --set 'tunnelServiceAccount.annotations.a=x\,y'
reject "tunnel.image.tag: \"latest\" is refused" --set tunnel.image.repository=x/y --set tunnel.image.tag=latest
reject "/image/tag" --set image.tag=v1+bad
# A tag of digits only (a clean tree's short commit hash) is a number to --set; --set-string keeps it a string.
reject "at '/image/tag': got number, want string" --set image.tag=6665882
reject "/watchNamespaces/0" --set 'watchNamespaces[0]=Team_A'
reject "/extraArgs/0" --set 'extraArgs[0]=leader-elect'
reject "additional properties 'imageTag' not allowed" --set imageTag=v1
reject "no monitoring.coreos.com/v1 ServiceMonitor CRD" --set metrics.serviceMonitor.enabled=true
reject "no monitoring.coreos.com/v1 PodMonitor CRD" --set metrics.podMonitor.enabled=true
reject "no monitoring.coreos.com/v1 PrometheusRule CRD" --set prometheusRule.enabled=true
reject "/metrics/podMonitor/interval" --set metrics.podMonitor.interval=30
reject "/metrics/podMonitor/namespaces/0" --set 'metrics.podMonitor.namespaces[0]=Team_A'
reject "at '/grafanaDashboard/labelValue': got number, want string" --set grafanaDashboard.labelValue=1
reject "/grafanaDashboard/labelKey" --set 'grafanaDashboard.labelKey=bad key'
reject "/prometheusRule/disabledAlerts/0" --set 'prometheusRule.disabledAlerts[0]=ResumeStorm'
reject "/prometheusRule/runbookURL" --set prometheusRule.runbookURL=wiki/runbook
reject "additional properties 'enable' not allowed" --set prometheusRule.enable=true

step "kustomize build config/default"
out=$tmp/kustomize.yaml
"$KUSTOMIZE" build config/default >"$out" || die "kustomize build config/default failed"
expect "$out" '^kind: CustomResourceDefinition$' "CRD"
expect "$out" '^  name: ssmtunnel-system$' "namespace ssmtunnel-system"
expect "$out" '^  name: ssmtunnel-controller-manager$' "name prefix"
expect "$out" '^kind: ClusterRole$' "RBAC"
expect "$out" '- --metrics-secure=true$' "secure metrics patch"
expect "$out" 'image: 127\.0\.0\.1:5000/ssmtunnel:' "image set"
expect "$out" 'value: 127\.0\.0\.1:5000/ssmtunnel:' "tunnel image follows the operator image"
expect_not "$out" ':latest' "no :latest"
expect_not "$out" 'kind: ServiceMonitor' "no ServiceMonitor unless enabled"

step "kustomize build config/default with prometheus and network-policy enabled"
cp -r config "$tmp/config"
sed -i -e 's|^  #- ../prometheus|  - ../prometheus|' -e 's|^  #- ../network-policy|  - ../network-policy|' \
  "$tmp/config/default/kustomization.yaml"
out=$tmp/kustomize-all.yaml
"$KUSTOMIZE" build "$tmp/config/default" >"$out" || die "kustomize build with prometheus and network-policy failed"
expect "$out" '^kind: ServiceMonitor$' "ServiceMonitor"
expect "$out" '^kind: NetworkPolicy$' "NetworkPolicy"
expect "$out" '^  name: ssmtunnel-controller-manager-metrics-monitor$' "ServiceMonitor prefixed"

step "consistency: chart RBAC = config/rbac, chart CRDs = config/crd, manager flags exist, restricted pod"
HELM=$HELM KUSTOMIZE=$KUSTOMIZE "$GO" test -count=1 -tags chart -run '^TestChart' ./test/e2e/ ||
  fail "consistency tests (go test -tags chart ./test/e2e/)"

step "CRD descriptions: one line per paragraph (hack/unwrapdesc), so kubectl explain does not break sentences"
"$GO" test -count=1 ./hack/unwrapdesc/ || fail "CRD descriptions keep hard line breaks (go test ./hack/unwrapdesc/)"

if ((failures > 0)); then
  printf '\ntest-chart: %d check(s) FAILED\n' "$failures" >&2
  exit 1
fi
printf '\ntest-chart: all checks passed\n'
