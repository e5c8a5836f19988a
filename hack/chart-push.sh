#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# chart-push.sh REGISTRY CHART_VERSION APP_VERSION DIGEST — packages charts/ssmtunnel as CHART_VERSION with
# its image set to REGISTRY/ssmtunnel:APP_VERSION pinned at DIGEST (what `make push` printed), and pushes it
# to oci://REGISTRY/charts. A user then installs it with no image values at all:
#
#   helm install ssmtunnel oci://REGISTRY/charts/ssmtunnel --version CHART_VERSION
#
# HELM names the helm binary; PLAIN_HTTP=--plain-http for a loopback registry.
set -euo pipefail
[[ $# -eq 4 ]] || { echo "usage: $0 REGISTRY CHART_VERSION APP_VERSION DIGEST" >&2; exit 2; }
registry=$1 chart_version=$2 app_version=$3 digest=$4
HELM=${HELM:-helm}
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "chart-push: '$digest' is not an image digest: run make push first" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/bin/chart
src=$out/src/ssmtunnel
rm -rf "$out"
mkdir -p "$out/src"
cp -R "$root/charts/ssmtunnel" "$src"
# The packaged chart's defaults are this build's image: the operator's image block only (two-space keys;
# tunnel.image is indented deeper). Each line must be there exactly once, or the chart changed shape.
for kv in "registry=\"$registry\"" "tag=\"$app_version\"" "digest=\"$digest\""; do
	key=${kv%%=*} value=${kv#*=}
	[[ $(grep -c "^  $key: " "$src/values.yaml") -eq 1 ]] ||
		{ echo "chart-push: values.yaml has no single '  $key:' line under image:" >&2; exit 1; }
	sed -i "s|^  $key: .*|  $key: $value|" "$src/values.yaml"
done
"$HELM" package "$src" --version "$chart_version" --app-version "$app_version" --destination "$out" >/dev/null
pkg=$out/ssmtunnel-$chart_version.tgz
# ${PLAIN_HTTP:-} unquoted: empty for a TLS registry.
# shellcheck disable=SC2086
"$HELM" push "$pkg" "oci://$registry/charts" ${PLAIN_HTTP:-}
echo "chart-push: oci://$registry/charts/ssmtunnel $chart_version (image $registry/ssmtunnel:$app_version@$digest)"
echo "chart-push: install with: helm install ssmtunnel oci://$registry/charts/ssmtunnel --version $chart_version ${PLAIN_HTTP:-}"
