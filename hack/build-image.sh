#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# build-image.sh IMG LDFLAGS — builds the ssmtunnel image index without a Docker daemon: for each of
# PLATFORMS (default linux/amd64,linux/arm64) /manager, /ssmtunnel and /ssm-emulator (static, CGO off,
# -trimpath), the CA bundle and user 65532, written by hack/imagebuild (go-containerregistry) as the OCI
# image layout bin/image (override with IMAGE_LAYOUT). `make push` sends it to a registry. Two builds of
# one commit give the same digest: entries and the config carry the commit's time.
set -euo pipefail

usage() { echo "usage: $0 IMAGE_REF LDFLAGS   (e.g. $0 127.0.0.1:5000/ssmtunnel:v0.1.0 '-s -w')" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
img=$1 ldflags=$2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
out=${IMAGE_LAYOUT:-$root/bin/image}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
IFS=, read -r -a platforms <<<"${PLATFORMS:-linux/amd64,linux/arm64}"

# The reference must carry an explicit tag that is not "latest": kubelets pull :latest on every start and
# a tag names the version that runs.
case $img in
  *@*) echo "build-image: $img: use a tag, not a digest" >&2; exit 2 ;;
esac
tag=${img##*:}
if [[ $tag == "$img" || $tag == */* ]]; then
  echo "build-image: $img has no tag: use e.g. 127.0.0.1:5000/ssmtunnel:v0.1.0" >&2; exit 2
fi
if [[ $tag == latest ]]; then
  echo "build-image: refusing tag 'latest' in $img: tag images with the version (make image sets it)" >&2; exit 2
fi
if [[ ! -s $ca ]]; then
  echo "build-image: CA bundle $ca not found: install the ca-certificates package or set CA_BUNDLE" >&2; exit 1
fi

platform_args=()
for p in "${platforms[@]}"; do
  os=${p%/*} arch=${p#*/}
  bindir=$root/bin/$os-$arch
  mkdir -p "$bindir"
  start=$SECONDS
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$root/hack/heartbeat.sh" "build-image: $p binaries" \
    "$GO" build -trimpath -ldflags "$ldflags" -o "$bindir/" ./cmd/manager ./cmd/ssmtunnel ./cmd/ssm-emulator
  for b in manager ssmtunnel ssm-emulator; do
    [[ -x $bindir/$b ]] || { echo "build-image: $bindir/$b was not built" >&2; exit 1; }
  done
  echo "build-image: $p binaries in $bindir ($((SECONDS - start))s)"
  platform_args+=(--platform "$p")
done

# Reproducible timestamps: the commit time when building from git, else 0.
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

"$root/hack/heartbeat.sh" "build-image: the image index" "$GO" run ./hack/imagebuild \
  --tag "$img" \
  --layout "$out" \
  "${platform_args[@]}" \
  --user 65532 \
  --file "/manager=$root/bin/{os}-{arch}/manager" \
  --file "/ssmtunnel=$root/bin/{os}-{arch}/ssmtunnel" \
  --file "/ssm-emulator=$root/bin/{os}-{arch}/ssm-emulator" \
  --file "/etc/ssl/certs/ca-certificates.crt=$ca" \
  --env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  --label "org.opencontainers.image.title=ssmtunnel" \
  --label "org.opencontainers.image.version=$tag" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=https://github.com/ssmtunnel/ssmtunnel" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  --entrypoint /manager
