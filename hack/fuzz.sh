#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for FUZZTIME each (default 30s). A target that finds a
# crash fails the run; the failing input is written to testdata/fuzz/<Target>/ for the regression suite.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-30s}"
mapfile -t targets < <(grep -rEo --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)\(' --exclude-dir=bin --exclude-dir=_work . \
  | sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
for t in "${targets[@]}"; do
  pkg="./${t% *}"; name="${t#* }"
  echo "fuzz: $name in $pkg for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done
echo "fuzz: ${#targets[@]} targets ran for $fuzztime each without a crash"
