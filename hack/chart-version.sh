#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# chart-version.sh VERSION — prints the chart version (SemVer, as Helm and OCI registries require) for a
# build VERSION: a release tag is its own SemVer (v0.2.0 -> 0.2.0); anything else (a commit, dirty or not)
# is Chart.yaml's version with the commit as a pre-release (0.1.0-gb3ac9ce), which sorts before the release.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 VERSION" >&2; exit 2; }
v=$1
semver='^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'
if [[ $v =~ $semver ]]; then
	echo "${v#v}"
	exit 0
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=$(sed -n 's/^version: *//p' "$root/charts/ssmtunnel/Chart.yaml")
[[ $base =~ $semver ]] || { echo "chart-version: charts/ssmtunnel/Chart.yaml version '$base' is not SemVer" >&2; exit 1; }
# A pre-release identifier may hold only [0-9A-Za-z-]; the g keeps an all-digit hash from reading as a number.
echo "$base-g${v//[^0-9A-Za-z-]/-}"
