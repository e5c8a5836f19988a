#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# release.sh VERSION — builds the release binaries ssmtunnel and ssm-emulator for linux and darwin, amd64 and
# arm64 (static, CGO off, -trimpath) into bin/release/VERSION/ (override with RELEASE_DIR) as
# NAME-VERSION-OS-ARCH, with tunnel.Version, tunnel.Commit and tunnel.Date stamped, and a SHA256SUMS file.
# Date is the commit's time in UTC, not the build's, so two builds of one commit are byte-identical.
# Every binary is checked (platform and stamp from its embedded build information and its contents; the ones
# for this machine are run) and SHA256SUMS is verified before it reports success.
set -euo pipefail

usage() { echo "usage: $0 VERSION   (e.g. $0 v0.2.0; make release passes git describe)" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
version=$1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
module=github.com/ssmtunnel/ssmtunnel
platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
binaries=(ssmtunnel ssm-emulator)

# The version becomes part of file names and is what users compare against `ssmtunnel version`.
if [[ ! $version =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]]; then
  echo "release: version $version: want letters, digits and . _ + - only (e.g. v0.2.0)" >&2; exit 2
fi
if [[ $version == dev ]]; then
  echo "release: version 'dev' is what an unstamped build reports: give the release's version (e.g. v0.2.0)" >&2; exit 2
fi
if ! git rev-parse --verify -q HEAD >/dev/null; then
  echo "release: $root is not a git checkout with a commit: the commit and its date are stamped from git" >&2; exit 1
fi

# The length the binaries' own fallback (tunnel.BuildInfo) shortens vcs.revision to, and the same -dirty
# that git describe --dirty puts into the version.
commit=$(git rev-parse HEAD | cut -c1-12)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
  commit+=-dirty
  echo "release: warning: the work tree has uncommitted changes; the binaries say commit $commit" >&2
fi
date=$(TZ=UTC0 git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd)

out=${RELEASE_DIR:-$root/bin/release/$version}
rm -rf "$out"
mkdir -p "$out"

if command -v sha256sum >/dev/null; then sha256=(sha256sum); else sha256=(shasum -a 256); fi
hostos=$("$GO" env GOHOSTOS) hostarch=$("$GO" env GOHOSTARCH)

ldflags="-s -w -X $module/tunnel.Version=$version -X $module/tunnel.Commit=$commit -X $module/tunnel.Date=$date"
echo "release: $version (commit $commit, $date) with $("$GO" env GOVERSION) into $out"

fail() { echo "release: $1" >&2; exit 1; }

# check NAME FILE OS ARCH fails unless FILE is a static NAME for OS/ARCH carrying the stamp; a binary for this
# machine is run, and ran set to the version line it printed.
check() {
  local name=$1 bin=$2 os=$3 arch=$4 info want s got
  ran=
  info=$("$GO" version -m "$bin") || fail "$bin: go version -m cannot read it"
  for want in "path	$module/cmd/$name" "build	GOOS=$os" "build	GOARCH=$arch" "build	CGO_ENABLED=0" \
    "build	-trimpath=true"; do
    grep -qxF "	$want" <<<"$info" || fail "$bin: go version -m has no '$want':
$info"
  done
  # With -trimpath the go command does not record -ldflags, and with -buildvcs=false nothing else puts these
  # strings into the binary: finding them proves -X took effect.
  for s in "$version" "$commit" "$date"; do
    LC_ALL=C grep -aqF -- "$s" "$bin" || fail "$bin: the stamped string $s is not in the binary"
  done
  if [[ $os/$arch == "$hostos/$hostarch" ]]; then
    case $name in
      ssmtunnel) got=$("$bin" version) ;;
      ssm-emulator) got=$("$bin" --version) ;;
    esac
    [[ $got == "$name $version (commit $commit, $date"[,\)]* ]] ||
      fail "$bin: version printed '$got', want '$name $version (commit $commit, $date...'"
    ran=$got
  fi
}

files=()
for p in "${platforms[@]}"; do
  os=${p%/*} arch=${p#*/}
  for name in "${binaries[@]}"; do
    file=$name-$version-$os-$arch
    # -buildvcs=false: the commit is stamped, and the binary must not depend on untracked files or on the
    # builder's GOFLAGS. GOAMD64/GOARM64 pinned to the baseline, so the binaries run on any CPU of the arch.
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOAMD64=v1 GOARM64=v8.0 \
      "$GO" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/$file" "./cmd/$name"
    check "$name" "$out/$file" "$os" "$arch"
    files+=("$file")
    printf 'release: %-44s %-12s %6s KiB  stamp ok\n' "$file" "$os/$arch" $(($(wc -c <"$out/$file") / 1024))
    [[ -z $ran ]] || echo "release:   ran: $ran"
  done
done

(
  cd "$out"
  "${sha256[@]}" "${files[@]}" >SHA256SUMS
  "${sha256[@]}" -c SHA256SUMS | sed 's/^/release:   /'
)
echo "release: ${#files[@]} binaries and SHA256SUMS (verified) in $out"
echo "release: SHA256SUMS itself: $("${sha256[@]}" "$out/SHA256SUMS" | cut -d' ' -f1)"
