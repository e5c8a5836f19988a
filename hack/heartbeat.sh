#!/usr/bin/env bash
# Copyright 2026 The ssmtunnel Authors. Licensed under the Apache License, Version 2.0.
#
# heartbeat.sh LABEL CMD [ARG...] — runs CMD and, while it runs, prints "LABEL: still running (Ns)" every
# 30 s on stderr, so a long build (a tool from the Go module proxy, the image's binaries) is never silent
# for a minute. Exits with CMD's status.
set -uo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 LABEL CMD [ARG...]" >&2; exit 2; }
label=$1
shift
start=$SECONDS
(
	while sleep 30; do echo "$label: still running ($((SECONDS - start))s)" >&2; done
) &
beat=$!
trap 'kill "$beat" 2>/dev/null' EXIT
"$@"
rc=$?
kill "$beat" 2>/dev/null
wait "$beat" 2>/dev/null
exit $rc
