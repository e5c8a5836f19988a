#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# build-image.sh IMG LDFLAGS — builds the one ssmtunnel image without a Docker daemon or a registry:
# /manager, /ssmtunnel and /ssm-emulator (static, CGO off, -trimpath, linux/amd64), the CA bundle and
# user 65532, written by hack/imagebuild as an OCI tarball at bin/image.tar (override with IMAGE_TAR).
# Import it with `ctr -n k8s.io images import bin/image.tar`.
set -euo pipefail

usage() { echo "usage: $0 IMAGE_REF LDFLAGS   (e.g. $0 localhost/ssmtunnel:v0.1.0 '-s -w')" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
img=$1 ldflags=$2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
out=${IMAGE_TAR:-$root/bin/image.tar}
bindir=$root/bin/linux-amd64
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# The reference must carry an explicit tag that is not "latest": kubelets pull :latest on every start, and
# these images cannot be pulled from anywhere.
case $img in
  *@*) echo "build-image: $img: use a tag, not a digest" >&2; exit 2 ;;
esac
tag=${img##*:}
if [[ $tag == "$img" || $tag == */* ]]; then
  echo "build-image: $img has no tag: use e.g. localhost/ssmtunnel:v0.1.0" >&2; exit 2
fi
if [[ $tag == latest ]]; then
  echo "build-image: refusing tag 'latest' in $img: tag images with the version (make image sets it)" >&2; exit 2
fi
if [[ ! -s $ca ]]; then
  echo "build-image: CA bundle $ca not found: install the ca-certificates package or set CA_BUNDLE" >&2; exit 1
fi

mkdir -p "$bindir"
echo "build-image: building static linux/amd64 binaries into $bindir"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags "$ldflags" -o "$bindir/" \
  ./cmd/manager ./cmd/ssmtunnel ./cmd/ssm-emulator

for b in manager ssmtunnel ssm-emulator; do
  [[ -x $bindir/$b ]] || { echo "build-image: $bindir/$b was not built" >&2; exit 1; }
done

# Reproducible timestamps: the commit time when building from git, else 0.
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

"$GO" run ./hack/imagebuild \
  --tag "$img" \
  --out "$out" \
  --arch amd64 \
  --user 65532 \
  --file "/manager=$bindir/manager" \
  --file "/ssmtunnel=$bindir/ssmtunnel" \
  --file "/ssm-emulator=$bindir/ssm-emulator" \
  --file "/etc/ssl/certs/ca-certificates.crt=$ca" \
  --env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  --label "org.opencontainers.image.title=ssmtunnel" \
  --label "org.opencontainers.image.version=$tag" \
  --label "org.opencontainers.image.source=https://github.com/ssmtunnel/ssmtunnel" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  --entrypoint /manager
echo "build-image: wrote $out ($img)"
